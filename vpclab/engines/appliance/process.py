"""The reference GENEVE appliance: a process around `appliance_core.Appliance`.

    python -m vpclab.engines.appliance.process [--listen-ip 0.0.0.0] [--port 6081]
        [--health-port 80] [--rules FILE] [--stats FILE] [--control SOCKET]

- GENEVE on UDP `--port`: each datagram goes through the core (rules, per-flow
  verdicts) and, if allowed, returns as reference §1.2 says a one-arm
  appliance returns it: the same bytes, to the GWLB IP that sent it, from the
  GWLB's original source port, to port 6081. Ports are not swapped, so a reply
  leaves from a UDP socket bound to that source port and connected to
  `GWLB:6081`; those sockets are pooled, created on first use per (GWLB IP,
  port). This measured faster than a raw socket that builds the outer header
  (that needs a per-packet UDP checksum in Python), and needs no privilege.
  If no socket can be had (fd limit, port taken), the reply leaves from
  `--port` instead, which GWLB accepts too (§1.2) and `reply_from_listen_port`
  counts. Under load (more than two datagrams waiting), datagrams come in by
  the batch (recvmmsg, engines.io.mmsg) and replies leave from the slots they
  arrived in (sendmmsg per run of replies on one socket): one system call per
  batch each way. A lone datagram takes recvfrom and send, which cost less
  than a ctypes call.
- Health on TCP `--health-port` (0: none): accepts connections and answers any
  request with `HTTP/1.1 200 OK`, so TCP and HTTP health checks pass while the
  process runs and fail once it stops.
- `--rules FILE`: YAML or JSON for `ApplianceConfig.from_dict` (optionally under
  a top-level `appliance:` key). SIGHUP reloads it; a bad file keeps the old
  rules and says why on stderr.
- `--stats FILE`: every second the core's `snapshot()` plus I/O counters (`io`),
  written atomically (write, then rename).
- `--control SOCKET`: a Unix socket answering `{"op": "snapshot"}` with the same
  counters as of that moment (engines.io.control): the daemon's `status` asks it,
  so the appliance's counters never lag behind the GWLB node's.

SIGTERM or SIGINT stops it. Bad datagrams are counted, never fatal.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Callable

import yaml

from vpclab.engines.appliance.core import Appliance, ApplianceConfig, Reply
from vpclab.engines.io.control import ControlServer
from vpclab.engines.io.epoll_loop import EpollLoop
from vpclab.engines.io.files import write_atomically
from vpclab.engines.io.geneve import GENEVE_PORT
from vpclab.engines.io.mmsg import MessageBatch, sockaddr_in

BATCH = 64
RX_BUFFER = 65536
SOCKET_BUFFER = 4 << 20
TICK = 1.0
HEALTH_CONNECTIONS_MAX = 256
HEALTH_REQUEST_MAX = 8192
HEALTH_CONNECTION_TIMEOUT = 5.0
HEALTH_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                   b"Connection: close\r\n\r\nok\n")


def load_rules(path: str | os.PathLike) -> ApplianceConfig:
    """Read a rules file (YAML or JSON); ValueError says what is wrong."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror}") from None
    try:
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: {error}") from None
    if isinstance(data, dict) and set(data) == {"appliance"}:
        data = data["appliance"]
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of appliance settings")
    try:
        return ApplianceConfig.from_dict(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


class ApplianceProcess:
    """`__init__` does no I/O; `start` opens the sockets; `run` serves until stopped."""

    def __init__(self, listen_ip: str = "0.0.0.0", port: int = GENEVE_PORT, health_port: int = 80,
                 rules: str | None = None, stats: str | None = None, control: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.listen_ip, self.port, self.health_port = listen_ip, port, health_port
        self.rules_path, self.stats_path, self.control_path = rules, stats, control
        self._control: ControlServer | None = None
        self.clock = clock
        self.appliance = Appliance(load_rules(rules) if rules else None)
        self.loop: EpollLoop | None = None
        self._geneve: socket.socket | None = None
        self._batch = MessageBatch(BATCH, RX_BUFFER, names=True)  # 64 slots of 64 KiB
        # (GWLB IP, port) -> (send, fd) of the socket its replies leave from (see _sender)
        self._senders: dict[tuple[str, int], tuple[Callable[[bytes], int], int]] = {}
        self._sender_fds: dict[bytes, int] = {}  # the same fds by raw sockaddr_in, for batches
        self._reply_sockets: list[socket.socket] = []
        self._max_reply_sockets = 1 << 14
        self._health: socket.socket | None = None
        self._health_conns: dict[int, tuple[socket.socket, bytearray, float]] = {}
        self._reload_requested = False
        self.io = dict.fromkeys(("received", "batched", "replied", "reply_errors", "rx_errors",
                                 "reply_from_listen_port", "health_requests", "reloads",
                                 "reload_errors"), 0)

    # --- setup ---------------------------------------------------------------

    def start(self) -> None:
        self.loop = EpollLoop(TICK, self.clock)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            wanted = hard if hard == resource.RLIM_INFINITY else min(hard, (1 << 15) + 1024)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
                soft = wanted
            except (ValueError, OSError):
                pass
            if soft != resource.RLIM_INFINITY:
                self._max_reply_sockets = max(0, soft - HEALTH_CONNECTIONS_MAX - 64)
        geneve = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        geneve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _tune_udp(geneve)
        geneve.bind((self.listen_ip, self.port))
        self._geneve = geneve
        self.loop.watch(geneve, self._drain_geneve)
        if self.health_port:
            health = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            health.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            health.bind((self.listen_ip, self.health_port))
            health.listen(64)
            health.setblocking(False)
            self._health = health
            self.loop.watch(health, self._accept_health)
        self.loop.stop_on(signal.SIGTERM, signal.SIGINT)
        signal.signal(signal.SIGHUP, self._on_reload_signal)
        if self.control_path:
            self._control = ControlServer(self.loop, self.control_path, self.control)

    # --- GENEVE -------------------------------------------------------------------

    def _drain_geneve(self, now: float) -> None:
        """Two datagrams the cheap way (recvfrom, send); a third waiting means load, and the
        rest come by the batch (`_drain_batch`). ctypes costs a few µs a call, which a batch
        shares out but a lone datagram would pay alone."""
        recvfrom = self._geneve.recvfrom  # type: ignore[union-attr]
        handle, senders, io = self.appliance.handle, self._senders, self.io
        for _ in range(2):
            try:
                datagram, address = recvfrom(RX_BUFFER)
            except BlockingIOError:
                return
            except OSError:
                io["rx_errors"] += 1
                return
            io["received"] += 1
            if type(handle(datagram, now)) is Reply:
                sender = senders.get(address)
                if sender is None:
                    sender = self._sender(address)
                try:
                    sender[0](datagram)
                    io["replied"] += 1
                except OSError:
                    io["reply_errors"] += 1
        self._drain_batch(now)

    def _drain_batch(self, now: float) -> None:
        """Up to BATCH datagrams in one recvmmsg; the replies leave from the slots they came
        in, one sendmmsg per run of consecutive replies on one reply socket."""
        batch, io = self._batch, self.io
        try:
            n = batch.recv(self._geneve.fileno())  # type: ignore[union-attr]
        except OSError:
            io["rx_errors"] += 1
            return
        handle, fds, lengths, addresses, names = (
            self.appliance.handle, self._sender_fds, batch.lengths, batch.addresses, batch.names)
        string_at = ctypes.string_at
        replied = errors = start = 0
        run_fd = None  # the reply socket of the run of replies that ends before slot i
        for i in range(n):
            datagram = string_at(addresses[i], lengths[i].msg_len)
            fd = None
            if type(handle(datagram, now)) is Reply:
                peer = names[i].raw
                fd = fds.get(peer)
                if fd is None:
                    fd = fds[peer] = self._sender(sockaddr_in(peer))[1]
                if fd < 0:  # no socket of its own: from the listening port (§1.2 allows it)
                    try:
                        self._geneve.sendto(datagram, (sockaddr_in(peer)[0], GENEVE_PORT))  # type: ignore[union-attr]
                        replied += 1
                    except OSError:
                        errors += 1
                    fd = None
            if fd != run_fd:
                if run_fd is not None:
                    sent = self._echo(run_fd, start, i)
                    replied, errors = replied + sent, errors + (i - start - sent)
                run_fd, start = fd, i
        if run_fd is not None:
            sent = self._echo(run_fd, start, n)
            replied, errors = replied + sent, errors + (n - start - sent)
        io["received"] += n
        io["batched"] += n
        io["replied"] += replied
        io["reply_errors"] += errors

    def _echo(self, fd: int, start: int, stop: int) -> int:
        try:
            return self._batch.echo(fd, start, stop)
        except OSError:
            return 0

    def _sender(self, address: tuple[str, int]) -> tuple[Callable[[bytes], int], int]:
        """How to send to `address`'s GWLB IP on 6081 from `address`'s port (§1.2): the
        send() and fd of a socket bound to that port, or, when none can be had (fd limit,
        port taken), a sendto() from --port and fd -1."""
        gwlb_ip, src_port = address
        if len(self._reply_sockets) < self._max_reply_sockets and src_port != self.port:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                # Two GWLB nodes may use the same source port: one socket per (node, port).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # send-only
                _tune_udp(sock, receive=False)
                sock.bind((self.listen_ip, src_port))
                sock.connect((gwlb_ip, GENEVE_PORT))
            except OSError:
                sock.close()
            else:
                self._reply_sockets.append(sock)
                result = self._senders[address] = (sock.send, sock.fileno())
                return result
        self.io["reply_from_listen_port"] += 1
        geneve, to = self._geneve, (gwlb_ip, GENEVE_PORT)
        result = self._senders[address] = (lambda data: geneve.sendto(data, to), -1)  # type: ignore[union-attr]
        return result

    # --- health -----------------------------------------------------------------

    def _accept_health(self, now: float) -> None:
        while True:
            try:
                conn, _ = self._health.accept()  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self._health_conns) >= HEALTH_CONNECTIONS_MAX:
                conn.close()
                continue
            conn.setblocking(False)
            self._health_conns[conn.fileno()] = (conn, bytearray(), now + HEALTH_CONNECTION_TIMEOUT)
            self.loop.watch(conn, lambda t, c=conn: self._read_health(c))

    def _read_health(self, conn: socket.socket) -> None:
        _, pending, _ = self._health_conns[conn.fileno()]
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            pending += data
            if b"\r\n\r\n" not in pending and b"\n\n" not in pending and len(pending) < HEALTH_REQUEST_MAX:
                return
            self.io["health_requests"] += 1
            try:
                conn.send(HEALTH_RESPONSE)  # small enough for any socket buffer
            except OSError:
                pass
        self._close_health(conn)

    def _close_health(self, conn: socket.socket) -> None:
        self._health_conns.pop(conn.fileno(), None)
        self.loop.unwatch(conn)
        conn.close()

    # --- the loop ----------------------------------------------------------------

    def _on_reload_signal(self, signum: int, frame: object) -> None:
        self._reload_requested = True

    def reload(self) -> bool:
        if not self.rules_path:
            return True
        try:
            self.appliance.configure(load_rules(self.rules_path))
        except ValueError as error:
            self.io["reload_errors"] += 1
            print(f"appliance: reload failed, keeping the old rules: {error}", file=sys.stderr)
            return False
        self.io["reloads"] += 1
        return True

    def snapshot(self) -> dict:
        return {**self.appliance.snapshot(), "io": {**self.io, "reply_sockets": len(self._reply_sockets)}}

    def control(self, request) -> dict:
        if not isinstance(request, dict) or request.get("op") != "snapshot":
            return {"ok": False, "error": "the appliance answers {\"op\": \"snapshot\"} only"}
        return {"ok": True, "snapshot": self.snapshot()}

    def write_stats(self) -> None:
        if self.stats_path:
            try:
                write_atomically(self.stats_path, json.dumps(self.snapshot(), sort_keys=True) + "\n")
            except OSError as error:
                print(f"appliance: cannot write stats: {error}", file=sys.stderr)

    def _tick(self, now: float) -> None:
        self.appliance.expire(now)
        for conn, _, deadline in list(self._health_conns.values()):
            if deadline <= now:
                self._close_health(conn)
        self.write_stats()

    def run(self) -> None:
        assert self.loop is not None
        self.write_stats()
        self.loop.run(self._tick, self._reload_if_asked)
        self.write_stats()

    def _reload_if_asked(self) -> None:
        if self._reload_requested:
            self._reload_requested = False
            self.reload()

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
        for sock in (self._geneve, self._health, *self._reply_sockets,
                     *(c for c, _, _ in self._health_conns.values())):
            if sock is not None:
                sock.close()
        if self.loop is not None:
            self.loop.close()


def _tune_udp(sock: socket.socket, receive: bool = True) -> None:
    sock.setblocking(False)
    for option in ((socket.SO_RCVBUF, socket.SO_SNDBUF) if receive else (socket.SO_SNDBUF,)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vpclab.engines.appliance.process",
                                     description="The reference GWLB (GENEVE) appliance.")
    parser.add_argument("--listen-ip", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=GENEVE_PORT, help="GENEVE UDP port (default 6081)")
    parser.add_argument("--health-port", type=int, default=80, help="TCP/HTTP health listener, 0 for none")
    parser.add_argument("--rules", help="YAML or JSON rules for ApplianceConfig; SIGHUP reloads it")
    parser.add_argument("--stats", help="file to write counters to, as JSON, every second")
    parser.add_argument("--control", help="Unix socket that answers {\"op\": \"snapshot\"} with the counters now")
    args = parser.parse_args(argv)
    try:
        process = ApplianceProcess(args.listen_ip, args.port, args.health_port, args.rules, args.stats,
                                   args.control)
    except ValueError as error:
        print(f"appliance: {error}", file=sys.stderr)
        return 2
    try:
        process.start()
    except OSError as error:
        print(f"appliance: cannot start: {error}", file=sys.stderr)
        process.close()
        return 1
    print(f"appliance: GENEVE on {args.listen_ip}:{args.port}, health on TCP {args.health_port or 'off'}",
          file=sys.stderr)
    try:
        process.run()
    finally:
        process.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
