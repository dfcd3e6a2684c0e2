"""Listener rules as HAProxy ACLs and actions, with AWS's matching semantics (reference §4.1), sans-IO.

A frontend first decides which rule matched, in priority order, into `txn.rule` (and, with
access logs on, the rule's priority into `txn.rule_priority`, 0 for the default rule); the
actions then key on that variable. So a redirect at priority 20 never jumps ahead of a
forward at priority 10, though HAProxy runs `http-request` lines before `use_backend`.

Matching, as AWS documents it:
- host-header: case-insensitive, `*` any run of characters, `?` one; matched on the host
  without its port, so `*.example.com` needs the dot and does not match example.com;
- path-pattern: case-sensitive, on the path only (no query string);
- http-header: the name case-insensitive (HAProxy's header fetches are), wildcards and no
  case in the values;
- http-request-method: exact, case-sensitive;
- query-string: `key=value` or a value alone, case-insensitive, wildcards;
- source-ip: CIDRs, the TCP peer (`src`), never X-Forwarded-For.
Values in one condition are ORed (one ACL with several patterns), conditions are ANDed.

Every regular expression is written between single quotes, where HAProxy's parser changes
nothing, with each character that is not a letter or digit as `\\xHH` (PCRE's escape): no
value, however hostile, can end the quote or mean something to the regex.
"""
from __future__ import annotations

import hashlib
import ipaddress

RULE_VAR = "txn.rule"
PRIORITY_VAR = "txn.rule_priority"
ACTIONS_VAR = "txn.actions_executed"  # for the access log (engines.alb.access_log)
PICK_VAR = "txn.pick"  # the weighted forward's random draw
GROUP_STICKY_VAR = "txn.tg_duration"  # set when the matched rule has group stickiness
GROUP_TOKEN_VAR = "txn.tg_token"  # the chosen group's AWSALBTG value, set by its backend
REDIRECT_DEFAULT_PORTS = {"http": "80", "https": "443"}


def backend_name(group: str) -> str:
    return f"tg_{group}"


def group_token(arn: str) -> str:
    """The opaque AWSALBTG value naming a target group (stable across nodes and reloads)."""
    return hashlib.sha256(arn.encode()).hexdigest()[:32]


def _escape_char(ch: str) -> str:
    if ch.isascii() and ch.isalnum():
        return ch
    return "".join(f"\\x{b:02x}" for b in ch.encode())


def wildcard_regex(pattern: str, star: str = ".*", one: str = ".") -> str:
    """AWS's `*` and `?` wildcards as an anchored PCRE (between single quotes in the config)."""
    body = "".join(star if ch == "*" else one if ch == "?" else _escape_char(ch) for ch in pattern)
    return f"^{body}$"


def _quoted(regex: str) -> str:
    assert "'" not in regex  # every quote was escaped as \x27
    return f"'{regex}'"


def _literal(text: str) -> str:
    """An exact-match pattern between single quotes; refuses what the quotes cannot hold."""
    if "'" in text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"value {text!r} cannot be matched exactly (quote or control character)")
    return f"'{text}'"


def condition_acl(name: str, condition: dict) -> str:
    """One rule condition as one named ACL (its values ORed)."""
    field, values = condition["field"], condition["values"]
    if not values:
        raise ValueError(f"condition {field} has no values")
    if field == "host-header":
        patterns = " ".join(_quoted(wildcard_regex(v)) for v in values)
        return f"acl {name} req.hdr(host),field(1,:) -m reg -i {patterns}"
    if field == "path-pattern":
        patterns = " ".join(_quoted(wildcard_regex(v)) for v in values)
        return f"acl {name} path -m reg {patterns}"
    if field == "http-header":
        header = condition["name"]
        if not header or any(not (c.isascii() and (c.isalnum() or c in "-_!#$%&*+.^`|~")) for c in header):
            raise ValueError(f"http-header name {header!r} is not an HTTP token")
        patterns = " ".join(_quoted(wildcard_regex(v)) for v in values)
        return f"acl {name} req.fhdr({header}) -m reg -i {patterns}"
    if field == "http-request-method":
        return f"acl {name} method -m str {' '.join(_literal(v) for v in values)}"
    if field == "query-string":
        return f"acl {name} query -m reg -i {' '.join(_quoted(query_regex(v)) for v in values)}"
    if field == "source-ip":
        return f"acl {name} src {' '.join(str(ipaddress.ip_network(v, strict=False)) for v in values)}"
    raise ValueError(f"unknown condition field {field!r}")


def query_regex(value: dict) -> str:
    """One query-string pair: `key=value`, or `value` as the value of any key (or a bare word)."""
    def part(text: str) -> str:
        return wildcard_regex(text, star="[^&]*", one="[^&]")[1:-1]
    key = value.get("key")
    head = f"{part(key)}=" if key not in (None, "") else "([^&=]*=)?"
    return f"(^|&){head}{part(value['value'])}(&|$)"


def rule_acls(rule_id: str, rule: dict) -> tuple[list[str], list[str]]:
    """ACL lines for a rule's conditions, and the names to AND."""
    lines, names = [], []
    for i, condition in enumerate(rule.get("conditions", ())):
        name = f"{rule_id}_c{i}"
        lines.append(condition_acl(name, condition))
        names.append(name)
    return lines, names


def is_rule(rule_id: str) -> str:
    return f"{{ var({RULE_VAR}) -m str {rule_id} }}"


def rule_ids(rules: list[dict]) -> list[str]:
    """Short, config-safe identifiers for a listener's rules, in evaluation order."""
    return [f"r{i}" for i in range(len(rules))]


def selection_lines(rules: list[dict], logged: bool = True) -> list[str]:
    """ACLs, then one set-var per rule in priority order: the first match wins. With `logged`
    (access logs on), the rule's priority and action type too, for the log only."""
    acls, picks = [], []
    unset = f"!{{ var({RULE_VAR}) -m found }}"
    for rule_id, rule in zip(rule_ids(rules), rules):
        lines, names = rule_acls(rule_id, rule)
        acls += lines
        cond = " ".join([unset, *names])
        priority = 0 if rule["priority"] == "default" else int(rule["priority"])
        if logged:
            picks.append(f"http-request set-var({PRIORITY_VAR}) int({priority}) if {cond}")
            picks.append(f"http-request set-var({ACTIONS_VAR}) str({rule['action']['type']}) if {cond}")
        picks.append(f"http-request set-var({RULE_VAR}) str({rule_id}) if {cond}")
    return acls + picks


# --- actions -------------------------------------------------------------------


def _lf_literal(text: str) -> str:
    """Literal text inside a double-quoted log-format string."""
    out = []
    for ch in text:
        if ch == "%":
            out.append("%%")
        elif ch in '"\\$':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise ValueError(f"control character in {text!r}")
        else:
            out.append(ch)
    return "".join(out)


def redirect_template(text: str, listener: dict) -> str:
    """A redirect field with AWS's placeholders as HAProxy log-format expressions."""
    parts = {
        "#{protocol}": listener["protocol"].lower(),
        "#{port}": str(listener["port"]),
        "#{host}": "%[req.hdr(host),field(1,:)]",
        "#{path}": "%[path,ltrim(/)]",  # AWS's #{path} has no leading slash: "/#{path}" is the original
        "#{query}": "%[query]",
    }
    out, i = [], 0
    while i < len(text):
        for placeholder, expr in parts.items():
            if text.startswith(placeholder, i):
                out.append(expr if placeholder in ("#{host}", "#{path}", "#{query}") else _lf_literal(expr))
                i += len(placeholder)
                break
        else:
            out.append(_lf_literal(text[i]))
            i += 1
    return "".join(out)


def redirect_lines(rule_id: str, action: dict, listener: dict) -> list[str]:
    """`redirect`: the location from the action's fields (each defaulting to the original's
    placeholder), the port left out when it is the protocol's default, the query only when
    there is one to add."""
    protocol = (action.get("protocol") or "#{protocol}")
    proto = listener["protocol"].lower() if protocol == "#{protocol}" else protocol.lower()
    port = action.get("port") or "#{port}"
    port_text = str(listener["port"]) if port == "#{port}" else str(port)
    host = redirect_template(action.get("host") or "#{host}", listener)
    path = action.get("path") or "/#{path}"
    if not path.startswith("/"):
        path = "/" + path
    location = f"{_lf_literal(proto)}://{host}"
    if REDIRECT_DEFAULT_PORTS.get(proto) != port_text:
        location += f":{redirect_template(port, listener)}"
    location += redirect_template(path, listener)
    code = int(action.get("status_code", 301))
    if code not in (301, 302):
        raise ValueError(f"redirect status {code} is not 301 or 302")
    query = action.get("query", "#{query}")
    when = is_rule(rule_id)
    if not query:
        return [f'http-request redirect location "{location}" code {code} if {when}']
    with_query = f'{location}?{redirect_template(query, listener)}'
    if query == "#{query}":  # only an original query to carry: none, no "?"
        return [f'http-request redirect location "{with_query}" code {code} if {when} {{ query -m len gt 0 }}',
                f'http-request redirect location "{location}" code {code} if {when}']
    return [f'http-request redirect location "{with_query}" code {code} if {when}']


def _return_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\$':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def fixed_response_line(rule_id: str, action: dict) -> str:
    """`fixed-response`: `http-request return`, the body given as is (literal, not log-format)."""
    code = int(action["status_code"])
    line = f"http-request return status {code}"
    body = action.get("message_body")
    if action.get("content_type"):
        line += f" content-type {_return_string(action['content_type'])}"
    if body:
        line += f" string {_return_string(body)}"
    return f"{line} if {is_rule(rule_id)}"


def forward_lines(rule_id: str, action: dict, groups: dict) -> tuple[list[str], list[str]]:
    """`forward`: (http-request lines, use_backend lines). One group: that backend. Several:
    a draw in [0, total weight) picks by weight; with group stickiness an AWSALBTG (or
    AWSALBTGCORS) cookie naming one of the rule's groups wins over the draw."""
    targets = [tg for tg in action["target_groups"] if int(tg.get("weight", 1)) > 0] \
        or action["target_groups"][:1]
    when = is_rule(rule_id)
    if len(targets) == 1:
        return [], [f"use_backend {backend_name(targets[0]['name'])} if {when}"]
    total = sum(int(tg["weight"]) for tg in targets)
    requests = [f"http-request set-var({PICK_VAR}) rand({total}) if {when}"]
    uses = []
    sticky = action.get("stickiness") or {}
    if sticky.get("enabled"):
        requests.append(f"http-request set-var({GROUP_STICKY_VAR}) int({int(sticky['duration_seconds'])}) if {when}")
        for tg in targets:
            token = group_token(groups[tg["name"]]["arn"])
            for cookie in ("AWSALBTG", "AWSALBTGCORS"):
                uses.append(f"use_backend {backend_name(tg['name'])} if {when} {{ req.cook({cookie}) -m str {token} }}")
    low = 0
    for tg in targets:
        high = low + int(tg["weight"])
        uses.append(f"use_backend {backend_name(tg['name'])} if {when} "
                    f"{{ var({PICK_VAR}) -m int ge {low} }} {{ var({PICK_VAR}) -m int lt {high} }}")
        low = high
    return requests, uses


def group_stickiness_response_lines() -> list[str]:
    """The AWSALBTG cookies for a rule with group stickiness, naming the group that served."""
    cond = f"if {{ var({GROUP_STICKY_VAR}) -m found }} {{ var({GROUP_TOKEN_VAR}) -m found }}"
    value = f"%[var({GROUP_TOKEN_VAR})]; Max-Age=%[var({GROUP_STICKY_VAR})]; Path=/"
    return [f'http-response add-header Set-Cookie "AWSALBTG={value}" {cond}',
            f'http-response add-header Set-Cookie "AWSALBTGCORS={value}; SameSite=None; Secure" {cond}']


def action_lines(listener: dict, groups: dict) -> tuple[list[str], list[str]]:
    """Every rule's action: (http-request lines, use_backend lines), in rule order."""
    requests, uses = [], []
    for rule_id, rule in zip(rule_ids(listener["rules"]), listener["rules"]):
        action = rule["action"]
        kind = action["type"]
        if kind == "forward":
            req, use = forward_lines(rule_id, action, groups)
            requests += req
            uses += use
        elif kind == "redirect":
            requests += redirect_lines(rule_id, action, listener)
        elif kind == "fixed-response":
            requests.append(fixed_response_line(rule_id, action))
        else:
            raise ValueError(f"listener {listener['name']}: action type {kind!r} is not supported")
    return requests, uses
