"""AWS's published IP-sync function (reference §5.1), sans-IO.

Each run: union the A answers of the ALB's name (up to MAX_LOOKUP_PER_INVOCATION lookups,
stopping at an answer of fewer than 8 records, as 8 may be truncated), refuse to act on an
empty union, put LoadBalancerIPCount, register new IPs at once, and count every registered or
previously active IP that is now missing; one missing for INVOCATIONS_BEFORE_DEREGISTRATION
runs is deregistered. The state (active set, pending map IP -> missed runs) is what the
function keeps in S3; the shell keeps it in the lab's state store. A failed run changes
nothing, so the next one starts from the same state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

TRUNCATION_RECORDS = 8  # an answer this long may be truncated: ask again
DEFAULTS = {"MAX_LOOKUP_PER_INVOCATION": "50", "INVOCATIONS_BEFORE_DEREGISTRATION": "3",
            "CW_METRIC_FLAG_IP_COUNT": "True"}


@dataclass(frozen=True)
class Settings:
    max_lookup_per_invocation: int = 50
    invocations_before_deregistration: int = 3
    metric: bool = True

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> "Settings":
        """From the function's environment variables (their names and defaults are AWS's)."""
        merged = {**DEFAULTS, **env}
        return cls(int(merged["MAX_LOOKUP_PER_INVOCATION"]), int(merged["INVOCATIONS_BEFORE_DEREGISTRATION"]),
                   merged["CW_METRIC_FLAG_IP_COUNT"].lower() == "true")


@dataclass(frozen=True)
class State:
    """What persists between runs; `active` is None before the first successful run."""

    active: frozenset[str] | None = None
    pending: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"active": None if self.active is None else sorted(self.active), "pending": dict(self.pending)}

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "State":
        if not data:
            return cls()
        active = data.get("active")
        return cls(None if active is None else frozenset(active), dict(data.get("pending", {})))


class Lookups:
    """The union of repeated A answers; `add` says whether to ask again."""

    def __init__(self, settings: Settings) -> None:
        self.limit = max(1, settings.max_lookup_per_invocation)
        self.done = 0
        self.found: set[str] = set()

    def add(self, answer: Iterable[str]) -> bool:
        records = list(answer)
        self.done += 1
        self.found.update(records)
        return self.done < self.limit and len(records) >= TRUNCATION_RECORDS


@dataclass(frozen=True)
class Outcome:
    """One run's decision: what to register and deregister, the state to save, the metric, the log."""

    ok: bool
    register: tuple[str, ...] = ()
    deregister: tuple[str, ...] = ()
    state: State = State()
    ip_count: int | None = None  # LoadBalancerIPCount, when put
    found: tuple[str, ...] = ()
    log: tuple[str, ...] = ()


def failed(state: State, reason: str) -> Outcome:
    """A run that could not resolve (a DNS timeout, say): nothing changes, the state stays."""
    return Outcome(False, state=state, log=(f"run failed, nothing changed: {reason}",))


def decide(registered: Iterable[str], found: Iterable[str], state: State, settings: Settings) -> Outcome:
    """One run from the targets DescribeTargetHealth lists and the IPs the lookups found."""
    registered, new = set(registered), set(found)
    if not new:
        return Outcome(False, state=state,
                       log=("the lookups found no IP: refusing to act, nothing changed",))
    log = [f"found {len(new)} IP(s): {', '.join(sorted(new))}"]
    ip_count = len(new) if settings.metric else None
    if state.active is None:
        register = new - registered
        pending: dict[str, int] = {}
        log.append("first run: no saved state")
    else:
        register = (new - registered) | (new - state.active)
        pending = {ip: n for ip, n in state.pending.items() if ip not in new}
        for ip in sorted(set(state.pending) & new):
            log.append(f"{ip} is back: its missed-run count is cleared")
        for ip in sorted((state.active - new) | (registered - new)):
            pending[ip] = pending.get(ip, 0) + 1
            log.append(f"{ip} missing: {pending[ip]} of {settings.invocations_before_deregistration} runs")
    deregister = sorted(ip for ip, n in pending.items() if n >= settings.invocations_before_deregistration)
    for ip in deregister:
        del pending[ip]
        log.append(f"{ip} missing for {settings.invocations_before_deregistration} runs: deregistering")
    for ip in sorted(register):
        log.append(f"{ip} is new: registering")
    return Outcome(True, tuple(sorted(register)), tuple(deregister), State(frozenset(new), pending), ip_count,
                   tuple(sorted(new)), tuple(log))
