"""A real HAProxy on loopback for the ALB snippets' tests: one frontend made of the lines under
test, in front of a tiny local server that answers with the request it received (method, path
and headers in order, as JSON). Loopback only, ephemeral ports, every wait bounded, and only
the HAProxy process started here is stopped (by its PID)."""
from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def needs_haproxy():
    return pytest.mark.skipif(not Path(HAPROXY).exists(), reason="haproxy is not installed (install.sh installs it)")


def check_config(text: str, tmp_path: Path) -> None:
    """`haproxy -c` accepts `text`, or the test fails with HAProxy's complaint."""
    path = tmp_path / "check.cfg"
    path.write_text(text)
    result = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"haproxy -c refused:\n{result.stdout}{result.stderr}\n{text}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"method": self.command, "path": self.path, "client": self.client_address[0],
                           "headers": [[k, v] for k, v in self.headers.raw_items()]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = _answer

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # HAProxy closing its idle connections to the target when it stops


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def frontend_config(frontend_lines: list[str], backend_port: int, listen_port: int, extra_global: str = "",
                    extra_defaults: str = "") -> str:
    body = "\n".join("  " + line for line in frontend_lines)
    return (f"global\n  maxconn 100\n{extra_global}"
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n"
            f"{extra_defaults}"
            f"frontend fe_test\n  bind 127.0.0.1:{listen_port}\n{body}\n  default_backend tg_test\n"
            f"backend tg_test\n  server s1 127.0.0.1:{backend_port}\n")


@contextlib.contextmanager
def running(config_text: str, tmp_path: Path, listen_port: int,
            master_worker: bool = False) -> Iterator[subprocess.Popen]:
    """HAProxy in the foreground on `config_text`, ready once `listen_port` accepts; with
    `master_worker`, as an ALB node runs it (the process is the master: SIGUSR2 reloads)."""
    path = tmp_path / "haproxy.cfg"
    path.write_text(config_text)
    argv = [HAPROXY, "-db", "-f", str(path)] + (["-W"] if master_worker else [])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"haproxy exited {proc.returncode}: {proc.stdout.read().decode()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", listen_port), timeout=1):
                break
            assert time.monotonic() < deadline, "haproxy did not listen within 15 s"
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


@contextlib.contextmanager
def haproxy_in_front(frontend_lines: list[str], tmp_path: Path, **extra) -> Iterator[int]:
    """The port of a running HAProxy whose frontend is `frontend_lines`, before an echo server."""
    with echo_server() as backend_port:
        port = _free_port()
        text = frontend_config(frontend_lines, backend_port, port, **extra)
        with running(text, tmp_path, port):
            yield port


def request(port: int, method: str = "GET", path: str = "/", headers: list[tuple[str, str]] = ()) -> tuple[int, dict, bytes]:
    """One request: (status, response headers lower-cased, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=any(k.lower() == "host" for k, _ in headers),
                        skip_accept_encoding=True)
        for key, value in headers:
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def seen(port: int, method: str = "GET", path: str = "/", headers: list[tuple[str, str]] = ()) -> dict[str, list[str]]:
    """The headers the target received (name lower-cased -> values in order)."""
    status, _, body = request(port, method, path, headers)
    assert status == 200, (status, body)
    found: dict[str, list[str]] = {}
    for key, value in json.loads(body)["headers"]:
        found.setdefault(key.lower(), []).append(value)
    return found
