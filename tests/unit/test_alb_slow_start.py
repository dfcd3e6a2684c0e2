"""slow_start.duration_seconds as AWS documents it (engines.alb.slow_start, reference §4.2):
who enters slow start, when it leaves, and the linear ramp of its weight."""
from __future__ import annotations

from vpclab.engines.alb.slow_start import FULL_WEIGHT, MIN_WEIGHT, Ramps, SlowStart, ramp_weight

H, I, U, D = "healthy", "initial", "unhealthy", "draining"


def steady(*targets: str, duration: float = 30) -> SlowStart:
    """A group whose `targets` are healthy and out of slow start at t=0."""
    ramp = SlowStart(duration)
    ramp.update({t: H for t in targets}, 0)
    return ramp


def test_a_target_turning_healthy_beside_a_steady_one_ramps():
    ramp = steady("a")
    ramp.update({"a": H, "b": I}, 1)
    ramp.update({"a": H, "b": H}, 2)
    assert ramp.weights(2) == {"b": MIN_WEIGHT}
    assert ramp.weights(17) == {"b": FULL_WEIGHT // 2}


def test_first_target_of_an_empty_group_does_not_ramp():
    ramp = SlowStart(30)
    ramp.update({}, 0)
    ramp.update({"a": I}, 1)
    ramp.update({"a": H}, 2)
    assert ramp.weights(2) == {}


def test_targets_turning_healthy_together_in_an_empty_group_do_not_ramp():
    ramp = SlowStart(30)
    ramp.update({"a": I, "b": I}, 0)
    ramp.update({"a": H, "b": H}, 1)
    assert ramp.weights(1) == {}


def test_target_healthy_while_every_other_is_ramping_does_not_ramp():
    ramp = steady("a")
    ramp.update({"a": H, "b": H}, 1)  # b ramps beside a
    ramp.update({"a": D, "b": H}, 2)  # a leaves: b, ramping, is the only healthy target
    ramp.update({"a": H, "b": H}, 3)  # a is back, and no healthy target is out of slow start
    assert ramp.weights(4) == {"b": ramp_weight(3, 30)}


def test_ramp_ends_when_target_turns_unhealthy():
    ramp = steady("a")
    ramp.update({"a": H, "b": H}, 1)
    ramp.update({"a": H, "b": U}, 5)
    assert ramp.weights(5) == {}
    ramp.update({"a": H, "b": H}, 9)  # healthy again beside a steady target: a new ramp from the start
    assert ramp.weights(9) == {"b": MIN_WEIGHT}


def test_ramp_ends_when_its_duration_elapses():
    ramp = steady("a")
    ramp.update({"a": H, "b": H}, 1)
    ramp.update({"a": H, "b": H}, 31)
    assert ramp.weights(31) == {}


def test_enabling_slow_start_leaves_healthy_targets_at_full_share():
    ramps = Ramps()
    assert ramps.weights("web", 0, {"a": H, "b": I}, 0) is None  # off
    assert ramps.weights("web", 30, {"a": H, "b": H}, 1) == {}  # on: a and b already healthy
    assert ramps.weights("web", 30, {"a": H, "b": H, "c": H}, 2) == {"c": MIN_WEIGHT}
    assert ramps.ramping() == {"web"}


def test_duration_zero_ramps_nothing_and_ends_ramps_under_way():
    ramps = Ramps()
    ramps.weights("web", 30, {"a": H}, 0)
    assert ramps.weights("web", 30, {"a": H, "b": H}, 1) == {"b": MIN_WEIGHT}
    assert ramps.weights("web", 0, {"a": H, "b": H}, 2) is None and ramps.ramping() == set()
    assert ramps.weights("web", 0, {"a": H, "b": H, "c": H}, 3) is None


def test_weight_grows_linearly_from_the_minimum_to_full():
    assert [ramp_weight(t, 30) for t in (0, 3, 15, 29.9, 30, 60)] == [MIN_WEIGHT, 10, 50, 100, 100, 100]
