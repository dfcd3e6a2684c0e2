"""The PROXY v2 relay on 127.0.0.1: header bytes, relaying, half-close, resets, counters.

The relay runs in a thread (one test runs the CLI as a subprocess); upstreams
are small threaded servers that record what they get. Every wait is bounded.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vpclab.engines.nlb.pp2_relay import IP_TRANSPARENT, Relay, Route, main, parse_address
from vpclab.engines.io.proxy_protocol import parse_header, proxy_header
from vpclab.engines.services import serve_test_page

VPCE = "vpce-08d2bf15fac5001c9"
TIMEOUT = 5.0
REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream:
    """A TCP server whose `handler(upstream, conn)` runs in a thread per connection."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.headers: list[bytes] = []
        self.received: list[bytes] = []
        self.peers: list[tuple[str, int]] = []
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.append(peer)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(TIMEOUT)
        with contextlib.suppress(OSError), conn:
            self.handler(self, conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self.sock.close()


def echo(upstream: Upstream, conn: socket.socket) -> None:
    """Record the header, then echo everything until the client half-closes."""
    upstream.headers.append(recv_exactly(conn, 100))
    while data := conn.recv(1 << 16):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def running(relay: Relay):
    """`relay` serving in a thread; stopped and closed on the way out."""
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.stop()
        thread.join(TIMEOUT)
        relay.close()
    assert not thread.is_alive()


@contextlib.contextmanager
def serving(handler=echo, **relay_options):
    upstream = Upstream(handler)
    try:
        with running(Relay([Route(("127.0.0.1", 0), upstream.address)], **relay_options)) as relay:
            yield relay, upstream
    finally:
        upstream.close()


def connect(relay: Relay, source_ip: str | None = None) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(TIMEOUT)
    if source_ip:
        sock.bind((source_ip, 0))
    sock.connect(relay.addresses[0])
    return sock


# ---------------------------------------------------------------- the header


def test_upstream_gets_the_aws_header_then_the_payload():
    with serving() as (relay, upstream):
        with connect(relay) as client:
            client.sendall(b"hello")
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b"hello"
            client_address = client.getsockname()
        wait_for(lambda: relay.counters["connections_completed"] == 1)
        relay_address = relay.addresses[0]
    assert upstream.headers == [proxy_header(client_address, relay_address)]
    assert relay.counters["headers_sent"] == 1
    assert relay.counters["bytes_client_to_upstream"] == relay.counters["bytes_upstream_to_client"] == 5


def test_endpoint_id_and_destination_ip_go_into_the_header():
    with serving(vpc_endpoint_id=VPCE, dst_ip="172.31.10.31") as (relay, upstream):
        with connect(relay) as client:
            client.sendall(b"GET / HTTP/1.1\r\n\r\n")
            client.shutdown(socket.SHUT_WR)
            read_all(client)
            client_address = client.getsockname()
        relay_port = relay.addresses[0][1]
    header = parse_header(upstream.headers[0])
    assert header.source == client_address
    assert header.destination == ("172.31.10.31", relay_port)
    assert header.vpc_endpoint_id == VPCE and header.crc_ok
    assert upstream.headers[0] == proxy_header(client_address, header.destination, vpc_endpoint_id=VPCE)


def test_a_client_that_sends_nothing_reaches_the_upstream_without_a_header():
    with serving() as (relay, upstream):
        with connect(relay) as client:
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b""
        wait_for(lambda: relay.counters["connections_completed"] == 1)
    assert upstream.headers == [b""]  # the header travels with the client's first data
    assert relay.counters["headers_sent"] == 0


@contextlib.contextmanager
def page_server():
    """The lab's test page (engines.services) on 127.0.0.1, served from a thread."""
    sock = socket.create_server(("127.0.0.1", 0))
    address = sock.getsockname()
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve_test_page(sock, {"name": "web-1"}))
    thread = threading.Thread(target=lambda: loop.run_until_complete(asyncio.wait([task])), daemon=True)
    thread.start()
    try:
        yield address
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(TIMEOUT)
        loop.close()


def test_the_test_page_behind_the_relay_reports_the_header():
    with page_server() as page, running(Relay([Route(("127.0.0.1", 0), page)], vpc_endpoint_id=VPCE)) as relay:
        with connect(relay) as client:
            client.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            body = read_all(client).partition(b"\r\n\r\n")[2].decode()
            client_ip, client_port = client.getsockname()
        relay_ip, relay_port = relay.addresses[0]
    assert "client: 127.0.0.1:" in body  # the relay's own connection
    assert (f"proxy-protocol: source={client_ip}:{client_port} destination={relay_ip}:{relay_port} "
            f"vpc-endpoint-id={VPCE}\n") in body


# ---------------------------------------------------------------- relaying


def test_client_half_close_reaches_the_upstream_which_can_still_answer():
    def count_then_answer(upstream, conn):
        upstream.headers.append(recv_exactly(conn, 100))
        conn.sendall(b"got %d bytes" % len(read_all(conn)))

    with serving(count_then_answer) as (relay, _):
        with connect(relay) as client:
            client.sendall(b"x" * 1000)
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b"got 1000 bytes"


def test_upstream_half_close_reaches_the_client_which_can_still_send():
    def banner_then_listen(upstream, conn):
        conn.sendall(b"SSH-2.0-target\r\n")
        conn.shutdown(socket.SHUT_WR)
        upstream.headers.append(recv_exactly(conn, 100))
        upstream.received.append(read_all(conn))

    with serving(banner_then_listen) as (relay, upstream):
        with connect(relay) as client:
            assert read_all(client) == b"SSH-2.0-target\r\n"  # relayed before any header
            client.sendall(b"late data")
            client.shutdown(socket.SHUT_WR)
            wait_for(lambda: upstream.received)
        wait_for(lambda: relay.counters["connections_completed"] == 1)
    assert upstream.received == [b"late data"]
    assert parse_header(upstream.headers[0]).source is not None


def test_megabytes_flow_both_ways_intact():
    payload = os.urandom(1 << 20) * 6
    with serving() as (relay, _):
        with connect(relay) as client:
            def send():
                client.sendall(payload)
                client.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send)
            sender.start()
            echoed = read_all(client)
            sender.join(TIMEOUT)
        wait_for(lambda: relay.counters["connections_completed"] == 1)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert relay.counters["bytes_client_to_upstream"] == relay.counters["bytes_upstream_to_client"] == len(payload)


def test_many_concurrent_connections_are_relayed_independently():
    def exchange(relay, n):
        with connect(relay) as client:
            message = b"connection %d " % n * 500
            client.sendall(message)
            client.shutdown(socket.SHUT_WR)
            return read_all(client) == message

    with serving() as (relay, upstream):
        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(lambda n: exchange(relay, n), range(100)))
        wait_for(lambda: relay.counters["connections_completed"] == 100)
        assert relay.snapshot()["connections_active"] == 0
    assert all(results)
    assert len({parse_header(h).source for h in upstream.headers}) == 100


# ---------------------------------------------------------------- failures


def test_refused_upstream_resets_the_client():
    with running(Relay([Route(("127.0.0.1", 0), ("127.0.0.1", closed_port()))])) as relay:
        # The reset may be that quick: connect() itself can see it on loopback.
        with pytest.raises(ConnectionResetError), connect(relay) as client:
            client.sendall(b"hello")
            client.recv(1)
        wait_for(lambda: relay.counters["upstream_refused"] == 1)
        assert relay.snapshot()["connections_active"] == 0


def test_upstream_reset_resets_the_client_and_the_relay_goes_on():
    def reset_after_header(upstream, conn):
        upstream.headers.append(recv_exactly(conn, 100))
        reset(conn)

    with serving(reset_after_header) as (relay, upstream):
        for _ in range(2):
            with connect(relay) as client:
                client.sendall(b"hello")
                with pytest.raises(ConnectionResetError):
                    while client.recv(1):  # until the reset arrives
                        pass
        wait_for(lambda: relay.counters["resets"] == 2)
        assert relay.snapshot()["connections_active"] == 0


def test_client_reset_resets_the_upstream():
    def read_until_reset(upstream, conn):
        upstream.headers.append(recv_exactly(conn, 100))
        try:
            read_all(conn)
        except ConnectionResetError:
            upstream.received.append(b"reset")

    with serving(read_until_reset) as (relay, upstream):
        client = connect(relay)
        client.sendall(b"hello")
        wait_for(lambda: upstream.headers)
        reset(client)
        wait_for(lambda: upstream.received == [b"reset"])
        wait_for(lambda: relay.counters["resets"] == 1)


def test_idle_connection_is_reset_on_both_sides():
    def hold(upstream, conn):
        upstream.headers.append(recv_exactly(conn, 100))
        with contextlib.suppress(ConnectionResetError):
            read_all(conn)
        upstream.received.append(b"closed")

    with serving(hold, idle_timeout=0.05) as (relay, upstream):
        with connect(relay) as client:
            client.sendall(b"x")
            with pytest.raises(ConnectionResetError):
                client.recv(1)  # the next tick (at most 1 s) finds it idle
        wait_for(lambda: upstream.received == [b"closed"])
    assert relay.counters["idle_timeouts"] == 1


# ---------------------------------------------------------------- transparent mode


def transparent_allowed() -> bool:
    with socket.socket() as s:
        try:
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        except OSError:
            return False
    return True


def test_transparent_mode_connects_from_the_client_ip_or_falls_back():
    with serving(transparent=True) as (relay, upstream):
        with connect(relay, source_ip="127.0.0.2") as client:
            client.sendall(b"hi")
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b"hi"
    assert parse_header(upstream.headers[0]).source[0] == "127.0.0.2"
    if transparent_allowed():
        assert upstream.peers[0][0] == "127.0.0.2" and relay.transparent
    else:
        assert upstream.peers[0][0] == "127.0.0.1" and not relay.transparent


# ---------------------------------------------------------------- stats and CLI


def test_stats_file_has_the_counters(tmp_path):
    stats = tmp_path / "relay.json"
    with serving(stats_path=str(stats)) as (relay, upstream):
        wait_for(stats.exists)
        with connect(relay) as client:
            client.sendall(b"abc")
            client.shutdown(socket.SHUT_WR)
            read_all(client)
        route = f"127.0.0.1:{relay.addresses[0][1]} -> 127.0.0.1:{upstream.address[1]}"
    document = json.loads(stats.read_text())  # written once more on the way out
    assert document["connections_accepted"] == document["connections_completed"] == 1
    assert document["bytes_client_to_upstream"] == 3 and document["connections_active"] == 0
    assert document["routes"] == [route]


def test_stop_before_run_is_not_lost():
    relay = Relay([Route(("127.0.0.1", 0), ("127.0.0.1", 9))])
    try:
        relay.stop()
        started = time.monotonic()
        relay.run()
        assert time.monotonic() - started < 0.5
    finally:
        relay.close()


@pytest.mark.parametrize("text, address", [
    ("10.0.0.1:80", ("10.0.0.1", 80)),
    ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
])
def test_parse_address(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["10.0.0.1", "host:80", "10.0.0.1:70000", "[::1]"])
def test_parse_address_refuses_what_is_not_ip_and_port(text):
    with pytest.raises(ValueError):
        parse_address(text)


def test_cli_refuses_unpaired_listen_and_upstream():
    with pytest.raises(SystemExit) as exit_info:
        main(["--listen", "127.0.0.1:1", "--listen", "127.0.0.1:2", "--upstream", "127.0.0.1:3"])
    assert exit_info.value.code == 2


def test_cli_relays_until_sigterm(tmp_path):
    upstream = Upstream(echo)
    port = closed_port()
    stats = tmp_path / "stats.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "vpclab.engines.nlb.pp2_relay", "--listen", f"127.0.0.1:{port}",
         "--upstream", f"127.0.0.1:{upstream.address[1]}", "--vpc-endpoint-id", VPCE, "--stats", str(stats)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE,
    )
    try:
        wait_for(stats.exists, timeout=TIMEOUT)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            client.sendall(b"ping")
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b"ping"
            client_address = client.getsockname()
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)
        upstream.close()
    assert upstream.headers == [proxy_header(client_address, ("127.0.0.1", port), vpc_endpoint_id=VPCE)]
    assert json.loads(stats.read_text())["connections_completed"] == 1
    assert b"relaying 127.0.0.1:" in process.stderr.read()
