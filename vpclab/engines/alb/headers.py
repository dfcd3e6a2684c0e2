"""The request headers an ALB adds, changes or refuses (reference §4.3, §4.5), as HAProxy lines.

`refusal_lines()`: TRACE is refused with 405, and more than 30 X-Forwarded-For entries with
463, before any rule is evaluated (the access log shows no matched rule for them: `-`).

`frontend_request_lines(listener, attributes)` returns the other `http-request` lines of one
listener's frontend, to run after its rules are chosen, in this order:
  2. with access logs on (`access_logs.s3.enabled`), what the log needs from the request as
     the client sent it, in txn variables (`txn.alb_host` Host, `txn.alb_ua` User-Agent);
  3. X-Forwarded-For under `routing.http.xff_header_processing.mode` (append, preserve,
     remove), as `ip` or `ip:port` with `routing.http.xff_client_port.enabled`;
  4. X-Forwarded-Proto and X-Forwarded-Port: the listener's protocol and port;
  5. Host, unless `routing.http.preserve_host_header.enabled`: the port dropped on 80 and 443,
     the listener's port put on any other;
  6. X-Amzn-Trace-Id: `Root=1-<8 hex epoch seconds>-<24 hex>` when absent (or over 7 KB);
     with a Root, a `Self=` of the same form is put first, or updated, and the rest kept.
     With access logs on, the value sent on is kept in `txn.trace_id` for the log.
Every line runs on every request: what only the access log reads is left out without it.
Rules (E's config) match on what these lines leave; rule conditions on the Host header compare
its name, so they see the same host either way.
"""
from __future__ import annotations

from vpclab.engines.alb import errors

MAX_XFF_ENTRIES = 30
MAX_TRACE_ID_BYTES = 7 * 1024
XFF_MODES = ("append", "preserve", "remove")
PEER_VAR = "sess.alb_peer"  # the client as X-Forwarded-For names it, set on its first request
DEFAULT_PORTS = (80, 443)

# One AWS trace id: version 1, the epoch seconds as 8 hex digits, then 96 random bits.
# (`date` and `rand` are integers; `bytes(4,4)` keeps their low 32 bits before `hex`.)
_WORD = "%[rand,bytes(4,4),hex,lower]"
TRACE_ID = "1-%[date,bytes(4,4),hex,lower]-" + _WORD * 3


def _true(attributes: dict, key: str) -> bool:
    return str(attributes.get(key, "false")).lower() == "true"


def xff_lines(mode: str, client_port: bool) -> list[str]:
    """X-Forwarded-For, as ALB handles it in each `xff_header_processing.mode`."""
    if mode not in XFF_MODES:
        raise ValueError(f"routing.http.xff_header_processing.mode: {mode!r} is not one of {', '.join(XFF_MODES)}")
    if mode == "preserve":
        return []
    if mode == "remove":
        return ["http-request del-header X-Forwarded-For"]
    # The client's address as text once per connection (a keep-alive client sends many
    # requests; formatting `src` on each was a tenth of the ALB's per-request rule work).
    peer = f"%[var({PEER_VAR})]"
    # ALB appends to the one header (left-most = client); HAProxy's `option forwardfor` would
    # add a second header line instead. Several lines already: one more, same meaning (RFC 9110).
    # Each line's condition is read after the previous line ran: most headers first.
    return [
        f'http-request set-var-fmt({PEER_VAR}) "{"%[src]:%[src_port]" if client_port else "%[src]"}" '
        f'if !{{ var({PEER_VAR}) -m found }}',
        f'http-request add-header X-Forwarded-For "{peer}" if {{ req.fhdr_cnt(X-Forwarded-For) gt 1 }}',
        f'http-request set-header X-Forwarded-For "%[req.fhdr(X-Forwarded-For)], {peer}" '
        f'if {{ req.fhdr_cnt(X-Forwarded-For) eq 1 }}',
        f'http-request add-header X-Forwarded-For "{peer}" if {{ req.fhdr_cnt(X-Forwarded-For) eq 0 }}',
    ]


def host_lines(port: int, preserve: bool) -> list[str]:
    """Host as the target sees it: the name, plus the listener's port unless it is 80 or 443."""
    if preserve:
        return []
    name = "%[req.hdr(Host),field(1,:)]"
    if port in DEFAULT_PORTS:  # only a Host with a port changes
        return [f'http-request set-header Host "{name}" if {{ req.hdr(Host) -m sub : }}']
    return [f'http-request set-header Host "{name}:{port}" if {{ req.hdr(Host) -m found }}']


def trace_id_lines(logged: bool = True) -> list[str]:
    """X-Amzn-Trace-Id: a new Root, or a Self put before (or in place of) the caller's. A
    header the client sent is read once into `txn.alb_trace_in`, so that each line's
    condition is about the client's header, not what an earlier line made of it; the common
    case (none sent) is one line."""
    sent = "{ var(txn.alb_trace_in) -m found }"
    too_long = f"{{ var(txn.alb_trace_in),length gt {MAX_TRACE_ID_BYTES} }}"
    usable = f"{sent} !{too_long}"
    has_root = "{ var(txn.alb_trace_in) -m reg -i (^|;)\\s*Root= }"
    has_self = "{ var(txn.alb_trace_in) -m reg -i (^|;)\\s*Self= }"
    lines = [
        "http-request set-var(txn.alb_trace_in) req.fhdr(X-Amzn-Trace-Id) "
        "if { req.fhdr(X-Amzn-Trace-Id) -m found }",
        f'http-request add-header X-Amzn-Trace-Id "Root={TRACE_ID}" if !{sent}',  # none to replace
        f'http-request set-var-fmt(txn.alb_trace) "{TRACE_ID}" if {sent}',
        # Over 7 KB: ALB sends a Root of its own only.
        f'http-request set-header X-Amzn-Trace-Id "Root=%[var(txn.alb_trace)]" if {sent} {too_long}',
        # Fields without a Root: a Root first, the caller's fields kept.
        f'http-request set-header X-Amzn-Trace-Id "Root=%[var(txn.alb_trace)];%[var(txn.alb_trace_in)]" '
        f'if {usable} !{has_root}',
        f'http-request replace-header X-Amzn-Trace-Id "^(.*;)?(\\s*)Self=[^;]*(.*)" '
        f'"\\1\\2Self=%[var(txn.alb_trace)]\\3" if {usable} {has_root} {has_self}',
        f'http-request set-header X-Amzn-Trace-Id "Self=%[var(txn.alb_trace)];%[var(txn.alb_trace_in)]" '
        f'if {usable} {has_root} !{has_self}',
    ]
    if logged:
        lines.append("http-request set-var(txn.trace_id) req.fhdr(X-Amzn-Trace-Id)")
    return lines


def refusal_lines() -> list[str]:
    """What ALB refuses before its rules: TRACE (405), more than 30 X-Forwarded-For entries (463)."""
    return [f"http-request deny {errors.return_args(405)} if {{ method TRACE }}",
            f"http-request deny {errors.return_args(463)} "
            f"if {{ req.hdr_cnt(X-Forwarded-For) gt {MAX_XFF_ENTRIES} }}"]


def access_logs_on(attributes: dict) -> bool:
    return _true(attributes, "access_logs.s3.enabled")


def frontend_request_lines(listener: dict, attributes: dict) -> list[str]:
    """The `http-request` lines of a listener's frontend after its rules (see the module docstring).

    `listener` is one entry of alb_node_config's "listeners" (its protocol and port);
    `attributes` the load balancer's, AWS keys, values as strings.
    """
    protocol, port = listener["protocol"], int(listener["port"])
    if protocol not in ("HTTP", "HTTPS"):
        raise ValueError(f"listener {listener.get('name')!r}: protocol {protocol!r} is not HTTP or HTTPS")
    mode = str(attributes.get("routing.http.xff_header_processing.mode", "append"))
    logged = access_logs_on(attributes)
    lines = ["http-request set-var(txn.alb_host) req.fhdr(Host)",
             "http-request set-var(txn.alb_ua) req.fhdr(User-Agent)"] if logged else []
    lines += xff_lines(mode, _true(attributes, "routing.http.xff_client_port.enabled"))
    lines += [f"http-request set-header X-Forwarded-Proto {protocol.lower()}",
              f"http-request set-header X-Forwarded-Port {port}"]
    lines += host_lines(port, _true(attributes, "routing.http.preserve_host_header.enabled"))
    lines += trace_id_lines(logged)
    return lines
