"""The health checker: runs every target group's health checks on schedule and reports changes (asyncio).

The sans-IO parts are `state` (a target's state machine and reason codes) and
`scheduler` (when each probe is due); `probe` sends one health check.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from vpclab.engines.health.probe import Connect, open_tcp_connection, probe
from vpclab.engines.health.scheduler import Scheduler
from vpclab.engines.health.state import (
    DESCRIPTIONS,
    DETAILED_FAILURE_REASONS,
    ProbeResult,
    Reason,
    TargetHealth,
    TargetHealthState,
)
from vpclab.model.health_check import HealthCheckConfig

log = logging.getLogger(__name__)


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

    def readdress(self, target_group: str, target_id: str, ip: str) -> None:
        """A registered target that moved (an alb target after `replace-nodes`): checks go to `ip`."""
        target = self._group(target_group).targets.get(target_id)
        if target is not None:
            target.ip = ip

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

    def has_target_group(self, name: str) -> bool:
        return name in self._groups

    def draining(self) -> list[tuple[str, str]]:
        """(target group, target id) of every target draining now."""
        return list(self._draining)

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
