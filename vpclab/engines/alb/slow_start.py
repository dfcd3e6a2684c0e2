"""slow_start.duration_seconds as AWS defines it (reference §4.2), sans-IO.

AWS's rules, which HAProxy's own `slowstart` (a ramp on every server leaving maintenance) does
not follow:
- a target enters slow start when it turns healthy AND the group has at least one healthy target
  that is not in slow start (so the first target of an empty group, or one that recovers while
  every other healthy target is ramping, takes its full share at once);
- targets already healthy when slow start is enabled do not enter it;
- a target leaves slow start when the duration elapses or when it stops being healthy;
- in slow start its share grows linearly up to its fair share (round robin only).

`SlowStart` keeps one target group's ramps; `Ramps` one per group. The daemon feeds them AWS
health states and turns `weights` into HAProxy server weights (`weight FULL_WEIGHT` on each
slot, `set server ... weight N` while a ramp runs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

FULL_WEIGHT = 100  # a slot's weight out of slow start (HAProxy accepts 0-256)
MIN_WEIGHT = 1  # a ramp's first step: 0 would take the target out of rotation


@dataclass
class SlowStart:
    """One target group's slow start. `duration` 0 is off (nothing ramps)."""

    duration: float
    healthy: set[str] | None = None  # healthy at the last update; None before the first
    ramping: dict[str, float] = field(default_factory=dict)  # target -> when its ramp began

    def update(self, states: dict[str, str], now: float) -> None:
        """`states`: target id -> AWS health state now (`healthy`, `initial`, ...)."""
        healthy = {t for t, s in states.items() if s == "healthy"}
        self.ramping = {t: began for t, began in self.ramping.items()
                        if t in healthy and now - began < self.duration}
        if self.healthy is not None and self.duration > 0:  # the first look (enabling) ramps nothing
            # newly healthy targets ramp beside a healthy target out of slow start
            if (self.healthy & healthy) - self.ramping.keys():
                self.ramping.update({target: now for target in healthy - self.healthy})
        self.healthy = healthy

    def weights(self, now: float) -> dict[str, int]:
        """Target id -> weight, for every target that ramps (the others are at FULL_WEIGHT)."""
        return {t: ramp_weight(now - began, self.duration) for t, began in self.ramping.items()}


def ramp_weight(elapsed: float, duration: float) -> int:
    """Linear from MIN_WEIGHT to FULL_WEIGHT over `duration` seconds."""
    if duration <= 0 or elapsed >= duration:
        return FULL_WEIGHT
    return max(MIN_WEIGHT, min(FULL_WEIGHT, math.ceil(FULL_WEIGHT * max(0.0, elapsed) / duration)))


@dataclass
class Ramps:
    """Every target group's SlowStart, created at a group's first update (so a group that comes
    with slow start on, or turns it on, starts with its healthy targets at full share)."""

    groups: dict[str, SlowStart] = field(default_factory=dict)

    def weights(self, group: str, duration: float, states: dict[str, str], now: float) -> dict[str, int] | None:
        """Update `group` with its states now, then its ramping targets' weights; None when the
        group has no slow start (forgotten, so turning it on again ramps no healthy target)."""
        if duration <= 0:
            self.groups.pop(group, None)
            return None
        ramp = self.groups.setdefault(group, SlowStart(duration))
        ramp.duration = duration
        ramp.update(states, now)
        return ramp.weights(now)

    def ramping(self) -> set[str]:
        """Groups with a ramp under way (the daemon steps their weights once a second)."""
        return {g for g, ramp in self.groups.items() if ramp.ramping}


def duration_of(group_config: dict) -> float:
    return float(group_config.get("attributes", {}).get("slow_start.duration_seconds", 0))
