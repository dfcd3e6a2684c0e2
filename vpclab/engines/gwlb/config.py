"""A GWLB node's settings (`GwlbConfig`), read from AWS attribute keys."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

FIVE_TUPLE = "5-tuple"
THREE_TUPLE = "source_ip_dest_ip_proto"
TWO_TUPLE = "source_ip_dest_ip"
STICKINESS_TYPES = (FIVE_TUPLE, THREE_TUPLE, TWO_TUPLE)
NO_REBALANCE = "no_rebalance"
REBALANCE = "rebalance"


@dataclass(frozen=True)
class GwlbConfig:
    """A node's settings. `from_attributes` reads them from AWS attribute keys."""

    availability_zone: str = ""
    tcp_idle_timeout: float = 350.0
    non_tcp_idle_timeout: float = 120.0  # fixed at AWS
    stickiness: str = FIVE_TUPLE
    on_deregistration: str = NO_REBALANCE
    on_unhealthy: str = NO_REBALANCE
    deregistration_delay: float = 300.0
    cross_zone: bool = False
    drop_stale_cookie: bool = True
    new_flow_on_non_syn: bool = True
    send_tcp_reset: bool = False
    max_packet: int = 8500
    hash_seed: int = 0

    def __post_init__(self) -> None:
        if not 60 <= self.tcp_idle_timeout <= 6000:
            raise ValueError(f"tcp.idle_timeout.seconds must be 60-6000, got {self.tcp_idle_timeout}")
        if self.non_tcp_idle_timeout <= 0:
            raise ValueError("non-TCP idle timeout must be positive")
        if self.stickiness not in STICKINESS_TYPES:
            raise ValueError(f"stickiness must be one of {STICKINESS_TYPES}, got {self.stickiness!r}")
        for name in ("on_deregistration", "on_unhealthy"):
            if getattr(self, name) not in (NO_REBALANCE, REBALANCE):
                raise ValueError(f"target_failover.{name} must be no_rebalance or rebalance, "
                                 f"got {getattr(self, name)!r}")
        if self.on_deregistration != self.on_unhealthy:
            raise ValueError("target_failover.on_deregistration and target_failover.on_unhealthy "
                             "must be equal (AWS rejects a mix)")
        if not 0 <= self.deregistration_delay <= 3600:
            raise ValueError(f"deregistration_delay.timeout_seconds must be 0-3600, "
                             f"got {self.deregistration_delay}")
        if not 68 <= self.max_packet <= 65535:
            raise ValueError(f"max_packet out of range: {self.max_packet}")

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, object], **fields: object) -> GwlbConfig:
        """Build from AWS attributes (values as the API gives them: strings or natives).

        Listener `tcp.idle_timeout.seconds` and
        `send_tcp_reset.on_idle_timeout.enabled`; target group `stickiness.enabled`,
        `stickiness.type`, `target_failover.on_deregistration`,
        `target_failover.on_unhealthy`, `deregistration_delay.timeout_seconds`;
        load balancer `load_balancing.cross_zone.enabled`. `fields` sets the rest.
        """
        attrs = dict(attributes)
        known = {"tcp.idle_timeout.seconds", "send_tcp_reset.on_idle_timeout.enabled",
                 "stickiness.enabled", "stickiness.type",
                 "target_failover.on_deregistration", "target_failover.on_unhealthy",
                 "deregistration_delay.timeout_seconds", "load_balancing.cross_zone.enabled",
                 "deletion_protection.enabled", "vpclab.drop_stale_cookie.enabled"}
        unknown = sorted(set(attrs) - known)
        if unknown:
            raise ValueError(f"unknown or unsupported GWLB attribute(s): {', '.join(unknown)}")
        out: dict[str, object] = {}
        if "tcp.idle_timeout.seconds" in attrs:
            out["tcp_idle_timeout"] = _as_int("tcp.idle_timeout.seconds", attrs["tcp.idle_timeout.seconds"])
        if "send_tcp_reset.on_idle_timeout.enabled" in attrs:
            out["send_tcp_reset"] = _as_bool("send_tcp_reset.on_idle_timeout.enabled",
                                             attrs["send_tcp_reset.on_idle_timeout.enabled"])
        if _as_bool("stickiness.enabled", attrs.get("stickiness.enabled", False)):
            kind = attrs.get("stickiness.type", THREE_TUPLE)
            if kind not in (THREE_TUPLE, TWO_TUPLE):
                raise ValueError(f"stickiness.type must be {THREE_TUPLE} or {TWO_TUPLE}, got {kind!r}")
            out["stickiness"] = kind
        if "target_failover.on_deregistration" in attrs:
            out["on_deregistration"] = attrs["target_failover.on_deregistration"]
        if "target_failover.on_unhealthy" in attrs:
            out["on_unhealthy"] = attrs["target_failover.on_unhealthy"]
        if "deregistration_delay.timeout_seconds" in attrs:
            out["deregistration_delay"] = _as_int("deregistration_delay.timeout_seconds",
                                                  attrs["deregistration_delay.timeout_seconds"])
        if "load_balancing.cross_zone.enabled" in attrs:
            out["cross_zone"] = _as_bool("load_balancing.cross_zone.enabled",
                                         attrs["load_balancing.cross_zone.enabled"])
        if "vpclab.drop_stale_cookie.enabled" in attrs:  # undocumented at AWS: ours to choose
            out["drop_stale_cookie"] = _as_bool("vpclab.drop_stale_cookie.enabled",
                                                attrs["vpclab.drop_stale_cookie.enabled"])
        out.update(fields)
        return cls(**out)  # type: ignore[arg-type]


def _as_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{key} must be true or false, got {value!r}")


def _as_int(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ValueError(f"{key} must be an integer, got {value!r}")
