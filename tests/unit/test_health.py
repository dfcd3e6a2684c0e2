"""Health checks as ELB runs them (aws-behaviour.md §2.3, §3.6, §3.7, §4.4).

The state machine and scheduler tests use a fake `now`; the probe tests talk to
real servers on 127.0.0.1 with sub-second timeouts.
"""
from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from vpclab.engines.health.checker import HealthChecker
from vpclab.engines.health.probe import probe
from vpclab.engines.health.scheduler import Scheduler
from vpclab.engines.health.state import (
    HealthCheckConfig,
    ProbeResult,
    Reason,
    TargetHealth,
    TargetHealthState,
    match_http_code,
)
from vpclab.engines.io.proxy_protocol import local_header

State = TargetHealthState


def config(lb_type="network", target_protocol=None, **overrides) -> HealthCheckConfig:
    target_protocol = target_protocol or {"gateway": "GENEVE", "network": "TCP", "application": "HTTP"}[lb_type]
    return HealthCheckConfig.for_target_group(lb_type, target_protocol, **overrides)


# --------------------------------------------------------------------------
# Defaults and ranges


def test_gwlb_defaults_match_aws():
    c = config("gateway")
    assert (c.protocol, c.port, c.interval_seconds, c.timeout_seconds) == ("TCP", 80, 10, 5)
    assert (c.healthy_threshold, c.unhealthy_threshold, c.matcher, c.path) == (5, 2, "200-399", "/")
    assert c.initial_pass_count == 5


def test_nlb_defaults_match_aws():
    c = config("network")
    assert (c.protocol, c.port, c.interval_seconds, c.timeout_seconds) == ("TCP", "traffic-port", 30, 10)
    assert (c.healthy_threshold, c.unhealthy_threshold, c.matcher) == (5, 2, "200-399")


@pytest.mark.parametrize(("protocol", "timeout"), [("TCP", 10), ("HTTP", 6), ("HTTPS", 10)])
def test_nlb_default_timeout_depends_on_health_check_protocol(protocol, timeout):
    assert config("network", HealthCheckProtocol=protocol).timeout_seconds == timeout


def test_alb_defaults_match_aws():
    c = config("application")
    assert (c.protocol, c.port, c.path, c.interval_seconds, c.timeout_seconds) == ("HTTP", "traffic-port", "/", 30, 5)
    assert (c.healthy_threshold, c.unhealthy_threshold, c.matcher) == (5, 2, "200")


def test_overrides_use_cloudformation_property_names():
    c = config(
        "network",
        HealthCheckProtocol="HTTP",
        HealthCheckPort="8080",
        HealthCheckPath="/healthz",
        HealthCheckIntervalSeconds=10,
        HealthCheckTimeoutSeconds=3,
        HealthyThresholdCount=3,
        UnhealthyThresholdCount=4,
        Matcher={"HttpCode": "200,202"},
    )
    assert (c.protocol, c.port, c.path, c.matcher) == ("HTTP", 8080, "/healthz", "200,202")
    assert (c.interval_seconds, c.timeout_seconds, c.healthy_threshold, c.unhealthy_threshold) == (10, 3, 3, 4)


def test_interval_below_five_seconds_is_rejected():
    with pytest.raises(ValueError, match="HealthCheckIntervalSeconds must be 5-300, got 3"):
        config("network", HealthCheckIntervalSeconds=3)


def test_interval_above_300_seconds_is_rejected():
    with pytest.raises(ValueError, match="HealthCheckIntervalSeconds must be 5-300, got 301"):
        config("application", HealthCheckIntervalSeconds=301)


@pytest.mark.parametrize("timeout", [1, 121])
def test_timeout_outside_2_to_120_seconds_is_rejected(timeout):
    with pytest.raises(ValueError, match=f"HealthCheckTimeoutSeconds must be 2-120, got {timeout}"):
        config("network", HealthCheckTimeoutSeconds=timeout)


@pytest.mark.parametrize("key", ["HealthyThresholdCount", "UnhealthyThresholdCount"])
@pytest.mark.parametrize("count", [1, 11])
def test_thresholds_outside_2_to_10_are_rejected(key, count):
    with pytest.raises(ValueError, match=f"{key} must be 2-10, got {count}"):
        config("gateway", **{key: count})


def test_gwlb_interval_shorter_than_timeout_is_rejected():
    with pytest.raises(ValueError, match="HealthCheckIntervalSeconds must be >= HealthCheckTimeoutSeconds"):
        config("gateway", HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=6)
    assert config("gateway", HealthCheckIntervalSeconds=6, HealthCheckTimeoutSeconds=6).interval_seconds == 6


@pytest.mark.parametrize(
    ("lb_type", "code", "allowed"),
    [
        ("gateway", "399", True),
        ("gateway", "404", False),
        ("network", "200-599", True),
        ("network", "600", False),
        ("application", "200-499", True),
        ("application", "500", False),
        ("application", "199", False),
    ],
)
def test_matcher_range_depends_on_load_balancer_type(lb_type, code, allowed):
    if allowed:
        assert config(lb_type, HealthCheckProtocol="HTTP", Matcher={"HttpCode": code}).matcher == code
    else:
        with pytest.raises(ValueError, match="Matcher HttpCode must be within"):
            config(lb_type, HealthCheckProtocol="HTTP", Matcher={"HttpCode": code})


def test_alb_rejects_tcp_health_checks():
    with pytest.raises(ValueError, match="HealthCheckProtocol must be one of HTTP, HTTPS"):
        config("application", HealthCheckProtocol="TCP")


@pytest.mark.parametrize("port", [0, 65536, "abc"])
def test_health_check_port_outside_1_to_65535_is_rejected(port):
    with pytest.raises(ValueError, match="HealthCheckPort must be 1-65535"):
        config("network", HealthCheckPort=port)


def test_gwlb_health_check_port_cannot_be_traffic_port():
    with pytest.raises(ValueError, match="HealthCheckPort"):
        config("gateway", HealthCheckPort="traffic-port")


@pytest.mark.parametrize(("key", "value"), [("HealthCheckPath", "/x"), ("Matcher", {"HttpCode": "200"})])
def test_tcp_health_checks_take_no_path_or_matcher(key, value):
    with pytest.raises(ValueError, match=f"{key} is not supported for health checks with the TCP protocol"):
        config("network", **{key: value})


def test_health_check_path_must_start_with_slash():
    with pytest.raises(ValueError, match="HealthCheckPath must start with '/'"):
        config("application", HealthCheckPath="healthz")


def test_malformed_matcher_is_rejected():
    with pytest.raises(ValueError, match="Matcher HttpCode"):
        config("application", Matcher={"HttpCode": "2xx"})
    with pytest.raises(ValueError, match="Matcher must be"):
        config("application", Matcher="200")


def test_unknown_override_is_rejected():
    with pytest.raises(ValueError, match="unknown health check properties \\['HealthCheckIntervalSecs'\\]"):
        config("network", HealthCheckIntervalSecs=10)


@pytest.mark.parametrize(("lb_type", "protocol"), [("gateway", "TCP"), ("network", "HTTP"), ("application", "TCP")])
def test_target_group_protocol_must_fit_load_balancer_type(lb_type, protocol):
    with pytest.raises(ValueError, match="Protocol must be one of"):
        config(lb_type, protocol)


def test_nlb_checks_an_alb_target_over_http():
    c = config("network", TargetType="alb")
    assert (c.protocol, c.timeout_seconds) == ("HTTP", 6)
    with pytest.raises(ValueError, match="HealthCheckProtocol must be HTTP or HTTPS for a target group of type alb"):
        config("network", TargetType="alb", HealthCheckProtocol="TCP")


def test_health_checks_can_be_disabled_only_for_lambda_target_groups():
    assert config("application", TargetType="lambda").enabled is False
    with pytest.raises(ValueError, match="HealthCheckEnabled can be false only for a target group of type lambda"):
        config("application", HealthCheckEnabled=False)
    with pytest.raises(ValueError, match="TargetType must be one of"):
        config("network", TargetType="lambda")


# --------------------------------------------------------------------------
# Matcher


@pytest.mark.parametrize(
    ("matcher", "code", "matches"),
    [
        ("200", 200, True),
        ("200", 201, False),
        ("200-399", 200, True),
        ("200-399", 399, True),
        ("200-399", 400, False),
        ("200,202,301", 202, True),
        ("200,202,301", 201, False),
        ("200,300-302", 301, True),
    ],
)
def test_match_http_code(matcher, code, matches):
    assert match_http_code(matcher, code) is matches


# --------------------------------------------------------------------------
# Target state machine


def target(lb_type="network", now=0.0, **overrides) -> TargetHealth:
    return TargetHealth.for_config(config(lb_type, **overrides), now)


def test_registered_target_is_initial_with_registration_in_progress():
    t = target()
    assert t.describe() == {
        "State": "initial",
        "Reason": "Elb.RegistrationInProgress",
        "Description": "Target registration is in progress",
    }


def test_first_health_check_moves_reason_to_initial_health_checking():
    t = target()
    assert t.on_probe_result(True, None, 1.0) is True
    assert (t.state, t.reason) == (State.INITIAL, Reason.INITIAL_HEALTH_CHECKING)
    assert t.description == "Initial health checks in progress"


def test_target_turns_healthy_after_healthy_threshold_consecutive_successes():
    t = target(HealthyThresholdCount=3)
    assert [t.on_probe_result(True, None, n) for n in (1, 2, 3)] == [True, False, True]
    assert t.describe() == {"State": "healthy"}


def test_a_failure_restarts_the_count_of_consecutive_successes():
    t = target(HealthyThresholdCount=3)
    for ok in (True, True, False, True, True):
        t.on_probe_result(ok, None if ok else Reason.TIMEOUT, 0)
    assert t.state is State.INITIAL
    t.on_probe_result(True, None, 0)
    assert t.state is State.HEALTHY


def test_alb_new_target_needs_only_one_passing_health_check():
    t = target("application")
    assert t.on_probe_result(True, None, 1) is True
    assert t.state is State.HEALTHY


def test_alb_unhealthy_target_needs_healthy_threshold_passes_to_recover():
    t = target("application", HealthyThresholdCount=3)
    t.on_probe_result(False, Reason.TIMEOUT, 1)
    t.on_probe_result(False, Reason.TIMEOUT, 2)
    assert t.state is State.UNHEALTHY
    t.on_probe_result(True, None, 3)
    t.on_probe_result(True, None, 4)
    assert t.state is State.UNHEALTHY
    t.on_probe_result(True, None, 5)
    assert t.state is State.HEALTHY


def test_initial_pass_count_is_a_parameter():
    t = TargetHealth(healthy_threshold=5, unhealthy_threshold=2, initial_pass_count=2, now=0)
    t.on_probe_result(True, None, 1)
    t.on_probe_result(True, None, 2)
    assert t.state is State.HEALTHY


def healthy_target(lb_type="gateway", **overrides) -> TargetHealth:
    t = target(lb_type, **overrides)
    for n in range(t.initial_pass_count):
        t.on_probe_result(True, None, n)
    assert t.state is State.HEALTHY
    return t


def test_target_turns_unhealthy_after_unhealthy_threshold_consecutive_failures():
    t = healthy_target(UnhealthyThresholdCount=3)
    assert t.on_probe_result(False, Reason.FAILED_HEALTH_CHECKS, 10) is False
    assert t.on_probe_result(False, Reason.FAILED_HEALTH_CHECKS, 20) is False
    assert t.state is State.HEALTHY
    assert t.on_probe_result(False, Reason.FAILED_HEALTH_CHECKS, 30) is True
    assert t.describe() == {
        "State": "unhealthy",
        "Reason": "Target.FailedHealthChecks",
        "Description": "Health checks failed",
    }
    assert t.since == 30


def test_a_success_restarts_the_count_of_consecutive_failures():
    t = healthy_target()
    t.on_probe_result(False, Reason.TIMEOUT, 1)
    t.on_probe_result(True, None, 2)
    t.on_probe_result(False, Reason.TIMEOUT, 3)
    assert t.state is State.HEALTHY


def test_new_target_that_fails_health_checks_turns_unhealthy():
    t = target("gateway")
    t.on_probe_result(False, Reason.TIMEOUT, 1)
    assert (t.state, t.reason) == (State.INITIAL, Reason.INITIAL_HEALTH_CHECKING)
    t.on_probe_result(False, Reason.TIMEOUT, 2)
    assert t.describe() == {"State": "unhealthy", "Reason": "Target.Timeout", "Description": "Request timed out"}


def test_unhealthy_reason_follows_the_last_failure():
    t = healthy_target("application")
    t.on_probe_result(False, Reason.TIMEOUT, 1)
    t.on_probe_result(False, Reason.TIMEOUT, 2)
    assert t.reason is Reason.TIMEOUT
    changed = t.on_probe_result(
        False, Reason.RESPONSE_CODE_MISMATCH, 3, "Health checks failed with these codes: [500]"
    )
    assert changed is True
    assert t.describe() == {
        "State": "unhealthy",
        "Reason": "Target.ResponseCodeMismatch",
        "Description": "Health checks failed with these codes: [500]",
    }
    assert t.since == 2  # the state itself didn't change


def test_nlb_reports_timeouts_and_code_mismatches_as_failed_health_checks():
    t = healthy_target("network")
    t.apply(ProbeResult(False, Reason.TIMEOUT), 1)
    t.apply(ProbeResult(False, Reason.RESPONSE_CODE_MISMATCH, "Health checks failed with these codes: [500]"), 2)
    assert t.describe() == {
        "State": "unhealthy",
        "Reason": "Target.FailedHealthChecks",
        "Description": "Health checks failed",
    }


def test_a_failed_probe_without_a_reason_is_failed_health_checks():
    t = healthy_target()
    t.on_probe_result(False, None, 1)
    t.on_probe_result(False, None, 2)
    assert t.reason is Reason.FAILED_HEALTH_CHECKS


def test_only_failure_reasons_describe_a_failed_probe():
    with pytest.raises(ValueError, match="not a health check failure reason"):
        target().on_probe_result(False, Reason.NOT_IN_USE, 1)


def test_draining_target_becomes_unused_after_deregistration_delay():
    t = healthy_target()
    assert t.deregister(100, 300) is True
    assert t.describe() == {
        "State": "draining",
        "Reason": "Target.DeregistrationInProgress",
        "Description": "Target deregistration is in progress",
    }
    assert t.tick(399.9) is False
    assert t.state is State.DRAINING
    assert t.tick(400) is True
    assert t.describe() == {
        "State": "unused",
        "Reason": "Target.NotRegistered",
        "Description": "Target is not registered to the target group",
    }


def test_zero_deregistration_delay_makes_target_unused_at_once():
    t = healthy_target()
    assert t.deregister(5, 0) is True
    assert (t.state, t.reason) == (State.UNUSED, Reason.NOT_REGISTERED)


def test_deregistering_twice_does_not_restart_the_delay():
    t = healthy_target()
    t.deregister(0, 300)
    assert t.deregister(200, 300) is False
    assert t.tick(300) is True


def test_draining_target_ignores_health_check_results():
    t = healthy_target()
    t.deregister(0, 300)
    assert t.on_probe_result(False, Reason.TIMEOUT, 1) is False
    assert t.on_probe_result(False, Reason.TIMEOUT, 2) is False
    assert t.state is State.DRAINING


def test_draining_can_end_early():
    t = healthy_target("application")
    t.deregister(0, 300)
    assert t.end_draining(1) is True
    assert (t.state, t.reason) == (State.UNUSED, Reason.NOT_REGISTERED)


def test_registering_a_draining_target_again_starts_over_in_initial():
    t = healthy_target()
    t.deregister(0, 300)
    assert t.register(10) is True
    assert (t.state, t.reason, t.draining_ends_at) == (State.INITIAL, Reason.REGISTRATION_IN_PROGRESS, None)


def test_target_in_a_group_without_a_listener_is_unused_until_registered_again():
    t = healthy_target()
    assert t.mark_unused(Reason.NOT_IN_USE, 1) is True
    assert t.describe()["Reason"] == "Target.NotInUse"
    assert t.on_probe_result(True, None, 2) is False
    assert t.register(3) is True
    assert t.state is State.INITIAL


def test_target_with_health_checks_disabled_is_unavailable():
    t = target("application", TargetType="lambda")
    assert t.describe() == {
        "State": "unavailable",
        "Reason": "Target.HealthCheckDisabled",
        "Description": "Health checks are disabled",
    }
    assert t.on_probe_result(True, None, 1) is False


# --------------------------------------------------------------------------
# Scheduler


def test_probes_are_due_every_interval_from_the_previous_due_time():
    s = Scheduler()
    assert s.add("a", 10, now=0) == 0
    assert s.pop_due(0) == ["a"]
    assert s.pop_due(9.9) == []
    assert s.pop_due(10.5) == ["a"]  # popped late: the next stays on the 10 s grid
    assert s.due_at("a") == 20


def test_a_scheduler_that_fell_behind_skips_missed_probes():
    s = Scheduler()
    s.add("a", 10, now=0)
    s.pop_due(0)
    assert s.pop_due(35) == ["a"]
    assert s.due_at("a") == 45


def test_due_keys_come_in_due_order_and_removed_keys_never():
    s = Scheduler()
    s.add("slow", 30, now=0)
    s.add("fast", 5, now=1)
    s.add("gone", 5, now=0)
    s.remove("gone")
    assert s.pop_due(1) == ["slow", "fast"]
    assert s.next_due_at() == 6
    assert "gone" not in s


def test_interval_change_applies_after_the_probe_already_due():
    s = Scheduler()
    s.add("a", 30, now=0)
    s.pop_due(0)
    s.set_interval("a", 5)
    assert s.pop_due(30) == ["a"]
    assert s.due_at("a") == 35


def test_jitter_is_bounded_and_deterministic_for_a_seed():
    def plan(seed):
        s = Scheduler(jitter=0.2, seed=seed)
        s.add(("tg", "i-1"), 10, now=0)
        times = []
        now = 0.0
        for _ in range(20):
            now = s.next_due_at()
            times.append(now)
            s.pop_due(now)
        return times

    times = plan(7)
    assert times == plan(7)
    assert times != plan(8)
    assert 0 <= times[0] < 2
    assert all(8 <= b - a <= 12 for a, b in zip(times, times[1:]))


# --------------------------------------------------------------------------
# HealthChecker (fake probes, fake clock)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedProbe:
    """Answers each target's probes from a script; raises when told to."""

    def __init__(self) -> None:
        self.results: dict[str, list[object]] = {}
        self.calls: list[tuple[str, int, str | None]] = []
        self.proxy_protocol_v2: list[bool] = []

    async def __call__(self, config, ip, port, connect, *, host_header=None, proxy_protocol_v2=False):
        self.calls.append((ip, port, host_header))
        self.proxy_protocol_v2.append(proxy_protocol_v2)
        result = self.results[ip].pop(0) if self.results.get(ip) else ProbeResult(True)
        if isinstance(result, Exception):
            raise result
        return result


def make_checker(**kwargs):
    clock, scripted, changes = FakeClock(), ScriptedProbe(), []
    checker = HealthChecker(
        lambda tg, tid, d: changes.append((tg, tid, d["State"], d.get("Reason"))),
        clock=clock,
        probe=scripted,
        **kwargs,
    )
    return checker, clock, scripted, changes


async def poll_at(checker, clock, *times):
    for t in times:
        clock.now = t
        await checker.poll()


def test_checker_reports_each_state_change():
    async def main():
        checker, clock, scripted, changes = make_checker()
        checker.add_target_group("tg-app", config("application", HealthCheckIntervalSeconds=10))
        checker.register("tg-app", "i-1", "10.0.1.10", 80)
        timeout = ProbeResult(False, Reason.TIMEOUT)
        scripted.results["10.0.1.10"] = [ProbeResult(True), timeout, timeout]
        await poll_at(checker, clock, 0, 10, 20)
        return checker, changes, scripted

    checker, changes, scripted = asyncio.run(main())
    assert changes == [
        ("tg-app", "i-1", "initial", "Elb.RegistrationInProgress"),
        ("tg-app", "i-1", "healthy", None),
        ("tg-app", "i-1", "unhealthy", "Target.Timeout"),
    ]
    assert scripted.calls == [("10.0.1.10", 80, None)] * 3
    assert checker.describe("tg-app", "i-1")["State"] == "unhealthy"


def test_probes_run_only_when_due():
    async def main():
        checker, clock, scripted, _ = make_checker()
        checker.add_target_group("tg", config("gateway"))
        checker.register("tg", "i-1", "10.0.1.10", 6081)
        await poll_at(checker, clock, 0, 5, 9.9, 10)
        return scripted

    assert len(asyncio.run(main()).calls) == 2


def test_a_probe_that_raises_is_a_failed_health_check_and_checking_goes_on():
    async def main():
        checker, clock, scripted, changes = make_checker()
        checker.add_target_group("tg", config("gateway"))
        checker.register("tg", "i-1", "10.0.1.10", 6081)
        checker.register("tg", "i-2", "10.0.1.11", 6081)
        scripted.results["10.0.1.10"] = [RuntimeError("boom"), RuntimeError("boom")]
        await poll_at(checker, clock, 0, 10, 20)
        return checker

    checker = asyncio.run(main())
    assert checker.describe("tg", "i-1") == {
        "State": "unhealthy",
        "Reason": "Elb.InternalError",
        "Description": "Health checks failed due to an internal error",
    }
    assert checker.describe("tg", "i-2")["Reason"] == "Elb.InitialHealthChecking"


def test_a_failing_on_change_callback_does_not_stop_checking():
    async def main():
        clock = FakeClock()

        def on_change(tg, tid, d):
            raise RuntimeError("subscriber bug")

        checker = HealthChecker(on_change, clock=clock, probe=ScriptedProbe())
        checker.add_target_group("tg", config("application"))
        checker.register("tg", "i-1", "10.0.1.10", 80)
        await poll_at(checker, clock, 0)
        return checker

    assert asyncio.run(main()).describe("tg", "i-1") == {"State": "healthy"}


def test_deregistered_target_drains_then_is_removed_from_its_target_group():
    async def main():
        checker, clock, scripted, changes = make_checker()
        checker.add_target_group("tg", config("application"))
        checker.register("tg", "i-1", "10.0.1.10", 80)
        await poll_at(checker, clock, 0)
        clock.now = 5
        checker.deregister("tg", "i-1", delay=300)
        await poll_at(checker, clock, 30, 304.9)
        assert checker.describe("tg", "i-1")["State"] == "draining"
        await poll_at(checker, clock, 305)
        return checker, changes, scripted

    checker, changes, scripted = asyncio.run(main())
    assert [c[2] for c in changes] == ["initial", "healthy", "draining", "unused"]
    assert len(scripted.calls) == 1  # draining targets aren't checked
    assert checker.describe("tg", "i-1")["Reason"] == "Target.NotRegistered"
    assert checker.describe_target_health("tg") == []


def test_modified_target_group_applies_new_settings_and_keeps_states():
    async def main():
        checker, clock, scripted, _ = make_checker()
        checker.add_target_group("tg", config("gateway", HealthCheckIntervalSeconds=30))
        checker.register("tg", "i-1", "10.0.1.10", 6081)
        await poll_at(checker, clock, 0)
        checker.modify_target_group("tg", config("gateway", HealthCheckIntervalSeconds=10, HealthyThresholdCount=2))
        await poll_at(checker, clock, 30, 40)  # the probe already due at 30, then every 10 s
        return checker, scripted

    checker, scripted = asyncio.run(main())
    assert len(scripted.calls) == 3
    assert checker.describe("tg", "i-1") == {"State": "healthy"}


def test_proxy_protocol_v2_setting_reaches_each_probe_and_can_be_modified():
    async def main():
        checker, clock, scripted, _ = make_checker()
        checker.add_target_group("tg", config("network", HealthCheckIntervalSeconds=10), proxy_protocol_v2=True)
        checker.add_target_group("plain", config("network", HealthCheckIntervalSeconds=10))
        checker.register("tg", "i-1", "10.0.1.10", 80)
        await poll_at(checker, clock, 0)
        checker.modify_target_group("tg", config("network", HealthCheckIntervalSeconds=10))  # keeps it on
        await poll_at(checker, clock, 10)
        checker.modify_target_group("tg", config("network", HealthCheckIntervalSeconds=10), proxy_protocol_v2=False)
        await poll_at(checker, clock, 20)
        checker.register("plain", "i-2", "10.0.1.11", 80)
        await poll_at(checker, clock, 21)
        return scripted

    assert asyncio.run(main()).proxy_protocol_v2 == [True, True, False, False]


def test_deleting_a_target_group_leaves_its_targets_unused():
    async def main():
        checker, clock, _, changes = make_checker()
        checker.add_target_group("tg", config("application"))
        checker.register("tg", "i-1", "10.0.1.10", 80)
        checker.remove_target_group("tg")
        return checker, changes

    checker, changes = asyncio.run(main())
    assert changes[-1] == ("tg", "i-1", "unused", "Target.NotRegistered")
    assert checker.describe("tg", "i-1")["Reason"] == "Target.NotRegistered"


def test_target_not_in_use_is_not_checked_until_registered_again():
    async def main():
        checker, clock, scripted, changes = make_checker()
        checker.add_target_group("tg", config("application"))
        checker.register("tg", "i-1", "10.0.1.10", 80)
        checker.mark_unused("tg", "i-1", Reason.NOT_IN_USE)
        await poll_at(checker, clock, 0, 30)
        calls_while_unused = len(scripted.calls)
        checker.register("tg", "i-1", "10.0.1.10", 80)
        await poll_at(checker, clock, 31)
        return calls_while_unused, changes

    calls_while_unused, changes = asyncio.run(main())
    assert calls_while_unused == 0
    assert [c[2:] for c in changes] == [
        ("initial", "Elb.RegistrationInProgress"),
        ("unused", "Target.NotInUse"),
        ("initial", "Elb.RegistrationInProgress"),
        ("healthy", None),
    ]


def test_describe_target_health_has_aws_shape():
    async def main():
        checker, clock, _, _ = make_checker()
        checker.add_target_group("tg", config("network", HealthCheckPort="8080"))
        checker.register("tg", "10.0.1.10", "10.0.1.10", 443)
        return checker

    assert asyncio.run(main()).describe_target_health("tg") == [
        {
            "Target": {"Id": "10.0.1.10", "Port": 443},
            "HealthCheckPort": "8080",
            "TargetHealth": {
                "State": "initial",
                "Reason": "Elb.RegistrationInProgress",
                "Description": "Target registration is in progress",
            },
        }
    ]


def test_run_loop_probes_new_targets_and_stops():
    async def main():
        healthy = asyncio.Event()

        def on_change(tg, tid, d):
            if d["State"] == "healthy":
                healthy.set()

        checker = HealthChecker(on_change, probe=ScriptedProbe())
        runner = asyncio.create_task(checker.run())
        checker.add_target_group("tg", config("application"))
        checker.register("tg", "i-1", "10.0.1.10", 80)
        await asyncio.wait_for(healthy.wait(), 5)
        checker.stop()
        await asyncio.wait_for(runner, 5)

    asyncio.run(main())


# --------------------------------------------------------------------------
# Probes against real sockets on 127.0.0.1

SHORT = 0.5  # seconds; probes against a silent server wait this long


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(handler, ssl_context=None):
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1]


def test_tcp_health_check_passes_when_the_connection_opens():
    async def main():
        async def handler(reader, writer):
            writer.close()

        server, port = await serve(handler)
        async with server:
            return await probe(config("network"), "127.0.0.1", port, timeout=SHORT)

    assert asyncio.run(main()) == ProbeResult(True)


def test_tcp_health_check_to_a_closed_port_fails():
    result = asyncio.run(probe(config("network"), "127.0.0.1", closed_port(), timeout=SHORT))
    assert result == ProbeResult(False, Reason.FAILED_HEALTH_CHECKS)


def test_http_health_check_matches_status_and_sends_elb_headers():
    async def main():
        requests: list[bytes] = []
        statuses = iter([b"200 OK", b"500 Internal Server Error"])

        async def handler(reader, writer):
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 " + next(statuses) + b"\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()

        connects: list[tuple[str, int]] = []

        async def connect(host, port):
            connects.append((host, port))
            return await asyncio.open_connection(host, port)

        server, port = await serve(handler)
        c = config("network", HealthCheckProtocol="HTTP", HealthCheckPath="/healthz", HealthCheckPort=str(port))
        async with server:
            first = await probe(c, "127.0.0.1", 9999, connect, timeout=SHORT)
            second = await probe(c, "127.0.0.1", 9999, connect, timeout=SHORT)
        return first, second, requests, connects, port

    first, second, requests, connects, port = asyncio.run(main())
    assert first == ProbeResult(True)
    assert second == ProbeResult(False, Reason.RESPONSE_CODE_MISMATCH, "Health checks failed with these codes: [500]")
    assert connects == [("127.0.0.1", port)] * 2  # a fresh connection per check
    head = requests[0].decode().split("\r\n")
    assert head[0] == "GET /healthz HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in head
    assert "User-Agent: ELB-HealthChecker/2.0" in head


async def first_bytes_then(reader, n=100) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as partial:
        return partial.partial


def recording_handler():
    """A server handler that records each connection's bytes up to 101 or EOF, then closes."""
    received: list[bytes] = []

    async def handler(reader, writer):
        received.append(await first_bytes_then(reader, 101))  # a 100-byte header, then EOF
        writer.close()

    return received, handler


async def eventually(predicate, timeout: float = 1.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)


def test_tcp_health_check_with_proxy_protocol_v2_sends_the_local_header():
    async def main():
        received, handler = recording_handler()
        server, port = await serve(handler)
        async with server:
            result = await probe(config("network"), "127.0.0.1", port, timeout=SHORT, proxy_protocol_v2=True)
            await eventually(lambda: received)
        return result, received

    result, received = asyncio.run(main())
    assert result == ProbeResult(True)
    assert received == [local_header()]


def test_http_health_check_with_proxy_protocol_v2_sends_the_header_before_the_request():
    async def main():
        received: list[bytes] = []

        async def handler(reader, writer):
            received.append(await first_bytes_then(reader))
            received.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server, port = await serve(handler)
        c = config("network", HealthCheckProtocol="HTTP")
        async with server:
            result = await probe(c, "127.0.0.1", port, timeout=SHORT, proxy_protocol_v2=True)
        return result, received

    result, received = asyncio.run(main())
    assert result == ProbeResult(True)
    assert received[0] == local_header()
    assert received[1].startswith(b"GET / HTTP/1.1\r\n")


def test_checker_sends_the_local_header_for_a_proxy_protocol_target_group():
    async def main():
        received, handler = recording_handler()
        server, port = await serve(handler)
        clock = FakeClock()
        checker = HealthChecker(clock=clock)
        checker.add_target_group("tg", config("network", HealthCheckTimeoutSeconds=2), proxy_protocol_v2=True)
        checker.register("tg", "i-1", "127.0.0.1", port)
        async with server:
            await poll_at(checker, clock, 0)
            await eventually(lambda: received)
        return checker, received

    checker, received = asyncio.run(main())
    assert received == [local_header()]
    assert checker.describe("tg", "i-1")["Reason"] == "Elb.InitialHealthChecking"  # one pass so far


def test_http_health_check_uses_the_given_host_header():
    async def main():
        heads: list[bytes] = []

        async def handler(reader, writer):
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            writer.close()

        server, port = await serve(handler)
        c = config("network", HealthCheckProtocol="HTTP", Matcher={"HttpCode": "204"})
        async with server:
            result = await probe(c, "127.0.0.1", port, host_header="10.0.0.5:80", timeout=SHORT)
        return result, heads

    result, heads = asyncio.run(main())
    assert result.ok
    assert b"Host: 10.0.0.5:80\r\n" in heads[0]


def test_http_health_check_against_a_server_that_never_answers_times_out():
    async def main():
        async def handler(reader, writer):
            try:
                await reader.read()  # accept, then say nothing until the client leaves
            finally:
                writer.close()

        server, port = await serve(handler)
        async with server:
            return await probe(config("application"), "127.0.0.1", port, timeout=SHORT)

    assert asyncio.run(main()) == ProbeResult(False, Reason.TIMEOUT)


def test_http_health_check_with_a_malformed_response_fails():
    async def main():
        async def handler(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            writer.close()

        server, port = await serve(handler)
        async with server:
            return await probe(config("application"), "127.0.0.1", port, timeout=SHORT)

    assert asyncio.run(main()) == ProbeResult(False, Reason.FAILED_HEALTH_CHECKS)


@pytest.fixture(scope="module")
def self_signed_cert(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=target",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_health_check_does_not_verify_the_target_certificate(self_signed_cert):
    cert, key = self_signed_cert

    async def main():
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)

        async def handler(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server, port = await serve(handler, context)
        async with server:
            return await probe(config("application", HealthCheckProtocol="HTTPS"), "127.0.0.1", port, timeout=2)

    assert asyncio.run(main()) == ProbeResult(True)


def test_https_health_check_sends_the_proxy_header_before_the_tls_handshake(self_signed_cert):
    cert, key = self_signed_cert
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    headers: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(2)

    def serve_once():
        # Blocking sockets, so that reading the header leaves the ClientHello in the kernel for TLS.
        conn, _ = listener.accept()
        conn.settimeout(2)
        header = b""
        while len(header) < 100 and (chunk := conn.recv(100 - len(header))):
            header += chunk
        headers.append(header)
        with context.wrap_socket(conn, server_side=True) as tls:
            while b"\r\n\r\n" not in (request := tls.recv(4096)) and request:
                pass
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    server = threading.Thread(target=serve_once, daemon=True)
    server.start()
    c = config("network", HealthCheckProtocol="HTTPS")
    try:
        result = asyncio.run(probe(c, "127.0.0.1", listener.getsockname()[1], timeout=2, proxy_protocol_v2=True))
        server.join(3)
    finally:
        listener.close()
    assert result == ProbeResult(True)
    assert headers == [local_header()]


def test_https_health_check_against_a_plain_http_server_fails():
    async def main():
        async def handler(reader, writer):
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            writer.close()

        server, port = await serve(handler)
        async with server:
            return await probe(config("application", HealthCheckProtocol="HTTPS"), "127.0.0.1", port, timeout=SHORT)

    assert asyncio.run(main()) == ProbeResult(False, Reason.FAILED_HEALTH_CHECKS)
