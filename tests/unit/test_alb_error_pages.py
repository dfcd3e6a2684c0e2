"""ALB-generated codes (reference §4.5): ALB's error pages, the code ALB logs for each way a
request ends, and a target group's backend answering 502, 503 and 504 under real conditions."""
from __future__ import annotations

import contextlib
import signal
import socket
import time
from pathlib import Path

import pytest

from alb_haproxy import _free_port, check_config, echo_server, needs_haproxy, request, running
from vpclab.engines.alb import errors


@pytest.mark.parametrize("code", errors.ERROR_CODES)
def test_every_error_page_is_a_complete_response_from_awselb(code):
    data = errors.response(code)
    head, _, page = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {code}")
    assert "Server: awselb/2.0" in lines and "Content-Type: text/html" in lines
    assert f"Content-Length: {len(page)}" in lines
    assert f"<title>{code} ".encode() in page and page.startswith(b"<html>")


def test_errorfile_lines_name_only_codes_haproxy_takes_and_every_page_is_written(tmp_path):
    lines = errors.errorfile_lines(tmp_path / "errors")
    assert {int(line.split()[1]) for line in lines} == errors.HAPROXY_ERRORFILE_CODES
    assert sorted(p.name for p in (tmp_path / "errors").iterdir()) == sorted(f"{c}.http" for c in errors.ERROR_CODES)


@needs_haproxy()
def test_haproxy_accepts_the_errorfiles_and_the_deny_of_any_code(tmp_path):
    lines = errors.errorfile_lines(tmp_path / "errors")
    body = "\n".join("  " + line for line in lines + [
        f"http-request deny {errors.deny_args(463, tmp_path / 'errors')} if {{ path /x }}",
        f"http-request deny {errors.return_args(505)} if {{ path /y }}"])
    check_config(f"defaults\n  mode http\n  timeout client 1s\n  timeout server 1s\n  timeout connect 1s\n"
                 f"frontend fe_http\n  bind 127.0.0.1:18080\n{body}\n", tmp_path)


# (HAProxy's %ST, %tsc, the chosen server) -> ALB's (elb_status_code, target_status_code)
CASES = [
    ("the target answered", 200, "----", "s1", (200, 200)),
    ("the target's own 502 passes through", 502, "----", "s1", (502, 502)),
    ("the client left while the body flowed", 200, "CD--", "s1", (200, 200)),
    ("the client closed before the target answered", -1, "CH--", "s1", (460, None)),
    ("the client closed while HAProxy connected", -1, "CC--", "s1", (460, None)),
    ("the client sent nothing within the idle timeout", 408, "cR--", None, (408, None)),
    ("a malformed request", 400, "PR--", None, (400, None)),
    ("a request cut short by the client", 400, "CR--", None, (400, None)),
    ("a request body cut short by the client", -1, "CD--", "s1", (400, None)),
    ("an HTTP/2 client that reset its stream while the target worked", 400, "CH--", "s1", (460, None)),
    ("the target reset the connection", 503, "SC--", "s1", (502, None)),
    ("the target closed before its headers", 502, "SH--", "s1", (502, None)),
    ("the target's response was malformed", 502, "PH--", "s1", (502, None)),
    ("no connection within the connect timeout", 503, "sC--", "s1", (504, None)),
    ("no response within the idle timeout", 504, "sH--", "s1", (504, None)),
    ("no registered target", 503, "SC--", None, (503, None)),
    ("a redirect action", 301, "LR--", None, (301, None)),
    ("a fixed response", 200, "LR--", None, (200, None)),
    ("TRACE refused", 405, "PR--", None, (405, None)),
    ("too many X-Forwarded-For entries", 463, "PR--", None, (463, None)),
]


@pytest.mark.parametrize("what,status,state,server,expected", CASES, ids=[c[0] for c in CASES])
def test_elb_status_code_follows_how_the_request_ended(what, status, state, server, expected):
    assert errors.elb_status_code(status, state, server) == expected


# --- a target group's backend under real failures ---------------------------------------------

@contextlib.contextmanager
def never_accepting():
    """A port whose SYNs go unanswered: a listener with a full accept queue, on loopback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(3):  # more than the queue holds
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(listener.getsockname())
            fillers.append(filler)
        yield listener.getsockname()[1]
    finally:
        for s in fillers + [listener]:
            s.close()


def backends_config(tmp_path, port, refused_port, silent_port, connect_ms=1000):
    lines = "".join(f"  {line}\n" for line in errors.backend_lines(tmp_path / "errors", connect_ms))
    return ("defaults\n  mode http\n  retries 0\n"
            f"  timeout connect {connect_ms}ms\n  timeout client 5s\n  timeout server 5s\n"
            f"frontend fe_http\n  bind 127.0.0.1:{port}\n"
            "  use_backend tg_refusing if { path /refusing }\n  use_backend tg_silent if { path /silent }\n"
            "  default_backend tg_empty\n"
            f"backend tg_refusing\n{lines}  server s1 127.0.0.1:{refused_port}\n"
            f"backend tg_silent\n{lines}  server s1 127.0.0.1:{silent_port}\n"
            f"backend tg_empty\n{lines}  server-template s 1-4 127.0.0.1:9 disabled\n")


@needs_haproxy()
def test_a_target_group_with_no_target_answers_503(tmp_path):
    port = _free_port()
    with never_accepting() as silent, running(backends_config(tmp_path, port, _free_port(), silent), tmp_path, port):
        status, headers, body = request(port, path="/")
    assert (status, headers["server"]) == (503, "awselb/2.0") and b"503 Service Temporarily Unavailable" in body


@needs_haproxy()
def test_a_target_that_refuses_the_connection_gets_502(tmp_path):
    port = _free_port()
    with never_accepting() as silent, running(backends_config(tmp_path, port, _free_port(), silent), tmp_path, port):
        status, headers, body = request(port, path="/refusing")
    assert (status, headers["server"]) == (502, "awselb/2.0") and b"502 Bad Gateway" in body
    assert errors.CONNECT_FAILED.lower() not in headers


@needs_haproxy()
def test_a_target_that_never_accepts_gets_504_after_the_connect_timeout(tmp_path):
    port = _free_port()
    with never_accepting() as silent, running(backends_config(tmp_path, port, _free_port(), silent), tmp_path, port):
        started = time.monotonic()
        status, headers, _ = request(port, path="/silent")
    assert (status, headers["server"]) == (504, "awselb/2.0")
    assert time.monotonic() - started >= 0.9


def _workers(master: int) -> list[str]:
    return Path(f"/proc/{master}/task/{master}/children").read_text().split()


@needs_haproxy()
def test_a_request_accepted_before_a_seamless_reload_reaches_its_target_not_503(tmp_path):
    """A reload (a listener or rule change, `replace-nodes`) leaves the connections the old
    worker accepted with it; that worker counts no server once it stops, yet must serve them."""
    port = _free_port()
    lines = "".join(f"  {line}\n" for line in errors.backend_lines(tmp_path / "errors"))
    with echo_server() as target:
        text = ("defaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 5s\n"
                f"frontend fe_http\n  bind 127.0.0.1:{port}\n  default_backend tg_web\n"
                f"backend tg_web\n{lines}  server s1 127.0.0.1:{target}\n")
        with running(text, tmp_path, port, master_worker=True) as master:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                time.sleep(0.2)  # accepted by the first worker
                master.send_signal(signal.SIGUSR2)
                deadline = time.monotonic() + 10
                while len(_workers(master.pid)) < 2:  # the new worker is up, the old one stopping
                    assert time.monotonic() < deadline, "no new worker within 10 s"
                    time.sleep(0.05)
                time.sleep(0.5)
                client.sendall(b"GET / HTTP/1.1\r\nHost: alb\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := client.recv(4096):
                    answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
