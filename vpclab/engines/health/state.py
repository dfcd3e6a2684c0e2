"""A target's health state machine and AWS's reason codes (sans-IO)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Mapping

# The configuration is pure and lives in the model (the lab loader validates it);
# re-exported here so `vpclab.engines.health.state.HealthCheckConfig` keeps working.
from vpclab.model.health_check import (  # noqa: F401
    TRAFFIC_PORT,
    HealthCheckConfig,
    HealthCheckProtocol,
    LbType,
    lb_type_for_protocol,
    match_http_code,
    parse_matcher,
)

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
