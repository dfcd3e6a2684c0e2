"""haproxy.cfg for one ALB node, from the plan's node config (`alb_node_config`), sans-IO.

- Master-worker, with the runtime API on a UNIX socket (`level admin`, `expose-fd
  listeners`), so a reload hands the listening sockets over and keeps open connections.
- One frontend `fe_<listener>` per listener, bound on the node's private IP (the
  internet gateway maps the Elastic IP to it); HTTPS with the listener's certificate and,
  when routing.http2.enabled, ALPN h2 before http/1.1.
- Rules as `rules` compiles them (priority order, AWS's matching).
- One backend `tg_<group>` per target group, with server slots `s1`..`sN` (N = max(16, 2 x
  targets)): the servers a `server-template s 1-N` declares, written out one per line so
  that each slot keeps its target and state across a reload (the runtime API fills and
  empties them between reloads; HAProxy 2.6 refuses `cookie` on `add server`).
- Algorithms: `round_robin` is `balance roundrobin`; `least_outstanding_requests` is
  `balance leastconn`, since HAProxy counts a server's active streams (requests in
  flight), not idle pooled connections, which is AWS's "fewest outstanding requests".
- lb_cookie stickiness: the `AWSALB` cookie (HAProxy's dynamic cookie, a hash of a
  per-group key and the target's address, so a slot refilled with another target gets a
  new cookie and a client pinned to a deregistered target moves), its lifetime the
  group's duration (maxlife), sent on each response with Expires 7 days ahead as AWS does, plus
  `AWSALBCORS` (SameSite=None; Secure). app_cookie stickiness: when the application
  sets its cookie (which passes untouched), an opaque `AWSALBAPP-0` is issued, and a stick
  table maps it to the target's slot for the group's duration; requests route on it, not on
  the application's cookie. A token whose entry expired or whose target left gets a new target.
- slow_start.duration_seconds: `weight 100` on each slot (engines.alb.slow_start.FULL_WEIGHT), or
  the slot's own weight while its target ramps; the daemon steps ramps through the runtime API.
  Not HAProxy's `slowstart`, which ramps every server leaving maintenance, where AWS ramps only
  a target that turns healthy beside a healthy target out of slow start.
- Timeouts: idle_timeout.timeout_seconds on both sides; 10 s to connect to a target.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from vpclab.engines.alb import rules as R
from vpclab.engines.alb import slow_start as S

SLOT_MINIMUM = 16
CONNECT_TIMEOUT_SECONDS = 10
APP_COOKIE = "AWSALBAPP-0"  # one shard: the lab's value is far below AWS's 4 KB
COOKIE_EXPIRES_SECONDS = 7 * 86400  # AWS's cookie Expires is always 7 days ahead (§4.2)
ALPN_H2 = "h2,http/1.1"

# X's modules (engines.alb.headers) add lines through this hook: (listener, attributes) -> lines.
RequestLines = Callable[[dict, dict], list[str]]


def slot_count(targets: int) -> int:
    return max(SLOT_MINIMUM, 2 * targets)


def render(node: dict, *, runtime_socket: str, slots: Mapping[str, Sequence[dict | None]] | None = None,
           certificates: Mapping[str, str] | None = None, request_lines: RequestLines | None = None,
           refusal_lines: Sequence[str] = (), global_lines: Sequence[str] = (), defaults_lines: Sequence[str] = (),
           frontend_lines: Sequence[str] = (), backend_lines: Sequence[str] = (), threads: int | None = None) -> str:
    """The whole haproxy.cfg.

    `slots[group]`: what each slot s1..sN holds, as {"ip", "port", "state"} (ready, drain,
    maint) or None; by default the group's targets fill the first slots, ready.
    `certificates[listener name]`: the PEM (cert + key) path for an HTTPS listener.
    `request_lines`, `refusal_lines` (before any rule), `global_lines`, `defaults_lines`,
    `frontend_lines`, `backend_lines`: the header, logging and error-page lines of
    engines.alb.headers, access_log and errors. `threads`: HAProxy's nbthread (None: one per CPU,
    HAProxy's default; see `node_threads`)."""
    certificates = certificates or {}
    groups = node["target_groups"]
    slots = dict(slots or {})
    for name, group in groups.items():
        if name not in slots:
            slots[name] = initial_slots(group)
    attributes = node.get("attributes", {})
    out = global_section(runtime_socket, [*([f"nbthread {int(threads)}"] if threads else []), *global_lines])
    # targets see the node's DNS address: not the kernel's primary, which after `replace-nodes` is a
    # retired address that the next change removes under HAProxy's pooled target connections
    out += defaults_section(attributes, [f"source {node['node_ip']}", *defaults_lines])
    group_sticky = any(_group_sticky(r) for listener in node["listeners"] for r in listener["rules"])
    for listener in node["listeners"]:
        out += frontend_section(node, listener, groups, certificates.get(listener["name"]), request_lines,
                                [*frontend_lines, *refusal_lines])
    for name, group in groups.items():
        out += backend_section(name, group, slots[name], backend_lines, group_sticky)
    return "\n".join(out) + "\n"


def node_threads(cpus: int | None) -> int:
    """nbthread for one ALB node: half the CPUs. A lab runs two nodes or more per ALB beside its
    clients and targets on the same CPUs; on 2 CPUs one thread spent 7-15% less CPU per request
    than two (HAProxy's CPU time under wrk in bench/alb.py's lab), the CPUs being busy with the
    client and the target anyway."""
    return max(1, (cpus or 1) // 2)


def _group_sticky(rule: dict) -> bool:
    action = rule["action"]
    return action["type"] == "forward" and bool((action.get("stickiness") or {}).get("enabled"))


def initial_slots(group: dict) -> list[dict | None]:
    targets = group.get("targets", [])
    filled: list[dict | None] = [{"ip": t["ip"], "port": int(t["port"]), "state": "ready"} for t in targets]
    return filled + [None] * (slot_count(len(targets)) - len(filled))


def global_section(runtime_socket: str, extra: Sequence[str] = ()) -> list[str]:
    return ["global",
            "    master-worker",
            f"    stats socket {runtime_socket} mode 600 level admin expose-fd listeners",
            "    stats timeout 30s",
            # the old worker of a reload serves its open connections; AWS lets them run
            # out their idle timeout, the bound keeps a stuck one from living forever
            "    hard-stop-after 1h",
            *(f"    {line}" for line in extra),
            ""]


def idle_timeout(attributes: dict) -> int:
    return int(attributes.get("idle_timeout.timeout_seconds", 60))


def defaults_section(attributes: dict, extra: Sequence[str] = ()) -> list[str]:
    idle = idle_timeout(attributes)
    keep_alive = int(attributes.get("client_keep_alive.seconds", 3600))
    return ["defaults",
            "    mode http",
            f"    timeout connect {CONNECT_TIMEOUT_SECONDS}s",
            f"    timeout client {idle}s",
            f"    timeout server {idle}s",
            f"    timeout http-request {idle}s",
            f"    timeout http-keep-alive {min(idle, keep_alive)}s",
            "    retries 0",  # an ALB answers 502/504 rather than trying the connection again
            "    option http-keep-alive",
            *(f"    {line}" for line in extra),
            ""]


def bind_line(node: dict, listener: dict, certificate: str | None) -> str:
    port = int(listener["port"])  # on a replaced node's addresses too: it serves until retired
    line = "    bind " + ",".join(f"{ip}:{port}" for ip in (node["node_ip"], *node.get("scaled_ips", ()),
                                                              *node.get("retired_ips", ())))
    if listener["protocol"] == "HTTPS":
        if not certificate:
            raise ValueError(f"listener {listener['name']}: HTTPS needs a certificate")
        line += f" ssl crt {certificate}"
        if node.get("attributes", {}).get("routing.http2.enabled", "true") == "true":
            line += f" alpn {ALPN_H2}"
    return line


def frontend_section(node: dict, listener: dict, groups: dict, certificate: str | None,
                     request_lines: RequestLines | None, extra: Sequence[str] = ()) -> list[str]:
    rules = listener["rules"]
    requests, uses = R.action_lines(listener, groups)
    lines = [bind_line(node, listener, certificate), *extra]
    logged = node.get("attributes", {}).get("access_logs.s3.enabled", "false") == "true"
    lines += R.selection_lines(rules, logged)  # on the request as the client sent it
    if request_lines is not None:
        lines += request_lines(listener, node.get("attributes", {}))
    else:  # AWS's default, append: the client's address on X-Forwarded-For
        lines.append("option forwardfor")
    lines += requests
    if any(_group_sticky(r) for r in rules):
        lines += R.group_stickiness_response_lines()
    lines += uses
    return [f"frontend fe_{listener['name']}"] + [line if line.startswith("    ") else f"    {line}"
                                                   for line in lines] + [""]


def _sticky(group: dict) -> str | None:
    attributes = group.get("attributes", {})
    if attributes.get("stickiness.enabled", "false") != "true":
        return None
    return attributes.get("stickiness.type", "lb_cookie")


def backend_section(name: str, group: dict, slots: Sequence[dict | None], extra: Sequence[str] = (),
                    group_sticky: bool = True) -> list[str]:
    attributes = group.get("attributes", {})
    algorithm = attributes.get("load_balancing.algorithm.type", "round_robin")
    if algorithm not in ("round_robin", "least_outstanding_requests"):
        raise ValueError(f"target group {name}: load_balancing.algorithm.type {algorithm!r} is not supported")
    lines = [f"backend {R.backend_name(name)}",
             f"    balance {'roundrobin' if algorithm == 'round_robin' else 'leastconn'}"]
    if group_sticky:  # the AWSALBTG cookie of a rule with group stickiness, on this node (every line costs)
        lines.append(f"    http-request set-var({R.GROUP_TOKEN_VAR}) str({R.group_token(group['arn'])}) "
                     f"if {{ var({R.GROUP_STICKY_VAR}) -m found }}")
    lines += [f"    {line}" for line in extra]
    sticky = _sticky(group)
    server_options = ""
    if sticky == "lb_cookie":
        duration = int(attributes.get("stickiness.lb_cookie.duration_seconds", 86400))
        expires = f"Expires=%[date({COOKIE_EXPIRES_SECONDS}),http_date]"
        lines += [f"    cookie AWSALB insert nocache dynamic maxlife {duration}s attr Path=/",
                  f"    dynamic-cookie-key {R.group_token(group['arn'] + '/AWSALB')}",
                  # a cross-site request carries only AWSALBCORS: it pins as AWSALB would
                  '    http-request set-header Cookie "%[req.fhdr(cookie)]; AWSALB=%[req.cook(AWSALBCORS)]" '
                  "if !{ req.cook(AWSALB) -m found } { req.cook(AWSALBCORS) -m found }",
                  "    http-request set-var(txn.awsalb) req.cook(AWSALB) if { req.cook(AWSALB) -m found }",
                  # AWS's Expires: 7 days from each response, whatever the duration (which maxlife keeps)
                  f'    http-after-response replace-header Set-Cookie "^(AWSALB=[^;]*)(.*)" "\\1; {expires}\\2"',
                  # the cookie the client kept, refreshed on each response HAProxy did not issue one on
                  f'    http-after-response add-header Set-Cookie "AWSALB=%[var(txn.awsalb)]; {expires}; Path=/" '
                  "if { var(txn.awsalb) -m found } !{ res.cook(AWSALB) -m found }",
                  f'    http-after-response add-header Set-Cookie "AWSALBCORS=%[res.cook(AWSALB)]; {expires}; '
                  'Path=/; SameSite=None; Secure" if { res.cook(AWSALB) -m found }']
    elif sticky == "app_cookie":
        cookie = attributes.get("stickiness.app_cookie.cookie_name", "")
        if not cookie or any(not (c.isascii() and (c.isalnum() or c in "-_.")) for c in cookie):
            raise ValueError(f"target group {name}: app cookie name {cookie!r} is not a plain cookie name")
        duration = int(attributes.get("stickiness.app_cookie.duration_seconds", 86400))
        app_set = f"{{ res.cook({cookie}) -m found }}"
        lines += [f"    stick-table type string len 64 size 100k expire {duration}s",
                  # the token the client sent back, or a new one for this response to issue
                  f"    http-request set-var(txn.albapp) req.cook({APP_COOKIE}) if {{ req.cook({APP_COOKIE}) -m found }}",
                  f"    http-request set-var(txn.albapp) uuid if !{{ req.cook({APP_COOKIE}) -m found }}",
                  f"    stick match req.cook({APP_COOKIE})",
                  f"    stick store-response var(txn.albapp) if {app_set}",
                  # issued (or refreshed) when the application sets its cookie, which passes untouched
                  f'    http-response add-header Set-Cookie "{APP_COOKIE}=%[var(txn.albapp)]; '
                  f'Expires=%[date({COOKIE_EXPIRES_SECONDS}),http_date]; Path=/" if {app_set}']
    elif sticky is not None:
        raise ValueError(f"target group {name}: stickiness.type {sticky!r} is not supported by an ALB")
    if group.get("protocol") == "HTTPS":  # AWS does not verify target certificates
        server_options += " ssl verify none"
    for i, slot in enumerate(slots, start=1):
        lines.append(server_line(i, slot, server_options, group))
    return lines + [""]


def server_line(index: int, slot: dict | None, options: str, group: dict) -> str:
    """Slot s<index>: a target's address, `disabled` (maint) unless it takes traffic now.
    An empty slot holds the group's port on 0.0.0.0, in maintenance, until the runtime API fills it.
    With slow start, a weight: the slot's (its target ramping), else full."""
    weight = ""
    if S.duration_of(group):
        weight = f" weight {int((slot or {}).get('weight') or S.FULL_WEIGHT)}"
    if slot is None:
        return f"    server s{index} 0.0.0.0:{int(group['port'])} disabled{weight}{options}"
    state = slot.get("state", "ready")
    if state not in ("ready", "drain", "maint"):
        raise ValueError(f"slot state {state!r}")
    disabled = " disabled" if state != "ready" else ""
    return f"    server s{index} {slot['ip']}:{int(slot['port'])}{disabled}{weight}{options}"
