"""ALB access logs (reference §4.6): what HAProxy logs, and the ALB entry made of it.

HAProxy sends one datagram per request, in LOG_FORMAT, to a UNIX datagram socket
(`log_lines(socket)`); `Receiver` (the I/O shell) turns each into one ALB entry with
`alb_entry` and appends it to the lab's access-log file. The lab has no S3: the file is
`<state dir>/alb/access-logs/<load balancer>.log`, and `vpclab status` names it.

LOG_FORMAT is space-separated tokens; what a client can fill with spaces or quotes (Host,
User-Agent, trace id, SNI, txn variables) is hex-encoded by HAProxy, so every line parses.
Variables the HAProxy config sets for the log (absent: `-`):
  txn.alb_host, txn.alb_ua, txn.trace_id  the Host and User-Agent the client sent, the
                                          X-Amzn-Trace-Id sent on (headers.py sets them);
  txn.rule_priority   the matched rule's priority, "0" for the default rule (E's rules);
  txn.actions_executed  e.g. "forward", "redirect", "fixed-response" (E's rules; without it,
                      "forward" when a target was chosen);
  txn.redirect_url    the Location of a redirect action (E's rules);
  txn.tg_arn          the target group's ARN (else context["target_group_arns"][backend]).
The `context` of `alb_entry` says what HAProxy cannot: {"elb": "app/<name>/<16 hex>",
"target_group_arns": {backend: arn}, "certificate_arns": {frontend: arn}}.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
import socket
import stat
import threading
from pathlib import Path

from vpclab import unixpath
from vpclab.engines.alb import errors

log = logging.getLogger(__name__)

MARKER = "vpclab-alb/1"
HEX = ("host", "user_agent", "trace_id", "sni", "actions", "redirect_url", "tg_arn")
# (field, HAProxy log-format item), in the order of the datagram.
FIELDS = (
    ("accept_s", "%Ts"), ("accept_ms", "%ms"), ("client_ip", "%ci"), ("client_port", "%cp"),
    ("frontend", "%f"), ("frontend_ip", "%fi"), ("frontend_port", "%fp"), ("backend", "%b"),
    ("server", "%s"), ("server_ip", "%si"), ("server_port", "%sp"),
    ("Th", "%Th"), ("Ti", "%Ti"), ("TR", "%TR"), ("Tw", "%Tw"), ("Tc", "%Tc"), ("Tr", "%Tr"), ("Ta", "%Ta"),
    ("status", "%ST"), ("termination", "%tsc"), ("received_bytes", "%U"), ("sent_bytes", "%B"),
    ("method", "%HM"), ("uri", "%HU"), ("version", "%HV"),
    ("ssl", "%[ssl_fc]"), ("ssl_cipher", "%sslc"), ("ssl_protocol", "%sslv"), ("sni", "%[ssl_fc_sni,hex]"),
    ("host", "%[var(txn.alb_host),hex]"), ("user_agent", "%[var(txn.alb_ua),hex]"),
    ("trace_id", "%[var(txn.trace_id),hex]"), ("rule_priority", "%[var(txn.rule_priority)]"),
    ("actions", "%[var(txn.actions_executed),hex]"), ("redirect_url", "%[var(txn.redirect_url),hex]"),
    ("tg_arn", "%[var(txn.tg_arn),hex]"),
)
LOG_FORMAT = " ".join([MARKER] + [item for _, item in FIELDS])
MAX_DATAGRAM = 65535
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # HAProxy's `len` limit for one log line


class MalformedLogLine(ValueError):
    pass


def log_lines(socket_path: str) -> list[str]:
    """The `log` and `log-format` lines of a frontend sending its requests to `socket_path`
    (an AF_UNIX path under 108 bytes: HAProxy binds no longer ones). Without access logs, a
    frontend keeps the last two options (metrics.py counts requests as ALB does)."""
    return [f"log unix@{socket_path} len {MAX_DATAGRAM} format raw local0 info",
            f'log-format "{LOG_FORMAT}"',
            # A connection that never sent a request is no ALB request: neither logged nor counted.
            "option dontlognull", "option http-ignore-probes"]


def parse(raw: str) -> dict[str, str]:
    """The fields of one HAProxy datagram (a syslog header before the marker is skipped)."""
    at = raw.find(MARKER + " ")
    tokens = raw[at:].strip().split(" ") if at >= 0 else []
    if len(tokens) != len(FIELDS) + 1:
        raise MalformedLogLine(f"not an ALB log line ({len(tokens)} fields): {raw[:120]!r}")
    fields = dict(zip((name for name, _ in FIELDS), tokens[1:]))
    for name in HEX:
        value = fields[name]
        try:
            fields[name] = "-" if value == "-" else bytes.fromhex(value).decode("utf-8", "replace")
        except ValueError:
            raise MalformedLogLine(f"{name}: not hex: {value[:40]!r}") from None
    return fields


def _int(fields: dict, name: str) -> int:
    try:
        return int(fields[name])
    except ValueError:
        return -1


def _seconds(ms: int) -> str:
    return "-1" if ms < 0 else f"{ms / 1000:.3f}"


def _iso(epoch_ms: int) -> str:
    when = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}Z"


def _quoted(value: str) -> str:
    return '"' + (value or "-").replace("\\", "\\\\").replace('"', '\\"') + '"'


def _request(fields: dict) -> str:
    """`"METHOD proto://host:port/uri VERSION"`, or `"- - - "` for a request HAProxy could not read."""
    if fields["method"] in ("-", "<BADREQ>") or fields["uri"] in ("-", "<BADREQ>"):
        return '"- - - "'
    scheme = "https" if fields["ssl"] == "1" else "http"
    host = fields["host"] if fields["host"] != "-" else fields["frontend_ip"]
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    uri = fields["uri"]
    if _ABSOLUTE.match(uri):  # an absolute URI (always, over HTTP/2): its path
        after = uri.split("://", 1)[1]
        uri = "/" + after.split("/", 1)[1] if "/" in after else "/"
    return _quoted(f"{fields['method']} {scheme}://{name}:{fields['frontend_port']}{uri} {fields['version']}")


def _type(fields: dict, status: int) -> str:
    secure = fields["ssl"] == "1"
    if status == 101:
        return "wss" if secure else "ws"
    if fields["version"] == "HTTP/2.0":
        return "h2"
    return "https" if secure else "http"


def alb_entry(raw: str, context: dict) -> str:
    """One ALB access-log entry, fields in §4.6's order, from one HAProxy datagram."""
    f = parse(raw)
    server = None if f["server"] in ("<NOSRV>", "-") or f["server_ip"] == "-" else f["server"]
    status = _int(f, "status")
    elb_code, target_code = errors.elb_status_code(status, f["termination"], server)
    accept = _int(f, "accept_s") * 1000 + _int(f, "accept_ms")
    start = accept + max(_int(f, "Th"), 0) + max(_int(f, "Ti"), 0)
    end = start + max(_int(f, "Ta"), 0)
    Tw, Tc, Tr, TR, Ta = (_int(f, k) for k in ("Tw", "Tc", "Tr", "TR", "Ta"))
    if server is not None:  # dispatched: -1 for what never happened
        timings = (_seconds(Tw + Tc) if Tc >= 0 else "-1", _seconds(Tr),
                   "0.000" if Tr >= 0 else "-1")  # HAProxy does not time its own response step
    elif elb_code in (400, 408, 460, 502, 503, 504):
        timings = ("-1", "-1", "-1")  # could not dispatch
    else:  # answered by the load balancer itself: a rule's redirect or fixed response, a 405...
        timings = (_seconds(max(Ta - max(TR, 0), 0)), "0.000", "0.000")
    target = f"{f['server_ip']}:{f['server_port']}" if server else "-"
    tg_arn = f["tg_arn"] if f["tg_arn"] != "-" else context.get("target_group_arns", {}).get(f["backend"], "-")
    actions = f["actions"] if f["actions"] != "-" else ("forward" if server else "-")
    cert = context.get("certificate_arns", {}).get(f["frontend"], "-") if f["ssl"] == "1" else "-"
    entry = [
        _type(f, status), _iso(end), context.get("elb", "-"), f"{f['client_ip']}:{f['client_port']}", target,
        *timings, str(elb_code) if elb_code else "-", str(target_code) if target_code else "-",
        str(max(_int(f, "received_bytes"), 0)), str(max(_int(f, "sent_bytes"), 0)),
        _request(f), _quoted(f["user_agent"]), f["ssl_cipher"], f["ssl_protocol"], tg_arn,
        _quoted(f["trace_id"]), _quoted(f["sni"]), _quoted(cert), f["rule_priority"], _iso(start),
        _quoted(actions), _quoted(f["redirect_url"]), _quoted("-"),
        _quoted(target), _quoted(str(target_code) if target_code else "-"), _quoted("-"), _quoted("-"),
    ]
    return " ".join(entry)


# --- the receiver (I/O) --------------------------------------------------------------------

def open_log(path: str | os.PathLike) -> int:
    """The access-log file for appending: created 0600, never through a symlink or a special file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path}: not a regular file")
    os.set_blocking(fd, True)
    return fd


class Receiver:
    """Binds `socket_path` (AF_UNIX datagrams from HAProxy) and appends one ALB entry per
    datagram to `log_path`. One datagram at a time: memory stays bounded whatever the rate."""

    def __init__(self, socket_path: str | os.PathLike, log_path: str | os.PathLike, context: dict) -> None:
        self.context, self.log_path = context, Path(log_path)
        self.received = self.written = self.malformed = 0
        Path(socket_path).unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        with unixpath.usable(socket_path) as usable:
            self.sock.bind(usable)
        os.chmod(socket_path, 0o600)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.fd = open_log(self.log_path)

    def handle(self, datagram: bytes) -> str | None:
        """The entry written for one datagram, or None for a malformed one (counted, dropped)."""
        self.received += 1
        try:
            entry = alb_entry(datagram.decode("utf-8", "replace"), self.context)
        except MalformedLogLine as e:
            self.malformed += 1
            log.debug("access log: dropped %s", e)
            return None
        os.write(self.fd, (entry + "\n").encode())
        self.written += 1
        return entry

    def serve(self, stop: threading.Event, poll: float = 0.5) -> None:
        self.sock.settimeout(poll)
        while not stop.is_set():
            try:
                datagram = self.sock.recv(MAX_DATAGRAM + 1)
            except TimeoutError:
                continue
            self.handle(datagram)

    def close(self) -> None:
        self.sock.close()
        os.close(self.fd)
