"""Changing a running ALB node without a reload: HAProxy's runtime API.

The pure part decides what each server slot of a target group holds and in which state
(`Slots`, `slot_states`) and builds the runtime API commands that get it there; `Runtime`
is the small socket client that sends them (one command per connection, as HAProxy's
`stats socket` answers and closes).

States, as AWS routes (reference §4.4):
- a healthy target takes requests (`ready`); so does every target in `initial` or
  `unhealthy` while the group has no healthy target (fail open: AWS routes to all);
- otherwise an initial or unhealthy target takes none (`maint`);
- a deregistered (draining) target takes no new request, not even from a client its
  AWSALB cookie pins: `maint`, where HAProxy lets the requests in flight finish and sends
  the next ones elsewhere. HAProxy's own `drain` would keep serving cookie-pinned clients,
  which AWS moves. The draining ends when the slot has nothing in flight (`scur` 0) or
  when deregistration_delay.timeout_seconds runs out, and then the slot is emptied
  (`shutdown sessions server` first, as AWS cuts what is left with a 502).
"""
from __future__ import annotations

import csv
import io
import socket
from dataclasses import dataclass, field

from vpclab.engines.alb.config import slot_count
from vpclab.engines.alb.slow_start import FULL_WEIGHT
from vpclab import unixpath
from vpclab.engines.alb.rules import backend_name

READY, DRAIN, MAINT = "ready", "drain", "maint"


def slot_states(health: dict[str, str]) -> dict[str, str]:
    """target id -> AWS health state (`initial`, `healthy`, ...) => target id -> slot state."""
    serving = [t for t, s in health.items() if s in ("initial", "healthy", "unhealthy")]
    fail_open = not any(health[t] == "healthy" for t in serving)
    out = {}
    for target, state in health.items():
        if state == "healthy" or (fail_open and target in serving):
            out[target] = READY
        else:
            out[target] = MAINT
    return out


@dataclass
class Slots:
    """Which target each slot s1..sN of one backend holds (pure). A target keeps its slot
    while it is registered or draining; a freed slot is reused by the next registration."""

    group: str
    size: int
    held: dict[int, tuple[str, str, int]] = field(default_factory=dict)  # slot -> (target id, ip, port)

    @classmethod
    def for_targets(cls, group: str, targets: list[dict]) -> Slots:
        slots = cls(group, slot_count(len(targets)))
        for t in targets:
            slots.place(t["id"], t["ip"], int(t["port"]))
        return slots

    def slot_of(self, target_id: str) -> int | None:
        return next((i for i, (t, _ip, _port) in self.held.items() if t == target_id), None)

    def place(self, target_id: str, ip: str, port: int) -> int | None:
        """The target's slot, taking a free one if it has none; None when all are taken
        (the caller then grows the backend with a reload)."""
        slot = self.slot_of(target_id)
        if slot is not None:
            self.held[slot] = (target_id, ip, port)
            return slot
        free = next((i for i in range(1, self.size + 1) if i not in self.held), None)
        if free is not None:
            self.held[free] = (target_id, ip, port)
        return free

    def free(self, target_id: str) -> int | None:
        slot = self.slot_of(target_id)
        if slot is not None:
            del self.held[slot]
        return slot

    def render(self, states: dict[str, str], weights: dict[str, int] | None = None) -> list[dict | None]:
        """config.render's `slots` list: each slot's address and state, and with slow start
        (`weights`: target -> weight of those ramping) its weight, full unless it ramps."""
        out: list[dict | None] = [None] * self.size
        for i, (target, ip, port) in self.held.items():
            out[i - 1] = {"ip": ip, "port": port, "state": states.get(target, MAINT)}
            if weights is not None:
                out[i - 1]["weight"] = weights.get(target, FULL_WEIGHT)
        return out


def server(group: str, slot: int) -> str:
    return f"{backend_name(group)}/s{slot}"


def fill_commands(group: str, slot: int, ip: str, port: int) -> list[str]:
    """Point a slot at a target (it stays in its state until `state_command`)."""
    return [f"set server {server(group, slot)} addr {ip} port {int(port)}"]


def state_command(group: str, slot: int, state: str) -> str:
    if state not in (READY, DRAIN, MAINT):
        raise ValueError(f"server state {state!r}")
    return f"set server {server(group, slot)} state {state}"


def weight_command(group: str, slot: int, weight: int) -> str:
    return f"set server {server(group, slot)} weight {int(weight)}"


def empty_commands(group: str, slot: int) -> list[str]:
    """End what a slot still serves and leave it empty, in maintenance."""
    return [state_command(group, slot, MAINT), f"shutdown sessions server {server(group, slot)}"]


def in_flight(show_stat: str, group: str) -> dict[int, int]:
    """`show stat` CSV -> slot number -> current sessions (`scur`) of one backend's slots."""
    text = show_stat.lstrip("# ")
    out = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("pxname") == backend_name(group) and (row.get("svname") or "").startswith("s"):
            try:
                out[int(row["svname"][1:])] = int(row.get("scur") or 0)
            except ValueError:
                continue
    return out


class RuntimeApiError(Exception):
    """HAProxy refused a runtime API command."""


class Runtime:
    """One node's runtime API socket (I/O). `connect` opens a connected AF_UNIX socket
    (the daemon reaches long paths through unixpath)."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def command(self, line: str) -> str:
        with unixpath.usable(self.path) as reachable, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(reachable)
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        reply = b"".join(chunks).decode(errors="replace")
        if refused(reply):
            raise RuntimeApiError(f"{line}: {reply.strip()}")
        return reply

    def run(self, lines: list[str]) -> None:
        for line in lines:
            self.command(line)


def refused(reply: str) -> bool:
    """Whether a runtime API reply is HAProxy's refusal (a data reply, such as `show stat`'s
    CSV with its "# " header line, never is)."""
    first = reply.strip().splitlines()[0] if reply.strip() else ""
    if first.startswith("#"):
        return False
    lower = first.lower()
    return first.startswith(("Unknown command", "No such", "Require", "Permission denied")) or \
        any(word in lower for word in ("invalid", "expects", "can't", "cannot", "error"))
