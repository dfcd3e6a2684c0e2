"""Target health checks, as Elastic Load Balancing runs them.

One health checker serves every load balancer in a lab (gateway, network and
application). The core is sans-IO and takes `now` from the caller:

- `HealthCheckConfig`: a target group's health check settings, with AWS's
  defaults and ranges per load balancer type (defined in
  `vpclab.model.health_check`, re-exported here).
- `TargetHealth`: one target's state machine (`initial`, `healthy`, `unhealthy`,
  `unused`, `draining`, `unavailable`) with AWS's reason codes, shown by
  `describe()` in the shape of DescribeTargetHealth's `TargetHealth`.
- `Scheduler`: when each target's next probe is due.
- `match_http_code`: the `Matcher` `HttpCode` syntax (also from the model).

The asyncio shell is thin: `probe()` sends one TCP/HTTP/HTTPS health check over
a connection opened by an injected `connect` (so the socket can live in a
network namespace), and `HealthChecker` runs probes on schedule for many target
groups and reports state changes. A target group with proxy_protocol_v2.enabled
has its checks start with the PROXY v2 LOCAL header, as an NLB's do (§3.5).

References: /work/shared/reference/aws-behaviour.md §2.3, §3.6, §3.7, §4.4, and
the ELBv2 API reference for `TargetHealth`.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import random
import ssl
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Awaitable, Callable, Hashable, Mapping

from vpclab.engines.io.proxy_protocol import local_header

# The configuration is pure and lives in the model (the lab loader validates it);
# re-exported here so `vpclab.engines.health.checker.HealthCheckConfig` keeps working.
from vpclab.model.health_check import (  # noqa: F401
    TRAFFIC_PORT,
    HealthCheckConfig,
    HealthCheckProtocol,
    LbType,
    lb_type_for_protocol,
    match_http_code,
    parse_matcher,
)

log = logging.getLogger(__name__)

USER_AGENT = "ELB-HealthChecker/2.0"


# --------------------------------------------------------------------------
# States and reason codes


class TargetHealthState(StrEnum):
    """AWS's `TargetHealth.State` values."""

    INITIAL = "initial"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNUSED = "unused"
    DRAINING = "draining"
    UNAVAILABLE = "unavailable"


class Reason(StrEnum):
    """AWS's `TargetHealth.Reason` codes."""

    REGISTRATION_IN_PROGRESS = "Elb.RegistrationInProgress"
    INITIAL_HEALTH_CHECKING = "Elb.InitialHealthChecking"
    RESPONSE_CODE_MISMATCH = "Target.ResponseCodeMismatch"
    TIMEOUT = "Target.Timeout"
    FAILED_HEALTH_CHECKS = "Target.FailedHealthChecks"
    NOT_REGISTERED = "Target.NotRegistered"
    NOT_IN_USE = "Target.NotInUse"
    DEREGISTRATION_IN_PROGRESS = "Target.DeregistrationInProgress"
    INVALID_STATE = "Target.InvalidState"
    IP_UNUSABLE = "Target.IpUnusable"
    HEALTH_CHECK_DISABLED = "Target.HealthCheckDisabled"
    INTERNAL_ERROR = "Elb.InternalError"


# The descriptions the ELB user guides list for each reason code.
DESCRIPTIONS: Mapping[Reason, str] = {
    Reason.REGISTRATION_IN_PROGRESS: "Target registration is in progress",
    Reason.INITIAL_HEALTH_CHECKING: "Initial health checks in progress",
    Reason.RESPONSE_CODE_MISMATCH: "Health checks failed",
    Reason.TIMEOUT: "Request timed out",
    Reason.FAILED_HEALTH_CHECKS: "Health checks failed",
    Reason.NOT_REGISTERED: "Target is not registered to the target group",
    Reason.NOT_IN_USE: "Target group is not configured to receive traffic from the load balancer",
    Reason.DEREGISTRATION_IN_PROGRESS: "Target deregistration is in progress",
    Reason.INVALID_STATE: "Target is in an invalid state",
    Reason.IP_UNUSABLE: "The IP address cannot be used as a target, as it is in use by a load balancer",
    Reason.HEALTH_CHECK_DISABLED: "Health checks are disabled",
    Reason.INTERNAL_ERROR: "Health checks failed due to an internal error",
}

FAILURE_REASONS = frozenset(
    {Reason.RESPONSE_CODE_MISMATCH, Reason.TIMEOUT, Reason.FAILED_HEALTH_CHECKS, Reason.INTERNAL_ERROR}
)
UNUSED_REASONS = frozenset({Reason.NOT_IN_USE, Reason.INVALID_STATE, Reason.IP_UNUSABLE})

# The API reference says Target.Timeout and Target.ResponseCodeMismatch "apply
# only to Application Load Balancers and Gateway Load Balancers"; newer
# editions drop that sentence (uncertain), so an NLB reports
# Target.FailedHealthChecks here and callers can override it.
DETAILED_FAILURE_REASONS: Mapping[str, bool] = {"gateway": True, "network": False, "application": True}


def response_code_mismatch_description(code: int) -> str:
    return f"Health checks failed with these codes: [{code}]"


# --------------------------------------------------------------------------
# Target state machine


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one health check. `reason` is a failure reason code."""

    ok: bool
    reason: Reason | None = None
    description: str | None = None  # overrides the reason's stock description


class TargetHealth:
    """One registered target's health, driven by probe results and `now`.

    Every mutating method returns True when `describe()` changed (state,
    reason or description), which is when DescribeTargetHealth would show
    something new.
    """

    def __init__(
        self,
        *,
        healthy_threshold: int,
        unhealthy_threshold: int,
        now: float,
        initial_pass_count: int | None = None,
        detailed_failure_reasons: bool = True,
        health_checks_enabled: bool = True,
    ) -> None:
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.initial_pass_count = healthy_threshold if initial_pass_count is None else initial_pass_count
        self.detailed_failure_reasons = detailed_failure_reasons
        self.health_checks_enabled = health_checks_enabled
        self.consecutive_successes = 0
        self.consecutive_failures = 0
        self.draining_ends_at: float | None = None
        self._state = TargetHealthState.UNUSED
        self._reason: Reason | None = Reason.NOT_REGISTERED
        self._description: str | None = DESCRIPTIONS[Reason.NOT_REGISTERED]
        self.since = now
        self.register(now)

    @classmethod
    def for_config(
        cls, config: HealthCheckConfig, now: float, *, detailed_failure_reasons: bool | None = None
    ) -> TargetHealth:
        if detailed_failure_reasons is None:
            detailed_failure_reasons = DETAILED_FAILURE_REASONS[config.lb_type]
        return cls(
            healthy_threshold=config.healthy_threshold,
            unhealthy_threshold=config.unhealthy_threshold,
            initial_pass_count=config.initial_pass_count,
            detailed_failure_reasons=detailed_failure_reasons,
            health_checks_enabled=config.enabled,
            now=now,
        )

    @property
    def state(self) -> TargetHealthState:
        return self._state

    @property
    def reason(self) -> Reason | None:
        return self._reason

    @property
    def description(self) -> str | None:
        return self._description

    @property
    def is_checked(self) -> bool:
        """Whether probes should run: only registered, in-use targets are checked."""
        return self._state in (TargetHealthState.INITIAL, TargetHealthState.HEALTHY, TargetHealthState.UNHEALTHY)

    def describe(self) -> dict[str, str]:
        """DescribeTargetHealth's `TargetHealth`: no Reason or Description when healthy."""
        out = {"State": str(self._state)}
        if self._reason is not None:
            out["Reason"] = str(self._reason)
        if self._description is not None:
            out["Description"] = self._description
        return out

    def _set(self, state: TargetHealthState, reason: Reason | None, now: float, description: str | None = None) -> bool:
        if reason is not None and description is None:
            description = DESCRIPTIONS[reason]
        old = (self._state, self._reason, self._description)
        self._state, self._reason, self._description = state, reason, description
        if state != old[0]:
            self.since = now
        return old != (state, reason, description)

    def register(self, now: float) -> bool:
        """RegisterTargets (again, for a draining or unused target): start over in `initial`."""
        self.consecutive_successes = self.consecutive_failures = 0
        self.draining_ends_at = None
        if not self.health_checks_enabled:
            return self._set(TargetHealthState.UNAVAILABLE, Reason.HEALTH_CHECK_DISABLED, now)
        return self._set(TargetHealthState.INITIAL, Reason.REGISTRATION_IN_PROGRESS, now)

    def on_probe_result(
        self, ok: bool, failure_reason: Reason | None, now: float, description: str | None = None
    ) -> bool:
        """Count one health check; `failure_reason` is ignored when `ok`."""
        if not self.is_checked:
            return False  # a probe that finished after deregistration counts for nothing
        if ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            if self._state is TargetHealthState.INITIAL:
                if self.consecutive_successes >= self.initial_pass_count:
                    return self._set(TargetHealthState.HEALTHY, None, now)
                return self._set(TargetHealthState.INITIAL, Reason.INITIAL_HEALTH_CHECKING, now)
            if self._state is TargetHealthState.UNHEALTHY and self.consecutive_successes >= self.healthy_threshold:
                return self._set(TargetHealthState.HEALTHY, None, now)
            return False

        reason, description = self._failure(failure_reason, description)
        self.consecutive_failures += 1
        self.consecutive_successes = 0
        if self._state is TargetHealthState.UNHEALTHY:
            return self._set(TargetHealthState.UNHEALTHY, reason, now, description)  # show the latest failure
        if self.consecutive_failures >= self.unhealthy_threshold:
            return self._set(TargetHealthState.UNHEALTHY, reason, now, description)
        if self._state is TargetHealthState.INITIAL:
            return self._set(TargetHealthState.INITIAL, Reason.INITIAL_HEALTH_CHECKING, now)
        return False

    def apply(self, result: ProbeResult, now: float) -> bool:
        return self.on_probe_result(result.ok, result.reason, now, result.description)

    def _failure(self, reason: Reason | None, description: str | None) -> tuple[Reason, str | None]:
        if reason is None:
            return Reason.FAILED_HEALTH_CHECKS, None
        reason = Reason(reason)
        if reason not in FAILURE_REASONS:
            raise ValueError(f"{reason} is not a health check failure reason")
        if not self.detailed_failure_reasons and reason in (Reason.TIMEOUT, Reason.RESPONSE_CODE_MISMATCH):
            return Reason.FAILED_HEALTH_CHECKS, None
        return reason, description

    def deregister(self, now: float, delay: float) -> bool:
        """DeregisterTargets: `draining` for `deregistration_delay.timeout_seconds`, then `unused`."""
        if self._state is TargetHealthState.UNUSED and self._reason is Reason.NOT_REGISTERED:
            return False
        if self._state is TargetHealthState.DRAINING:
            return False  # deregistering twice doesn't restart the delay
        self.draining_ends_at = now + max(0.0, delay)
        changed = self._set(TargetHealthState.DRAINING, Reason.DEREGISTRATION_IN_PROGRESS, now)
        return self.tick(now) or changed

    def end_draining(self, now: float) -> bool:
        """Finish draining early: an ALB does so once nothing is in flight (§4.4)."""
        if self._state is not TargetHealthState.DRAINING:
            return False
        return self._unregistered(now)

    def tick(self, now: float) -> bool:
        """Advance timers: a draining target whose delay has run out becomes `unused`."""
        if (
            self._state is TargetHealthState.DRAINING
            and self.draining_ends_at is not None
            and now >= self.draining_ends_at
        ):
            return self._unregistered(now)
        return False

    def _unregistered(self, now: float) -> bool:
        self.draining_ends_at = None
        self.consecutive_successes = self.consecutive_failures = 0
        return self._set(TargetHealthState.UNUSED, Reason.NOT_REGISTERED, now)

    def mark_unused(self, reason: Reason, now: float) -> bool:
        """Take a registered target out of checking: Target.NotInUse (group not behind a
        listener, or AZ not enabled), Target.InvalidState (instance stopped) or
        Target.IpUnusable. `register(now)` brings it back through `initial`."""
        reason = Reason(reason)
        if reason not in UNUSED_REASONS:
            raise ValueError(f"{reason} is not a reason for an unused registered target")
        if self._state is TargetHealthState.DRAINING or self._reason is Reason.NOT_REGISTERED:
            return False
        self.consecutive_successes = self.consecutive_failures = 0
        return self._set(TargetHealthState.UNUSED, reason, now)

    def reconfigure(self, config: HealthCheckConfig) -> None:
        """ModifyTargetGroup: new thresholds apply from the next probe; counts are kept."""
        self.healthy_threshold = config.healthy_threshold
        self.unhealthy_threshold = config.unhealthy_threshold
        self.initial_pass_count = config.initial_pass_count


# --------------------------------------------------------------------------
# Probe schedule


class Scheduler:
    """When each key's next probe is due.

    Probes are due every `interval` from the previous due time, not from when
    the previous probe ended: AWS says a target's response time doesn't move
    the next check. `jitter` (0 <= jitter < 1) spreads each interval by up to
    ±jitter and the first probe by up to jitter × interval; it is derived from
    (seed, key, probe number), so a run replays exactly.
    """

    def __init__(self, *, jitter: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.jitter = jitter
        self.seed = seed
        self._heap: list[tuple[float, int, Hashable]] = []
        self._entries: dict[Hashable, tuple[float, float, int, int]] = {}  # key -> (due, interval, seq, probe number)
        self._seq = 0

    def _unit(self, key: Hashable, number: int) -> float:
        # str seeds hash with SHA-512, so this doesn't depend on PYTHONHASHSEED.
        return random.Random(f"{self.seed}/{key!r}/{number}").random()

    def _push(self, key: Hashable, due: float, interval: float, number: int) -> None:
        self._seq += 1
        self._entries[key] = (due, interval, self._seq, number)
        heapq.heappush(self._heap, (due, self._seq, key))

    def add(self, key: Hashable, interval: float, now: float) -> float:
        """Schedule `key` every `interval` seconds; returns when its first probe is due."""
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        first = now + interval * self.jitter * self._unit(key, 0)
        self._push(key, first, interval, 0)
        return first

    def remove(self, key: Hashable) -> None:
        self._entries.pop(key, None)  # its heap entry goes stale and is skipped

    def set_interval(self, key: Hashable, interval: float) -> None:
        """Use a new interval from the next probe after the one already due."""
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        due, _, _, number = self._entries[key]
        self._push(key, due, interval, number)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def due_at(self, key: Hashable) -> float | None:
        entry = self._entries.get(key)
        return entry[0] if entry else None

    def _discard_stale(self) -> None:
        while self._heap:
            due, seq, key = self._heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry[2] == seq:
                return
            heapq.heappop(self._heap)

    def next_due_at(self) -> float | None:
        self._discard_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Hashable]:
        """Keys due at `now`, in due order; each is rescheduled one interval on."""
        out: list[Hashable] = []
        while True:
            self._discard_stale()
            if not self._heap or self._heap[0][0] > now:
                return out
            due, _, key = heapq.heappop(self._heap)
            _, interval, _, number = self._entries[key]
            number += 1
            step = interval * (1.0 + self.jitter * (2.0 * self._unit(key, number) - 1.0))
            following = due + step
            if following <= now:
                following = now + step  # we fell behind: skip missed probes rather than burst
            self._push(key, following, interval, number)
            out.append(key)


# --------------------------------------------------------------------------
# Probes (asyncio)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connect = Callable[[str, int], Awaitable[Streams]]


async def open_tcp_connection(host: str, port: int) -> Streams:
    """The default `connect`: a TCP connection from this network namespace."""
    return await asyncio.open_connection(host, port)


_tls_context: ssl.SSLContext | None = None


def _insecure_tls_context() -> ssl.SSLContext:
    # ELB doesn't validate target certificates (self-signed and expired are fine).
    global _tls_context
    if _tls_context is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _tls_context = context
    return _tls_context


def health_check_request(path: str, host_header: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        "Connection: close\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Accept-Encoding: gzip, compressed\r\n"
        "\r\n"
    ).encode("ascii")


def parse_status_line(line: bytes) -> int:
    """The status code of an HTTP/1.x status line; ValueError when malformed."""
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise ValueError(f"malformed status line {line[:80]!r}")
    return int(parts[1])


async def _http_check(config: HealthCheckConfig, streams: Streams, host_header: str) -> ProbeResult:
    reader, writer = streams
    if config.protocol == "HTTPS":
        await writer.start_tls(_insecure_tls_context())
    writer.write(health_check_request(config.path, host_header))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")  # the whole head must arrive; the body needn't
    code = parse_status_line(head.split(b"\r\n", 1)[0])
    if match_http_code(config.matcher, code):
        return ProbeResult(True)
    return ProbeResult(False, Reason.RESPONSE_CODE_MISMATCH, response_code_mismatch_description(code))


async def probe(
    config: HealthCheckConfig,
    target_ip: str,
    traffic_port: int,
    connect: Connect = open_tcp_connection,
    *,
    host_header: str | None = None,
    timeout: float | None = None,
    proxy_protocol_v2: bool = False,
) -> ProbeResult:
    """Send one health check on a fresh connection and close it.

    TCP passes when the connection opens; HTTP(S) sends a GET and needs a
    matching status, all within `timeout_seconds`. `host_header` defaults to
    `<target ip>:<port>`; an NLB sends its node IP and listener port (§3.6).
    `proxy_protocol_v2` sends the 100-byte PROXY v2 LOCAL header first (before
    any TLS handshake). `timeout` overrides `timeout_seconds` (tests use
    sub-second ones). Errors the target causes become failed results; anything
    else raises.
    """
    port = config.port_for(traffic_port)
    if host_header is None:
        host_header = f"[{target_ip}]:{port}" if ":" in target_ip else f"{target_ip}:{port}"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(config.timeout_seconds if timeout is None else timeout):
            streams = await connect(target_ip, port)
            writer = streams[1]
            if proxy_protocol_v2:
                writer.write(local_header())
                await writer.drain()
            if config.protocol == "TCP":
                return ProbeResult(True)
            return await _http_check(config, streams, host_header)
    except TimeoutError:
        return ProbeResult(False, Reason.TIMEOUT)
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        # Refused, reset, TLS failure, or a malformed response.
        log.debug("health check of %s:%s failed: %r", target_ip, port, exc)
        return ProbeResult(False, Reason.FAILED_HEALTH_CHECKS)
    finally:
        if writer is not None:
            _close(writer)


def _close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
    except Exception:  # a transport already torn down has nothing left to close
        log.debug("closing a health check connection failed", exc_info=True)


# --------------------------------------------------------------------------
# Runner (asyncio)

OnChange = Callable[[str, str, dict[str, str]], object]
_PROBE_GRACE_SECONDS = 1.0
# Called as probe(config, ip, port, connect, *, host_header=..., proxy_protocol_v2=...), like `probe`.
ProbeFunction = Callable[..., Awaitable[ProbeResult]]


@dataclass
class _TargetGroup:
    name: str
    config: HealthCheckConfig
    connect: Connect
    host_header: str | None
    detailed_failure_reasons: bool
    proxy_protocol_v2: bool = False
    targets: dict[str, _Target] = field(default_factory=dict)


@dataclass
class _Target:
    group: _TargetGroup
    id: str
    ip: str
    port: int
    health: TargetHealth
    generation: int = 0  # bumped on re-registration so a stale probe's result is dropped
    probing: bool = False


class HealthChecker:
    """Runs every target group's health checks and reports changes.

    `clock` must be the event loop's clock (time.monotonic by default) because
    `run()` sleeps on the loop until the next probe is due.

    `on_change(target_group, target_id, describe_dict)` is called synchronously
    whenever a target's `describe()` changes, including registration; it must
    not block. A target id must be unique within its target group (AWS keys on
    Id and Port: use e.g. "i-0abc:8080" for one instance on two ports).
    """

    def __init__(
        self,
        on_change: OnChange | None = None,
        *,
        connect: Connect = open_tcp_connection,
        clock: Callable[[], float] = time.monotonic,
        jitter: float = 0.0,
        seed: int = 0,
        max_concurrent_probes: int = 256,
        probe: ProbeFunction = probe,
    ) -> None:
        self._on_change = on_change
        self._connect = connect
        self._clock = clock
        self._probe = probe
        self._scheduler = Scheduler(jitter=jitter, seed=seed)
        self._groups: dict[str, _TargetGroup] = {}
        self._draining: dict[tuple[str, str], _Target] = {}
        self._semaphore = asyncio.Semaphore(max_concurrent_probes)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False

    def now(self) -> float:
        return self._clock()

    # -- target groups and targets (CreateTargetGroup, RegisterTargets, ...)

    def add_target_group(
        self,
        name: str,
        config: HealthCheckConfig,
        *,
        connect: Connect | None = None,
        host_header: str | None = None,
        detailed_failure_reasons: bool | None = None,
        proxy_protocol_v2: bool = False,
    ) -> None:
        """`connect` opens this group's probe connections (e.g. inside the load
        balancer's namespace); `host_header` overrides `<target ip>:<port>`;
        `proxy_protocol_v2` (the group's proxy_protocol_v2.enabled) starts each
        TCP, HTTP or HTTPS check with the PROXY v2 LOCAL header."""
        if name in self._groups:
            raise ValueError(f"target group {name!r} already exists")
        if detailed_failure_reasons is None:
            detailed_failure_reasons = DETAILED_FAILURE_REASONS[config.lb_type]
        self._groups[name] = _TargetGroup(
            name, config, connect or self._connect, host_header, detailed_failure_reasons, proxy_protocol_v2
        )

    def modify_target_group(
        self, name: str, config: HealthCheckConfig, *, proxy_protocol_v2: bool | None = None
    ) -> None:
        """ModifyTargetGroup: new settings from each target's next probe; states are kept.
        `proxy_protocol_v2` None keeps the group's setting."""
        group = self._group(name)
        if config.lb_type != group.config.lb_type or config.enabled != group.config.enabled:
            raise ValueError("ModifyTargetGroup cannot change the load balancer type or HealthCheckEnabled here")
        group.config = config
        if proxy_protocol_v2 is not None:
            group.proxy_protocol_v2 = proxy_protocol_v2
        for target in group.targets.values():
            target.health.reconfigure(config)
            key = (name, target.id)
            if key in self._scheduler:
                self._scheduler.set_interval(key, config.interval_seconds)
        self._wake.set()

    def remove_target_group(self, name: str) -> None:
        """DeleteTargetGroup: its targets go straight to `unused` (Target.NotRegistered)."""
        group = self._groups.pop(name)
        now = self.now()
        for target in list(group.targets.values()):
            self._forget(target)
            if target.health.deregister(now, 0):
                self._notify(target)

    def register(self, target_group: str, target_id: str, ip: str, port: int) -> None:
        """RegisterTargets: a new, draining or unused target starts in `initial`; a registered one is left alone."""
        group = self._group(target_group)
        now = self.now()
        target = group.targets.get(target_id)
        if target is not None and target.health.state not in (TargetHealthState.DRAINING, TargetHealthState.UNUSED):
            return
        if target is None:
            health = TargetHealth.for_config(
                group.config, now, detailed_failure_reasons=group.detailed_failure_reasons
            )
            target = _Target(group, target_id, ip, port, health)
            group.targets[target_id] = target
        else:
            self._draining.pop((target_group, target_id), None)
            target.ip, target.port = ip, port
            target.generation += 1
            target.health.register(now)
        if target.health.is_checked:
            self._scheduler.add((target_group, target_id), group.config.interval_seconds, now)
        self._notify(target)
        self._wake.set()

    def deregister(self, target_group: str, target_id: str, delay: float) -> None:
        """DeregisterTargets: `draining` for `delay` seconds (deregistration_delay.timeout_seconds)."""
        target = self._group(target_group).targets.get(target_id)
        if target is None:
            return
        self._scheduler.remove((target_group, target_id))
        if target.health.deregister(self.now(), delay):
            self._notify(target)
        self._settle(target)

    def end_draining(self, target_group: str, target_id: str) -> None:
        """Stop draining early (an ALB with nothing in flight, §4.4)."""
        target = self._group(target_group).targets.get(target_id)
        if target is not None and target.health.end_draining(self.now()):
            self._notify(target)
            self._settle(target)

    def mark_unused(self, target_group: str, target_id: str, reason: Reason) -> None:
        """Stop checking a registered target (Target.NotInUse, InvalidState, IpUnusable);
        `register` again resumes it."""
        target = self._group(target_group).targets.get(target_id)
        if target is not None and target.health.mark_unused(reason, self.now()):
            self._scheduler.remove((target_group, target_id))
            target.generation += 1
            self._notify(target)

    # -- DescribeTargetHealth

    def describe(self, target_group: str, target_id: str) -> dict[str, str]:
        group = self._groups.get(target_group)
        target = group.targets.get(target_id) if group else None
        if target is None:
            return {
                "State": str(TargetHealthState.UNUSED),
                "Reason": str(Reason.NOT_REGISTERED),
                "Description": DESCRIPTIONS[Reason.NOT_REGISTERED],
            }
        return target.health.describe()

    def describe_target_health(self, target_group: str) -> list[dict[str, object]]:
        """DescribeTargetHealth's `TargetHealthDescriptions` for one target group."""
        group = self._group(target_group)
        return [
            {
                "Target": {"Id": t.id, "Port": t.port},
                "HealthCheckPort": str(group.config.port_for(t.port)),
                "TargetHealth": t.health.describe(),
            }
            for t in group.targets.values()
        ]

    # -- running

    async def poll(self) -> None:
        """One pass: end finished drains, run every due probe to completion, apply results."""
        now = self.now()
        self._expire_draining(now)
        tasks = self._launch_due(now)
        if tasks:
            await asyncio.gather(*tasks)

    async def run(self) -> None:
        """Probe on schedule until `stop()` or cancellation."""
        self._stopping = False
        try:
            while not self._stopping:
                now = self.now()
                self._expire_draining(now)
                for task in self._launch_due(now):
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._sleep_for(now))
                except TimeoutError:
                    pass
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    # -- internals

    def _group(self, name: str) -> _TargetGroup:
        try:
            return self._groups[name]
        except KeyError:
            raise KeyError(f"no target group {name!r}") from None

    def _sleep_for(self, now: float) -> float:
        wakeups = [t.health.draining_ends_at for t in self._draining.values() if t.health.draining_ends_at is not None]
        next_probe = self._scheduler.next_due_at()
        if next_probe is not None:
            wakeups.append(next_probe)
        # With nothing scheduled, register() and friends wake the loop.
        return max(0.0, min(wakeups, default=now + 3600.0) - now)

    def _launch_due(self, now: float) -> list[asyncio.Task[None]]:
        tasks = []
        for group_name, target_id in self._scheduler.pop_due(now):
            group = self._groups.get(group_name)
            target = group.targets.get(target_id) if group else None
            if target is None or not target.health.is_checked:
                self._scheduler.remove((group_name, target_id))
                continue
            if target.probing:
                continue  # the previous probe is still within its timeout; don't pile up
            target.probing = True
            tasks.append(asyncio.create_task(self._probe_and_apply(target, target.generation)))
        return tasks

    async def _probe_and_apply(self, target: _Target, generation: int) -> None:
        config = target.group.config
        try:
            async with self._semaphore:
                # Guard against a probe (or injected connect) that ignores its timeout.
                async with asyncio.timeout(config.timeout_seconds + _PROBE_GRACE_SECONDS):
                    result = await self._probe(
                        config, target.ip, target.port, target.group.connect,
                        host_header=target.group.host_header, proxy_protocol_v2=target.group.proxy_protocol_v2,
                    )
        except asyncio.CancelledError:
            raise
        except Exception:
            # Our fault, not the target's: a failed check reported as Elb.InternalError.
            log.exception("health check of %s/%s raised", target.group.name, target.id)
            result = ProbeResult(False, Reason.INTERNAL_ERROR)
        finally:
            target.probing = False
        if generation != target.generation or target.group.targets.get(target.id) is not target:
            return
        try:
            changed = target.health.apply(result, self.now())
        except ValueError:
            log.exception("probe for %s/%s returned a bad result %r", target.group.name, target.id, result)
            changed = target.health.apply(ProbeResult(False, Reason.INTERNAL_ERROR), self.now())
        if changed:
            self._notify(target)

    def _expire_draining(self, now: float) -> None:
        for target in list(self._draining.values()):
            if target.health.tick(now):
                self._notify(target)
            self._settle(target)

    def _settle(self, target: _Target) -> None:
        """File a target by its state after a deregistration step."""
        key = (target.group.name, target.id)
        if target.health.state is TargetHealthState.DRAINING:
            self._draining[key] = target
            self._wake.set()
        elif target.health.state is TargetHealthState.UNUSED and target.health.reason is Reason.NOT_REGISTERED:
            self._forget(target)

    def _forget(self, target: _Target) -> None:
        key = (target.group.name, target.id)
        self._draining.pop(key, None)
        self._scheduler.remove(key)
        if target.group.targets.get(target.id) is target:
            del target.group.targets[target.id]

    def _notify(self, target: _Target) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(target.group.name, target.id, target.health.describe())
        except Exception:
            log.exception("on_change for %s/%s raised", target.group.name, target.id)
