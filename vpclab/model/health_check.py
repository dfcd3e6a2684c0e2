"""A target group's health check settings, validated as Elastic Load Balancing does.

Pure configuration, shared by the lab loader (which refuses a bad target group)
and the health checker in `vpclab.engines.health` (which runs the checks):

- `HealthCheckConfig`: the settings, with AWS's defaults and ranges per load
  balancer type; build it with `HealthCheckConfig.for_target_group`.
- `parse_matcher`, `match_http_code`: the `Matcher` `HttpCode` syntax.
- `lb_type_for_protocol`: which load balancer type a target group protocol serves.

References: /work/shared/reference/aws-behaviour.md §2.3, §3.6, §4.4.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

LbType = Literal["gateway", "network", "application"]
HealthCheckProtocol = Literal["TCP", "HTTP", "HTTPS"]
TRAFFIC_PORT = "traffic-port"


# --------------------------------------------------------------------------
# Matcher


def parse_matcher(matcher: str) -> tuple[tuple[int, int], ...]:
    """Parse a `Matcher.HttpCode` ("200", "200-399", "200,202,301") into inclusive ranges."""
    ranges: list[tuple[int, int]] = []
    for item in matcher.split(","):
        item = item.strip()
        low, sep, high = item.partition("-")
        try:
            first = int(low)
            last = int(high) if sep else first
        except ValueError:
            raise ValueError(f"Matcher HttpCode must be codes like 200, 200,202 or 200-399, got {matcher!r}") from None
        if first > last:
            raise ValueError(f"Matcher HttpCode range {item!r} is reversed")
        ranges.append((first, last))
    return tuple(ranges)


def match_http_code(matcher: str, code: int) -> bool:
    """True when `code` is one of the codes `matcher` names."""
    return any(first <= code <= last for first, last in parse_matcher(matcher))


# --------------------------------------------------------------------------
# Configuration

_INTERVAL_RANGE = (5, 300)
_TIMEOUT_RANGE = (2, 120)
_THRESHOLD_RANGE = (2, 10)
_PORT_RANGE = (1, 65535)
_MAX_PATH = 1024

_MATCHER_RANGE: Mapping[str, tuple[int, int]] = {
    "gateway": (200, 399),  # §2.3
    "network": (200, 599),  # §3.6
    "application": (200, 499),  # §4.4
}
_HEALTH_CHECK_PROTOCOLS: Mapping[str, frozenset[str]] = {
    "gateway": frozenset({"TCP", "HTTP", "HTTPS"}),
    "network": frozenset({"TCP", "HTTP", "HTTPS"}),
    "application": frozenset({"HTTP", "HTTPS"}),
}
_TARGET_PROTOCOLS: Mapping[str, frozenset[str]] = {
    "gateway": frozenset({"GENEVE"}),
    "network": frozenset({"TCP", "TLS", "UDP", "TCP_UDP"}),
    "application": frozenset({"HTTP", "HTTPS"}),
}
_TARGET_TYPES: Mapping[str, frozenset[str]] = {
    "gateway": frozenset({"instance", "ip"}),
    "network": frozenset({"instance", "ip", "alb"}),
    "application": frozenset({"instance", "ip", "lambda"}),
}
_OVERRIDE_KEYS = frozenset(
    {
        "HealthCheckEnabled",
        "HealthCheckProtocol",
        "HealthCheckPort",
        "HealthCheckPath",
        "HealthCheckIntervalSeconds",
        "HealthCheckTimeoutSeconds",
        "HealthyThresholdCount",
        "UnhealthyThresholdCount",
        "Matcher",
        "TargetType",
    }
)


def _check_int(key: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key} must be {low}-{high}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class HealthCheckConfig:
    """A target group's health check settings, always within AWS's ranges.

    Build it with `for_target_group`, which applies the defaults for the load
    balancer type; direct construction validates the same ranges.
    """

    lb_type: LbType
    protocol: HealthCheckProtocol
    port: int | Literal["traffic-port"]
    interval_seconds: int
    timeout_seconds: int
    healthy_threshold: int
    unhealthy_threshold: int
    matcher: str  # Matcher.HttpCode; unused by TCP checks
    path: str = "/"  # unused by TCP checks
    enabled: bool = True  # HealthCheckEnabled; false only for lambda target groups

    def __post_init__(self) -> None:
        if self.lb_type not in _MATCHER_RANGE:
            raise ValueError(f"load balancer type must be gateway, network or application, got {self.lb_type!r}")
        allowed = _HEALTH_CHECK_PROTOCOLS[self.lb_type]
        if self.protocol not in allowed:
            raise ValueError(
                f"HealthCheckProtocol must be one of {', '.join(sorted(allowed))} "
                f"for a {self.lb_type} target group, got {self.protocol!r}"
            )
        if self.port == TRAFFIC_PORT:
            if self.lb_type == "gateway":
                # GWLB targets listen on 6081/GENEVE only; the check needs a real port (§2.3).
                raise ValueError("HealthCheckPort must be 1-65535 for a gateway target group, got 'traffic-port'")
        else:
            _check_int("HealthCheckPort", self.port, *_PORT_RANGE)
        _check_int("HealthCheckIntervalSeconds", self.interval_seconds, *_INTERVAL_RANGE)
        _check_int("HealthCheckTimeoutSeconds", self.timeout_seconds, *_TIMEOUT_RANGE)
        _check_int("HealthyThresholdCount", self.healthy_threshold, *_THRESHOLD_RANGE)
        _check_int("UnhealthyThresholdCount", self.unhealthy_threshold, *_THRESHOLD_RANGE)
        if self.lb_type == "gateway" and self.interval_seconds < self.timeout_seconds:
            raise ValueError(
                f"HealthCheckIntervalSeconds must be >= HealthCheckTimeoutSeconds for a gateway target group, "
                f"got {self.interval_seconds} < {self.timeout_seconds}"
            )
        low, high = _MATCHER_RANGE[self.lb_type]
        for first, last in parse_matcher(self.matcher):
            if first < low or last > high:
                raise ValueError(
                    f"Matcher HttpCode must be within {low}-{high} for a {self.lb_type} target group, "
                    f"got {self.matcher!r}"
                )
        if not self.path.startswith("/") or len(self.path) > _MAX_PATH:
            raise ValueError(
                f"HealthCheckPath must start with '/' and be at most {_MAX_PATH} characters, got {self.path!r}"
            )

    @property
    def initial_pass_count(self) -> int:
        """Consecutive passes a newly registered target needs: one for an ALB (§4.4)."""
        return 1 if self.lb_type == "application" else self.healthy_threshold

    def port_for(self, traffic_port: int) -> int:
        """The port a probe goes to for a target registered on `traffic_port`."""
        return traffic_port if self.port == TRAFFIC_PORT else int(self.port)

    @classmethod
    def for_target_group(cls, lb_type: LbType, target_protocol: str, **overrides: object) -> HealthCheckConfig:
        """AWS's defaults for a target group, with CloudFormation-named overrides.

        `target_protocol` is the target group's `Protocol` (GENEVE for gateway;
        TCP, TLS, UDP or TCP_UDP for network; HTTP or HTTPS for application).
        Overrides: HealthCheckEnabled, HealthCheckProtocol, HealthCheckPort,
        HealthCheckPath, HealthCheckIntervalSeconds, HealthCheckTimeoutSeconds,
        HealthyThresholdCount, UnhealthyThresholdCount, Matcher ({"HttpCode": ...})
        and TargetType (instance, ip, alb, lambda), which decides what is allowed.
        """
        if lb_type not in _MATCHER_RANGE:
            raise ValueError(f"load balancer type must be gateway, network or application, got {lb_type!r}")
        unknown = sorted(set(overrides) - _OVERRIDE_KEYS)
        if unknown:
            raise ValueError(f"unknown health check properties {unknown}; expected {sorted(_OVERRIDE_KEYS)}")
        target_protocol = str(target_protocol).upper()
        if target_protocol not in _TARGET_PROTOCOLS[lb_type]:
            raise ValueError(
                f"Protocol must be one of {', '.join(sorted(_TARGET_PROTOCOLS[lb_type]))} "
                f"for a {lb_type} target group, got {target_protocol!r}"
            )
        target_type = str(overrides.get("TargetType", "instance"))
        if target_type not in _TARGET_TYPES[lb_type]:
            raise ValueError(
                f"TargetType must be one of {', '.join(sorted(_TARGET_TYPES[lb_type]))} "
                f"for a {lb_type} target group, got {target_type!r}"
            )
        if target_type == "alb" and target_protocol != "TCP":
            raise ValueError(f"Protocol must be TCP for a target group of type alb, got {target_protocol!r}")

        enabled = overrides.get("HealthCheckEnabled", target_type != "lambda")
        if not isinstance(enabled, bool):
            raise ValueError(f"HealthCheckEnabled must be true or false, got {enabled!r}")
        if not enabled and target_type != "lambda":
            raise ValueError("HealthCheckEnabled can be false only for a target group of type lambda")
        if enabled and target_type == "lambda":
            # A lambda check invokes the function; vpclab has no Lambda to invoke.
            raise ValueError("HealthCheckEnabled: vpclab cannot health-check lambda targets")

        if lb_type == "application" or target_type == "alb":
            default_protocol = "HTTP"  # ALB checks are HTTP(S); so are NLB checks of an ALB target (§3.6)
        else:
            default_protocol = "TCP"
        protocol = str(overrides.get("HealthCheckProtocol", default_protocol)).upper()
        if target_type == "alb" and protocol not in ("HTTP", "HTTPS"):
            raise ValueError(
                f"HealthCheckProtocol must be HTTP or HTTPS for a target group of type alb, got {protocol!r}"
            )
        if protocol == "TCP":
            for key in ("HealthCheckPath", "Matcher"):
                if key in overrides:
                    raise ValueError(f"{key} is not supported for health checks with the TCP protocol")

        if lb_type == "gateway":
            port: object = 80
            timeout = 5
            interval = 10
            matcher = "200-399"
        elif lb_type == "network":
            port = TRAFFIC_PORT
            timeout = 6 if protocol == "HTTP" else 10
            interval = 30
            matcher = "200-399"
        else:
            port = TRAFFIC_PORT
            timeout = 5  # §4.4: the API model's 6 is uncertain; the guide says 5
            interval = 30
            matcher = "200"

        port = overrides.get("HealthCheckPort", port)
        if isinstance(port, str) and port.isdigit():
            port = int(port)  # CloudFormation passes the port as a string
        if "Matcher" in overrides:
            matcher = _matcher_http_code(overrides["Matcher"])
        path = overrides.get("HealthCheckPath", "/")
        if not isinstance(path, str):
            raise ValueError(f"HealthCheckPath must be a string, got {path!r}")

        return cls(
            lb_type=lb_type,
            protocol=protocol,  # type: ignore[arg-type]  # checked in __post_init__
            port=port,  # type: ignore[arg-type]
            path=path,
            interval_seconds=overrides.get("HealthCheckIntervalSeconds", interval),  # type: ignore[arg-type]
            timeout_seconds=overrides.get("HealthCheckTimeoutSeconds", timeout),  # type: ignore[arg-type]
            healthy_threshold=overrides.get("HealthyThresholdCount", 5),  # type: ignore[arg-type]
            unhealthy_threshold=overrides.get("UnhealthyThresholdCount", 2),  # type: ignore[arg-type]
            matcher=matcher,
            enabled=enabled,
        )


def _matcher_http_code(value: object) -> str:
    if not isinstance(value, Mapping) or set(value) != {"HttpCode"}:
        if isinstance(value, Mapping) and "GrpcCode" in value:
            raise ValueError("Matcher GrpcCode is not supported by vpclab")
        raise ValueError(f"Matcher must be {{'HttpCode': ...}}, got {value!r}")
    code = value["HttpCode"]
    if isinstance(code, int) and not isinstance(code, bool):
        code = str(code)
    if not isinstance(code, str):
        raise ValueError(f"Matcher HttpCode must be a string, got {code!r}")
    return code


def lb_type_for_protocol(target_protocol: str) -> LbType:
    """The load balancer type a target group of `target_protocol` serves (GENEVE: gateway)."""
    protocol = str(target_protocol).upper()
    for lb_type, protocols in _TARGET_PROTOCOLS.items():
        if protocol in protocols:
            return lb_type  # type: ignore[return-value]
    raise ValueError(f"unknown target group protocol {target_protocol!r}")
