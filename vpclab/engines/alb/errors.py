"""The responses an ALB generates itself (reference §4.5), and the code it logs for each request.

An ALB's own error page is a short HTML document sent with `Server: awselb/2.0`; HAProxy
serves it from an errorfile (a complete HTTP response on disk). HAProxy accepts `errorfile`
only for the codes it generates itself (HAPROXY_ERRORFILE_CODES); the others (414, 463, 505)
are sent by `http-request deny deny_status N errorfile <path>` or `return_args(N)`.

`elb_status_code` is the pure map from what HAProxy logged (its status and two-letter
termination state, see HAProxy's "Session state at disconnection") to ALB's `elb_status_code`
and `target_status_code` (reference §4.6): a client that closed before the ALB answered is
460, a silent client 408, a target that refused or reset 502, a target that never answered
504, no target at all 503; a response the target sent passes through unchanged.
"""
from __future__ import annotations

import os
from pathlib import Path

# Reason phrases as ALB's error pages print them (its front end is nginx-derived).
REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    408: "Request Time-out",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    460: "",
    463: "",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
    505: "HTTP Version Not Supported",
}
ERROR_CODES = (400, 403, 405, 408, 413, 414, 463, 500, 501, 502, 503, 504, 505)
# The codes HAProxy 2.6's `errorfile` directive takes (it refuses the others at parse time).
HAPROXY_ERRORFILE_CODES = frozenset({400, 403, 405, 408, 413, 500, 501, 502, 503, 504})
SERVER = "awselb/2.0"
MAX_ERRORFILE = 4096  # far below HAProxy's buffer (tune.bufsize), which an errorfile must fit


def body(code: int) -> str:
    """The HTML page ALB sends with a code it generated."""
    title = f"{code} {REASONS[code]}"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n")


def response(code: int) -> bytes:
    """A complete HTTP/1.1 response for an errorfile: ALB's headers and page."""
    if code not in REASONS:
        raise ValueError(f"ALB generates no {code} response")
    page = body(code).encode()
    # 408 closes the connection, as ALB does with a silent client; the others keep it open.
    connection = "close" if code in (400, 408, 505) else "keep-alive"
    head = (f"HTTP/1.1 {code} {REASONS[code]}\r\nServer: {SERVER}\r\nContent-Type: text/html\r\n"
            f"Content-Length: {len(page)}\r\nConnection: {connection}\r\n\r\n")
    data = head.encode() + page
    assert len(data) <= MAX_ERRORFILE
    return data


def error_path(error_dir: str | os.PathLike, code: int) -> Path:
    return Path(error_dir) / f"{code}.http"


def write_errorfiles(error_dir: str | os.PathLike) -> dict[int, Path]:
    """Writes one errorfile per code ALB generates into `error_dir` (made 0700); code -> path."""
    directory = Path(error_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = {}
    for code in ERROR_CODES:
        path = error_path(directory, code)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(response(code))
        os.replace(temporary, path)
        paths[code] = path
    return paths


def errorfile_lines(error_dir: str | os.PathLike) -> list[str]:
    """Writes the errorfiles and returns the `errorfile` lines for a defaults or frontend section."""
    paths = write_errorfiles(error_dir)
    return [f"errorfile {code} {paths[code]}" for code in ERROR_CODES if code in HAPROXY_ERRORFILE_CODES]


def deny_args(code: int, error_dir: str | os.PathLike) -> str:
    """Arguments of `http-request deny` that answer `code` with ALB's page (any code, 463 too)."""
    return f"deny_status {code} errorfile {error_path(error_dir, code)}"


def return_args(code: int) -> str:
    """Arguments of `http-request return`/`deny` that answer `code` with ALB's page inline, for a
    section that has no error directory (HAProxy unescapes \\r and \\n inside double quotes)."""
    escaped = body(code).replace("\r", "\\r").replace("\n", "\\n")
    return f'status {code} content-type text/html hdr Server {SERVER} string "{escaped}"'


# --- the code ALB logs -------------------------------------------------------------------

def elb_status_code(status: int, termination_state: str, server: str | None) -> tuple[int | None, int | None]:
    """(elb_status_code, target_status_code) for one request as HAProxy logged it.

    `status` is HAProxy's %ST (-1 when nothing was sent), `termination_state` its %tsc
    (two letters at least, e.g. "SC--"), `server` the target that was chosen (None for none).
    None means "-" in the access log.
    """
    cause, phase = (termination_state + "--")[:2]
    if server is not None and phase in "DL-" and status > 0:
        return status, status  # the target's response headers reached the client, unchanged
    if cause == "C" and phase in "QCH":
        # The client left with its request complete, before any answer (HAProxy logs 400 or -1).
        return 460, None
    if cause == "C" and phase in "RD":
        return 400, None  # it closed before sending its whole request (headers or body)
    if cause == "c" and phase == "R":
        return 408, None  # the client sent nothing (or not all) within the idle timeout
    if cause == "s" and phase in "CH":
        return 504, None  # no connection, or no response header, within the timeout
    if cause == "s" and phase == "Q":
        return 503, None
    if cause == "S" and phase in "CH":
        # Refused, reset or unreachable target; with no server at all HAProxy says 503.
        return (503, None) if server is None else (502, None)
    if cause == "P" and phase == "H":
        return 502, None  # the target's response was invalid
    if status > 0:
        return status, None  # ALB's own answer: a redirect, a fixed response, a 405, a 463...
    return 502, None


# --- a target group's backend ----------------------------------------------------------------

CONNECT_FAILED = "X-Vpclab-Connect-Failed"  # marks HAProxy's own 503 page; never leaves the node


def backend_lines(error_dir: str | os.PathLike, connect_timeout_ms: int = 10_000) -> list[str]:
    """Lines of a target group's backend so that its failures carry ALB's codes (§4.5).

    HAProxy answers 503 for every failure to reach a server. ALB says 503 only when there is
    no target (no slot in service), 502 when the target refused or reset the connection, and
    504 when no connection came within the connect timeout (10 s at AWS). HAProxy 2.6 has no
    fetch for its termination state, so the elapsed time tells a timeout from a refusal.
    """
    marked = _marked_502(error_dir)
    return [
        # A client that leaves while its request waits is dropped (HAProxy 2.6 sees it leave only
        # on HTTP/2, whose connection it keeps reading; an HTTP/1.1 client's close goes unseen).
        "option abortonclose",
        "http-request set-var(txn.alb_t0) date(0,ms)",
        # a worker stopping after a reload counts no server at all (HAProxy stops its proxies),
        # yet still serves the connections it accepted before: those must reach their target
        f"http-request return {return_args(503)} if !{{ nbsrv gt 0 }} !{{ stopping }}",
        f"errorfile 503 {marked}",
        # the status first: a cheap test that spares every other response two header scans
        f"http-after-response set-status 504 reason \"{REASONS[504]}\" if {{ status 502 }} "
        f"{{ res.fhdr_cnt({CONNECT_FAILED}) gt 0 }} {{ date(0,ms),sub(txn.alb_t0) ge {connect_timeout_ms} }}",
        f"http-after-response del-header {CONNECT_FAILED} if {{ status 502 504 }}",  # 504: set just above
    ]


def _marked_502(error_dir: str | os.PathLike) -> Path:
    """ALB's 502 page with the marker header, as the errorfile for HAProxy's connect failures."""
    directory = Path(error_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "connect-failed.http"
    head, sep, rest = response(502).partition(b"\r\n")
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_bytes(head + sep + f"{CONNECT_FAILED}: 1\r\n".encode() + rest)
    os.replace(temporary, path)
    return path
