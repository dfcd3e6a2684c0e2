"""A TCP relay that puts a PROXY protocol v2 header in front of each connection.

    python -m vpclab.engines.nlb.pp2_relay --listen IP:PORT --upstream IP:PORT
        [--listen IP:PORT --upstream IP:PORT ...] [--vpc-endpoint-id vpce-...]
        [--dst-ip IP] [--transparent] [--stats FILE]
        [--connect-timeout SECONDS] [--idle-timeout SECONDS]

It runs where the kernel forwards but cannot insert the header (reference
§3.5; DESIGN: "user space only where the kernel can't do the job").
`--listen` and `--upstream` come in pairs: the n-th `--listen` relays to the
n-th `--upstream`. IPv6 addresses are written `[addr]:port`.

For each accepted connection it connects to the upstream and, with the
client's first bytes, sends one 100-byte header (`proxy_protocol.proxy_header`):
source = the client's address as accepted; destination = the address the client
connected to, i.e. the original destination when conntrack NAT redirected the
connection (SO_ORIGINAL_DST), else the accepted socket's local address, with
the IP replaced by `--dst-ip` if given (e.g. the endpoint ENI's IP for
PrivateLink). `--vpc-endpoint-id` adds AWS's TLV 0xEA. As at AWS, the header
travels with the client's first data, so a client that closes without sending
anything reaches the upstream as a bare FIN, and a server-speaks-first
upstream is relayed (it has had no header yet).

Bytes then flow both ways through a pipe per direction with splice(2), so no
payload is copied into Python. Backpressure: a direction reads only while its
pipe has room, and waits for its destination to be writable when it does not.
End of stream is propagated as shutdown(SHUT_WR) (half-close); the connection
closes once both directions have ended. A reset on either side resets the
other (SO_LINGER 0), and so does an upstream that refuses, fails, or does not
answer within `--connect-timeout` (10 s): the client gets a RST, as from a
load balancer. A connection idle for `--idle-timeout` (350 s, the NLB's TCP
default) is reset on both sides. Nothing that a peer does crashes the relay;
every outcome is counted.

`--transparent` sets IP_TRANSPARENT on upstream sockets and binds each to the
client's IP (port 0), so the upstream sees the client's address as the source.
It needs CAP_NET_ADMIN in the relay's network namespace, and replies must be
routed back to the relay (e.g. by fwmark); if the socket option is refused the
relay says so once and connects normally.

`--stats FILE`: counters as JSON, written atomically every second.
SIGTERM or SIGINT stops it.
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import logging
import os
import resource
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from vpclab.engines.io.files import write_atomically
from vpclab.engines.io.proxy_protocol import proxy_header
from vpclab.engines.nlb.addresses import (
    Address,
    _family,
    _reset,
    _show,
    _unmapped,
    original_destination,
    parse_address,
)

log = logging.getLogger(__name__)

TICK = 1.0
CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 350.0
BACKLOG = 4096
ACCEPT_BATCH = 64
PUMP_ROUNDS = 16  # splices per direction per event, so one busy connection can't starve the others
SPLICE_CHUNK = 1 << 20  # ask for much; the pipe's room limits what one splice moves

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = 75
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK

COUNTERS = (
    "connections_accepted",  # clients accepted
    "connections_completed",  # both directions ended by FIN
    "headers_sent",
    "upstream_refused",  # ECONNREFUSED: the client got a RST
    "upstream_failed",  # any other connect error, or no answer in time: the client got a RST
    "resets",  # a reset or error on an open connection: the other side got a RST
    "idle_timeouts",
    "accept_errors",
    "header_errors",  # no header could be built (e.g. --dst-ip of another IP version)
    "transparent_bind_failed",
    "bytes_client_to_upstream",  # payload only, without headers
    "bytes_upstream_to_client",
)


@dataclass(frozen=True)
class Route:
    listen: Address
    upstream: Address


class _Flow:
    """One direction of a connection: src socket -> pipe -> dst socket."""

    __slots__ = ("src", "dst", "r", "w", "pending", "full", "eof", "shut", "counters", "counter")

    def __init__(self, src: socket.socket, dst: socket.socket, counters: dict[str, int], counter: str) -> None:
        self.src, self.dst = src, dst
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pending = 0  # bytes in the pipe
        self.full = False  # the last splice into the pipe found no room
        self.eof = False  # src sent FIN
        self.shut = False  # FIN passed on to dst
        self.counters, self.counter = counters, counter

    @property
    def wants_read(self) -> bool:
        return not self.eof and not (self.full and self.pending)

    def fill(self) -> int:
        try:
            n = os.splice(self.src.fileno(), self.w, SPLICE_CHUNK, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            # With bytes in the pipe we can't tell "no room" from "nothing to read":
            # stop reading until the pipe drains, so a full pipe never busy-loops.
            self.full = self.pending > 0
            return 0
        if n == 0:
            self.eof = True
        self.pending += n
        return n

    def drain(self) -> int:
        try:
            n = os.splice(self.r, self.dst.fileno(), self.pending, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            return 0
        if n:
            self.pending -= n
            self.full = False
            self.counters[self.counter] += n
        return n

    def pump(self, can_send: bool) -> None:
        """Move what can be moved now; pass on FIN once everything before it is sent."""
        for _ in range(PUMP_ROUNDS):
            moved = self.fill() if self.wants_read else 0
            if self.pending and can_send:
                moved += self.drain()
            if not moved:
                break
        if self.eof and not self.pending and not self.shut:
            self.dst.shutdown(socket.SHUT_WR)
            self.shut = True

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


class _Connection:
    __slots__ = ("client", "upstream", "header", "c2u", "u2c", "connecting", "deadline", "masks", "last_active")

    def __init__(self, client: socket.socket, upstream: socket.socket, header: bytes, now: float,
                 deadline: float, counters: dict[str, int]) -> None:
        self.client, self.upstream, self.header = client, upstream, header
        self.c2u = _Flow(client, upstream, counters, "bytes_client_to_upstream")
        try:
            self.u2c = _Flow(upstream, client, counters, "bytes_upstream_to_client")
        except BaseException:
            self.c2u.close()
            raise
        self.connecting = True
        self.deadline = deadline
        self.masks = [0, 0]  # registered epoll masks of client and upstream; 0 = not registered
        self.last_active = now

    def service(self) -> bool:
        """Relay what can be relayed; True once the header went out in this call."""
        c2u, sent_header = self.c2u, False
        if self.header:
            if c2u.wants_read and not c2u.pending:
                c2u.fill()
            if c2u.pending:
                # MSG_MORE: the header leaves in the same segment as the first data.
                try:
                    n = self.upstream.send(self.header, socket.MSG_MORE)
                except BlockingIOError:
                    n = 0
                self.header = self.header[n:]
                sent_header = not self.header
        c2u.pump(can_send=not self.header)
        self.u2c.pump(can_send=True)
        return sent_header

    def wanted_masks(self) -> tuple[int, int]:
        if self.connecting:
            return 0, _OUT
        c2u, u2c = self.c2u, self.u2c
        client = (_IN if c2u.wants_read else 0) | (_OUT if u2c.pending else 0)
        upstream = (_IN if u2c.wants_read else 0) | (_OUT if c2u.pending else 0)
        return client, upstream

    @property
    def done(self) -> bool:
        return self.c2u.shut and self.u2c.shut


class Relay:
    """The relay: `__init__` binds and listens, `run` serves until `stop`, `close` ends everything."""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        vpc_endpoint_id: str | None = None,
        dst_ip: str | None = None,
        transparent: bool = False,
        stats_path: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not routes:
            raise ValueError("nothing to relay: give at least one --listen/--upstream pair")
        self.vpc_endpoint_id = vpc_endpoint_id
        self.dst_ip = str(ipaddress.ip_address(dst_ip)) if dst_ip else None
        self.transparent = transparent
        self.stats_path = stats_path
        self.connect_timeout, self.idle_timeout = connect_timeout, idle_timeout
        self.clock = clock
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._stopping = False
        self._epoll = select.epoll()
        self._connections: dict[int, _Connection] = {}  # by the fd of either socket
        self._listeners: dict[int, tuple[socket.socket, Route]] = {}
        self._accepting = True
        self._wakeup = socket.socketpair()
        try:
            for sock in self._wakeup:
                sock.setblocking(False)
            self._epoll.register(self._wakeup[0].fileno(), _IN)
            for route in routes:
                self._listen(route)
        except BaseException:
            self.close()
            raise

    def _listen(self, route: Route) -> None:
        sock = socket.socket(_family(route.listen[0]), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(route.listen)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listeners[sock.fileno()] = (sock, route)
        self._epoll.register(sock.fileno(), _IN)

    @property
    def addresses(self) -> list[Address]:
        """The bound listen addresses, in route order (useful with port 0)."""
        return [sock.getsockname()[:2] for sock, _ in self._listeners.values()]

    # --- running ---------------------------------------------------------------

    def run(self) -> None:
        """Serve until `stop()` (even one called before `run`): from a signal handler or another thread."""
        clock = self.clock
        next_tick = clock() + TICK
        self.write_stats()
        while not self._stopping:
            for fd, events in self._epoll.poll(max(0.0, next_tick - clock())):
                self._dispatch(fd, events)
            now = clock()
            if now >= next_tick:
                self._tick(now)
                next_tick = now + TICK
        self.write_stats()

    def stop(self) -> None:
        self._stopping = True
        try:
            self._wakeup[1].send(b"\0")
        except OSError:
            pass

    def close(self) -> None:
        """Close every connection (FIN, or RST with unsent data) and the listeners."""
        for connection in set(self._connections.values()):
            self._finish(connection)
        for sock, _ in self._listeners.values():
            sock.close()
        self._listeners.clear()
        for sock in self._wakeup:
            sock.close()
        self._epoll.close()

    def snapshot(self) -> dict:
        return {
            **self.counters,
            "connections_active": len(set(self._connections.values())),
            "transparent": self.transparent,
            "routes": [f"{_show(s.getsockname())} -> {_show(r.upstream)}" for s, r in self._listeners.values()],
        }

    def write_stats(self) -> None:
        if self.stats_path:
            try:
                write_atomically(self.stats_path, json.dumps(self.snapshot(), sort_keys=True) + "\n")
            except OSError as error:
                log.warning("cannot write stats: %s", error)

    # --- events ----------------------------------------------------------------

    def _dispatch(self, fd: int, events: int) -> None:
        connection = self._connections.get(fd)
        if connection is not None:
            self._serve(connection, fd, events)
        elif fd in self._listeners:
            self._accept(*self._listeners[fd])
        elif fd == self._wakeup[0].fileno():
            try:
                while self._wakeup[0].recv(512):
                    pass
            except OSError:
                pass

    def _accept(self, listener: socket.socket, route: Route) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                client, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self.counters["accept_errors"] += 1
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cannot accept: %s; pausing until the next tick", error.strerror)
                    self._pause_accepting()
                    return
                continue  # ECONNABORTED and friends: that client is gone
            self.counters["connections_accepted"] += 1
            try:
                self._open(client, peer, route)
            except OSError as error:
                log.warning("cannot relay a connection from %s: %s", _show(peer), error)
                self.counters["upstream_failed"] += 1
                _reset(client)

    def _open(self, client: socket.socket, peer: tuple, route: Route) -> None:
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        source = _unmapped(peer)
        local = _unmapped(client.getsockname())
        destination = original_destination(client) or local
        if self.dst_ip:
            destination = (self.dst_ip, destination[1])
        try:
            header = proxy_header(source, destination, vpc_endpoint_id=self.vpc_endpoint_id)
        except ValueError as error:
            log.warning("no PROXY header for %s -> %s: %s", _show(source), _show(destination), error)
            self.counters["header_errors"] += 1
            _reset(client)
            return
        upstream = socket.socket(_family(route.upstream[0]), socket.SOCK_STREAM)
        try:
            upstream.setblocking(False)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.transparent and upstream.family == _family(source[0]):
                self._bind_transparent(upstream, source[0])
            now = self.clock()
            connection = _Connection(client, upstream, header, now, now + self.connect_timeout, self.counters)
        except BaseException:
            upstream.close()
            raise
        self._connections[client.fileno()] = self._connections[upstream.fileno()] = connection
        code = upstream.connect_ex(route.upstream)
        if code not in (0, errno.EINPROGRESS):
            self._connect_failed(connection, code)
            return
        self._update(connection)

    def _bind_transparent(self, sock: socket.socket, ip: str) -> None:
        level, option = ((socket.SOL_IPV6, IPV6_TRANSPARENT) if sock.family == socket.AF_INET6
                         else (socket.SOL_IP, IP_TRANSPARENT))
        try:
            sock.setsockopt(level, option, 1)
        except OSError as error:
            log.warning("--transparent: IP_TRANSPARENT refused (%s); upstreams will see the relay's address",
                        error.strerror)
            self.transparent = False
            return
        try:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)  # port chosen at connect
        except OSError:
            pass
        try:
            sock.bind((ip, 0))
        except OSError as error:
            self.counters["transparent_bind_failed"] += 1
            log.debug("--transparent: cannot bind to %s: %s", ip, error)

    def _serve(self, connection: _Connection, fd: int, events: int) -> None:
        if connection.connecting:
            code = connection.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._connect_failed(connection, code)
                return
            connection.connecting = False
        now = self.clock()
        connection.last_active = now
        try:
            if events & select.EPOLLERR:
                sock = connection.client if fd == connection.client.fileno() else connection.upstream
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code))
            if connection.service():
                self.counters["headers_sent"] += 1
        except OSError as error:
            log.debug("connection reset: %s", error)
            self.counters["resets"] += 1
            self._abort(connection)
            return
        if connection.done:
            self.counters["connections_completed"] += 1
            self._finish(connection)
        else:
            self._update(connection)

    def _connect_failed(self, connection: _Connection, code: int) -> None:
        self.counters["upstream_refused" if code == errno.ECONNREFUSED else "upstream_failed"] += 1
        log.debug("upstream connect failed: %s", os.strerror(code))
        self._abort(connection)

    def _update(self, connection: _Connection) -> None:
        """Register each socket for what its connection waits for; unregister it when nothing."""
        for index, (sock, wanted) in enumerate(zip((connection.client, connection.upstream),
                                                   connection.wanted_masks())):
            current = connection.masks[index]
            if wanted == current:
                continue
            if not current:
                self._epoll.register(sock.fileno(), wanted)
            elif not wanted:
                self._epoll.unregister(sock.fileno())
            else:
                self._epoll.modify(sock.fileno(), wanted)
            connection.masks[index] = wanted

    def _forget(self, connection: _Connection) -> None:
        for index, sock in enumerate((connection.client, connection.upstream)):
            if connection.masks[index]:
                self._epoll.unregister(sock.fileno())
                connection.masks[index] = 0
            self._connections.pop(sock.fileno(), None)
        connection.c2u.close()
        connection.u2c.close()

    def _finish(self, connection: _Connection) -> None:
        self._forget(connection)
        connection.client.close()
        connection.upstream.close()

    def _abort(self, connection: _Connection) -> None:
        self._forget(connection)
        _reset(connection.client)
        _reset(connection.upstream)

    # --- housekeeping ----------------------------------------------------------

    def _pause_accepting(self) -> None:
        if self._accepting:
            for fd in self._listeners:
                self._epoll.unregister(fd)
            self._accepting = False

    def _tick(self, now: float) -> None:
        if not self._accepting:
            for fd in self._listeners:
                self._epoll.register(fd, _IN)
            self._accepting = True
        for connection in set(self._connections.values()):
            if connection.connecting and now >= connection.deadline:
                self._connect_failed(connection, errno.ETIMEDOUT)
            elif not connection.connecting and now - connection.last_active >= self.idle_timeout:
                self.counters["idle_timeouts"] += 1
                self._abort(connection)
        self.write_stats()


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vpclab.engines.nlb.pp2_relay",
        description="Relay TCP connections, putting a PROXY protocol v2 header (as an NLB sends it) first.",
    )
    parser.add_argument("--listen", action="append", required=True, metavar="IP:PORT",
                        help="where to accept; repeat with --upstream for more pairs")
    parser.add_argument("--upstream", action="append", required=True, metavar="IP:PORT",
                        help="where the n-th --listen relays to")
    parser.add_argument("--vpc-endpoint-id", metavar="vpce-...", help="add AWS's TLV 0xEA with this endpoint id")
    parser.add_argument("--dst-ip", metavar="IP", help="destination IP in the header, instead of the one connected to")
    parser.add_argument("--transparent", action="store_true",
                        help="connect upstream from the client's IP (IP_TRANSPARENT; needs CAP_NET_ADMIN)")
    parser.add_argument("--stats", metavar="FILE", help="file to write counters to, as JSON, every second")
    parser.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT, metavar="SECONDS")
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT, metavar="SECONDS")
    args = parser.parse_args(argv)
    if len(args.listen) != len(args.upstream):
        parser.error("give one --upstream for each --listen")
    logging.basicConfig(level=logging.INFO, format="pp2_relay: %(message)s")
    try:
        routes = [Route(parse_address(listen), parse_address(upstream))
                  for listen, upstream in zip(args.listen, args.upstream)]
        if args.dst_ip:
            ipaddress.ip_address(args.dst_ip)
    except ValueError as error:
        parser.error(str(error))
    _raise_fd_limit()
    try:
        relay = Relay(routes, vpc_endpoint_id=args.vpc_endpoint_id, dst_ip=args.dst_ip,
                      transparent=args.transparent, stats_path=args.stats,
                      connect_timeout=args.connect_timeout, idle_timeout=args.idle_timeout)
    except OSError as error:
        log.error("cannot listen: %s", error)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: relay.stop())
    log.info("relaying %s", ", ".join(relay.snapshot()["routes"]))
    try:
        relay.run()
    finally:
        relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
