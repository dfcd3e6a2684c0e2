"""Elastic Load Balancing rules, shared by the lab loader and live changes.

Everything here is pure and raises ValueError subclasses with a one-line reason;
the loader pins them to a key path (`LabFileError`), live changes to an AWS
error code (`ChangeError`).

- Attributes: the AWS keys of each resource, their defaults and their checks
  (`LOAD_BALANCER_ATTRIBUTES`, `TARGET_GROUP_ATTRIBUTES`, `LISTENER_ATTRIBUTES`,
  `resolve_attributes`). Values are stored as AWS returns them: strings. Some
  defaults and rules of a Network Load Balancer's target groups and listeners
  depend on their protocol and target type: `target_group_defaults`,
  `resolve_target_group_attributes`, `listener_defaults` and
  `resolve_listener_attributes` hold them for the loader and live changes alike.
- Names: `elb_name_problem` (load balancer and target group names are
  DNS-friendly and at most 32 characters).
- Targets: `resolve_target` turns `appliance-1`, `i-0…` or `10.0.21.20` into a
  `Target` of a target group, as RegisterTargets does.

References: /work/shared/reference/aws-behaviour.md §2.2, §2.4, §3.3-§3.7, §6.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Callable, Mapping

from ..health_check import lb_type_for_protocol
from ..reader import _did_you_mean, _show
from ..resources import Instance, Subnet, Target

# -- Attributes --


class AttributeProblem(ValueError):
    """A refused attribute. `key` is the attribute at fault (None: the whole set);
    `code` is AWS's error code for ModifyXxxAttributes."""

    def __init__(self, key: str | None, reason: str, code: str = "ValidationError"):
        super().__init__(reason)
        self.key = key
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class AttributeSpec:
    default: str
    parse: Callable[[Any], str]  # raises ValueError(reason); returns the value as AWS shows it
    meaning: str = ""


def boolean_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower()
    raise ValueError(f"expected true or false, got {_show(value)}")


def integer_between(low: int, high: int) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            number = int(value)
        else:
            raise ValueError(f"expected an integer {low}-{high}, got {_show(value)}")
        if not low <= number <= high:
            raise ValueError(f"{number} is outside {low}-{high}")
        return str(number)

    return parse


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            hint = _did_you_mean(value.strip().lower(), choices) if isinstance(value, str) else ""
            raise ValueError(f"expected one of {', '.join(choices)}, got {_show(value)}{hint}")
        return value.strip().lower()

    return parse


def boolean_or(*choices: str) -> Callable[[Any], str]:
    """true, false or one of `choices` (`load_balancing.cross_zone.enabled` of an NLB's target group)."""
    words = ("true", "false", *choices)

    def parse(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        return one_of(*words)(value)

    return parse


NO_REBALANCE, REBALANCE = "no_rebalance", "rebalance"
STICKINESS_TYPES = ("source_ip_dest_ip_proto", "source_ip_dest_ip")
USE_LOAD_BALANCER_CONFIGURATION = "use_load_balancer_configuration"
UDP_PROTOCOLS = ("UDP", "TCP_UDP")  # target group and listener protocols that carry UDP

_DELETION_PROTECTION = AttributeSpec("false", boolean_value, "refuse deletion")
_CROSS_ZONE = AttributeSpec("false", boolean_value, "each node may send flows to targets in every enabled AZ")
_DEREGISTRATION_DELAY = AttributeSpec(
    "300", integer_between(0, 3600), "seconds a deregistered target keeps its existing flows"
)
_TCP_IDLE_TIMEOUT = AttributeSpec("350", integer_between(60, 6000), "TCP flow idle timeout")



def app_cookie_name(value: Any) -> str:
    """An application cookie's name: a token, not one of the ALB's own AWSALB* cookies (§4.2)."""
    if not isinstance(value, str) or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{0,128}", value):
        raise ValueError(f"expected a cookie name (up to 128 letters, digits or !#$%&'*+-.^_`|~), got {_show(value)}")
    if value.upper().startswith("AWSALB"):
        raise ValueError(f"the names AWSALB, AWSALBAPP and AWSALBTG are reserved for the load balancer's own "
                         f"cookies, got '{value}'")
    return value


def slow_start_seconds(value: Any) -> str:
    """`slow_start.duration_seconds`: 0 (off) or 30-900."""
    text = integer_between(0, 900)(value)
    if 0 < int(text) < 30:
        raise ValueError(f"slow start is 30-900 seconds, or 0 to turn it off; got {text}")
    return text


LOAD_BALANCING_ALGORITHMS = ("round_robin", "least_outstanding_requests")


def load_balancing_algorithm(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() == "weighted_random":
        raise ValueError("weighted_random is not supported: vpclab's ALB engine (HAProxy) has no anomaly "
                         "mitigation to go with it; use round_robin or least_outstanding_requests")
    return one_of(*LOAD_BALANCING_ALGORITHMS)(value)

# Per load balancer type (gateway, network, application).
LOAD_BALANCER_ATTRIBUTES: Mapping[str, Mapping[str, AttributeSpec]] = {
    "gateway": {
        "deletion_protection.enabled": _DELETION_PROTECTION,
        "load_balancing.cross_zone.enabled": _CROSS_ZONE,
    },
    "network": {
        "deletion_protection.enabled": _DELETION_PROTECTION,
        "load_balancing.cross_zone.enabled": _CROSS_ZONE,
    },
    "application": {  # §4
        "deletion_protection.enabled": _DELETION_PROTECTION,
        "idle_timeout.timeout_seconds": AttributeSpec(
            "60", integer_between(1, 4000), "seconds a connection may idle, on either side"),
        "routing.http2.enabled": AttributeSpec("true", boolean_value, "HTTP/2 to clients on HTTPS listeners"),
        "routing.http.xff_header_processing.mode": AttributeSpec(
            "append", one_of("append", "preserve", "remove"), "what X-Forwarded-For the target gets"),
        "routing.http.xff_client_port.enabled": AttributeSpec(
            "false", boolean_value, "append the client's port too (ip:port), in append mode"),
        "routing.http.preserve_host_header.enabled": AttributeSpec(
            "false", boolean_value, "send the client's Host header unchanged, port included"),
        "access_logs.s3.enabled": AttributeSpec(
            "false", boolean_value, "write access logs (to the lab's state directory: the lab has no S3)"),
    },
}
# A network target group's defaults of deregistration_delay.connection_termination.enabled and
# preserve_client_ip.enabled depend on its protocol and target type: see `target_group_defaults`.
TARGET_GROUP_ATTRIBUTES: Mapping[str, Mapping[str, AttributeSpec]] = {
    "gateway": {
        "deregistration_delay.timeout_seconds": _DEREGISTRATION_DELAY,
        "stickiness.enabled": AttributeSpec("false", boolean_value, "hash on fewer fields than the 5-tuple"),
        "stickiness.type": AttributeSpec(
            "source_ip_dest_ip_proto", one_of(*STICKINESS_TYPES), "3-tuple or 2-tuple, when stickiness is enabled"
        ),
        "target_failover.on_deregistration": AttributeSpec(
            NO_REBALANCE, one_of(NO_REBALANCE, REBALANCE), "what happens to the flows of a deregistered target"
        ),
        "target_failover.on_unhealthy": AttributeSpec(
            NO_REBALANCE, one_of(NO_REBALANCE, REBALANCE), "what happens to the flows of an unhealthy target"
        ),
        "vpclab.drop_stale_cookie.enabled": AttributeSpec(
            "true", boolean_value, "vpclab's own: drop returns whose endpoint ID and cookie match no live flow"
        ),
    },
    "network": {
        "deregistration_delay.timeout_seconds": _DEREGISTRATION_DELAY,
        "deregistration_delay.connection_termination.enabled": AttributeSpec(
            "false", boolean_value, "close a deregistered target's connections when the delay ends"
        ),
        "preserve_client_ip.enabled": AttributeSpec(
            "true", boolean_value, "targets see the client's address, not the load balancer node's"
        ),
        "proxy_protocol_v2.enabled": AttributeSpec(
            "false", boolean_value, "prepend a Proxy Protocol v2 header to each TCP connection"
        ),
        "load_balancing.cross_zone.enabled": AttributeSpec(
            USE_LOAD_BALANCER_CONFIGURATION,
            boolean_or(USE_LOAD_BALANCER_CONFIGURATION),
            "override the load balancer's cross-zone setting for this group",
        ),
        "target_health_state.unhealthy.connection_termination.enabled": AttributeSpec(
            "true", boolean_value, "reset an unhealthy target's connections"
        ),
        "target_health_state.unhealthy.draining_interval_seconds": AttributeSpec(
            "0", integer_between(0, 360000), "seconds an unhealthy target keeps its connections (unhealthy.draining)"
        ),
        "stickiness.enabled": AttributeSpec("false", boolean_value, "send a client's flows to one target"),
        "stickiness.type": AttributeSpec("source_ip", one_of("source_ip"), "the only type a network group has"),
    },
    "application": {  # §4.2, §4.4
        "deregistration_delay.timeout_seconds": _DEREGISTRATION_DELAY,
        "load_balancing.algorithm.type": AttributeSpec(
            "round_robin", load_balancing_algorithm, "how a target is picked for each request"),
        "slow_start.duration_seconds": AttributeSpec(
            "0", slow_start_seconds, "seconds a new healthy target ramps up its share (round robin only)"),
        "stickiness.enabled": AttributeSpec("false", boolean_value, "send a client's requests to one target"),
        "stickiness.type": AttributeSpec(
            "lb_cookie", one_of("lb_cookie", "app_cookie"), "the load balancer's cookie (AWSALB) or the application's"),
        "stickiness.lb_cookie.duration_seconds": AttributeSpec(
            "86400", integer_between(1, 604800), "how long an AWSALB cookie pins a client"),
        "stickiness.app_cookie.cookie_name": AttributeSpec(
            "", app_cookie_name, "the application's cookie that app_cookie stickiness follows"),
        "stickiness.app_cookie.duration_seconds": AttributeSpec(
            "86400", integer_between(1, 604800), "how long an AWSALBAPP cookie pins a client"),
    },
}
LISTENER_ATTRIBUTES: Mapping[str, Mapping[str, AttributeSpec]] = {
    "gateway": {
        "tcp.idle_timeout.seconds": _TCP_IDLE_TIMEOUT,
        "send_tcp_reset.on_idle_timeout.enabled": AttributeSpec(
            "false", boolean_value, "RST to a TCP flow's ends when it idles out, and to the sender of a "
            "non-SYN TCP packet without a flow"),
    },
    "network": {"tcp.idle_timeout.seconds": _TCP_IDLE_TIMEOUT},  # TCP and TCP_UDP listeners only
    "application": {},
}
# AWS keys vpclab knows but does not take, per attribute set: refused with this reason, not as unknown.
_NOT_YET = "is not supported yet"
UNSUPPORTED_ATTRIBUTES: Mapping[str, Mapping[str, str]] = {
    "load balancer": {
        "dns_record.client_routing_policy": _NOT_YET,
        "client_keep_alive.seconds": _NOT_YET,
        "routing.http.drop_invalid_header_fields.enabled": _NOT_YET,
        "routing.http.desync_mitigation_mode": _NOT_YET,
        "routing.http.x_amzn_tls_version_and_cipher_suite.enabled": _NOT_YET,
        "routing.http.xff_header_processing.enabled": "is not an attribute; write routing.http.xff_header_processing.mode",
        "waf.fail_open.enabled": "is not supported: the lab has no WAF",
        "access_logs.s3.bucket": "is not needed: the lab has no S3 and writes access logs to its state directory",
        "access_logs.s3.prefix": "is not needed: the lab has no S3 and writes access logs to its state directory",
        "zonal_shift.config.enabled": _NOT_YET,
        "access_logs.s3.enabled": _NOT_YET,
    },
    "target group": {
        "load_balancing.cross_zone.enabled": "is a load balancer attribute for a Gateway Load Balancer",
        "load_balancing.algorithm.anomaly_mitigation": "is not supported: it needs weighted_random, which vpclab's "
        "HAProxy engine does not do",
        **{
            f"target_group_health.{kind}.minimum_healthy_targets.{measure}": _NOT_YET
            for kind in ("dns_failover", "unhealthy_state_routing")
            for measure in ("count", "percentage")
        },
    },
}
# Pairs of attributes AWS requires to be equal.
EQUAL_ATTRIBUTES = (("target_failover.on_deregistration", "target_failover.on_unhealthy"),)


def default_attributes(schema: Mapping[str, AttributeSpec]) -> dict[str, str]:
    return {key: spec.default for key, spec in schema.items()}


def resolve_attributes(
    schema: Mapping[str, AttributeSpec], current: Mapping[str, str], changes: Mapping[Any, Any], what: str
) -> dict[str, str]:
    """`current` (every key of `schema`) with `changes` applied, all checked.

    `what` names the set in messages ("target group"). Raises AttributeProblem:
    ValidationError for an unknown key or a bad value, InvalidConfigurationRequest
    for values that contradict each other.
    """
    result = dict(current)
    for key, value in changes.items():
        name = str(key)
        if key not in schema:
            unsupported = UNSUPPORTED_ATTRIBUTES.get(what, {}).get(name)
            if unsupported:
                raise AttributeProblem(name, f"{what} attribute {name} {unsupported}")
            raise AttributeProblem(name, f"unknown {what} attribute '{name}'{_did_you_mean(name, schema)}")
        try:
            result[key] = schema[key].parse(value)
        except ValueError as e:
            raise AttributeProblem(name, str(e)) from None
    for first, second in EQUAL_ATTRIBUTES:
        if first in result and second in result and result[first] != result[second]:
            raise AttributeProblem(
                _blamed(first, second, changes),
                f"{first} ({result[first]}) and {second} ({result[second]}) must be equal, as AWS requires; "
                "set both",
                "InvalidConfigurationRequest",
            )
    return result


def _blamed(first: str, second: str, changes: Mapping[Any, Any]) -> str:
    """Which of two contradicting attributes to blame: the one being changed, `second` if both or neither."""
    return second if second in changes or first not in changes else first


# A network target group's attributes whose rules depend on its protocol (reference §3.4, §3.5, §3.6).
PRESERVE_CLIENT_IP = "preserve_client_ip.enabled"
PROXY_PROTOCOL_V2 = "proxy_protocol_v2.enabled"
UNHEALTHY_TERMINATION = "target_health_state.unhealthy.connection_termination.enabled"
UNHEALTHY_DRAINING = "target_health_state.unhealthy.draining_interval_seconds"
TCP_IDLE_TIMEOUT = "tcp.idle_timeout.seconds"
CROSS_ZONE = "load_balancing.cross_zone.enabled"
SLOW_START = "slow_start.duration_seconds"
ALGORITHM = "load_balancing.algorithm.type"
APP_COOKIE_NAME = "stickiness.app_cookie.cookie_name"


def target_group_defaults(protocol: str, target_type: str) -> dict[str, str]:
    """Every attribute of a target group of `protocol` (GENEVE, TCP, UDP, TCP_UDP) and
    `target_type`, at AWS's default, as AWS returns them.

    Network groups: `deregistration_delay.connection_termination.enabled` is true for
    UDP and TCP_UDP groups, false for TCP; `preserve_client_ip.enabled` is false for ip
    targets over TCP, true otherwise (instance targets, and UDP or TCP_UDP).
    """
    lb_type = lb_type_for_protocol(protocol)
    defaults = default_attributes(TARGET_GROUP_ATTRIBUTES[lb_type])
    if lb_type == "network":
        udp = protocol.upper() in UDP_PROTOCOLS
        defaults["deregistration_delay.connection_termination.enabled"] = str(udp).lower()
        defaults[PRESERVE_CLIENT_IP] = str(udp or target_type != "ip").lower()
    return defaults


def resolve_target_group_attributes(
    protocol: str, target_type: str, current: Mapping[str, str] | None, changes: Mapping[Any, Any]
) -> dict[str, str]:
    """A target group's attributes (`current`, or its defaults when None) with `changes`
    applied, checked as `resolve_attributes` does and against the rules its protocol sets:

    - UDP and TCP_UDP groups always preserve the client IP (AWS: it "can't be disabled");
    - vpclab sends Proxy Protocol v2 on TCP groups only;
    - an unhealthy draining interval needs unhealthy connection termination off.
    """
    lb_type = lb_type_for_protocol(protocol)
    if current is None:
        current = target_group_defaults(protocol, target_type)
    if lb_type == "application" and CROSS_ZONE in changes:
        raise AttributeProblem(CROSS_ZONE, f"target group attribute {CROSS_ZONE} is not supported yet for an "
                               "Application Load Balancer's groups: the load balancer always balances across zones")
    result = resolve_attributes(TARGET_GROUP_ATTRIBUTES[lb_type], current, changes, "target group")
    if lb_type == "application":
        return _application_group_checks(result, changes)
    if lb_type != "network":
        return result
    protocol = protocol.upper()
    if protocol in UDP_PROTOCOLS and result[PRESERVE_CLIENT_IP] == "false":
        raise AttributeProblem(
            PRESERVE_CLIENT_IP, f"client IP preservation cannot be disabled for UDP and TCP_UDP target groups, "
            f"and this one is {protocol}",
        )
    if protocol in UDP_PROTOCOLS and result[PROXY_PROTOCOL_V2] == "true":
        raise AttributeProblem(
            PROXY_PROTOCOL_V2, f"Proxy Protocol v2 is for TCP target groups, and this one is {protocol} "
            "(vpclab does not send it over UDP)",
        )
    if result[UNHEALTHY_TERMINATION] == "true" and result[UNHEALTHY_DRAINING] != "0":
        raise AttributeProblem(
            _blamed(UNHEALTHY_TERMINATION, UNHEALTHY_DRAINING, changes),
            f"{UNHEALTHY_DRAINING} ({result[UNHEALTHY_DRAINING]}) can be set only when "
            f"{UNHEALTHY_TERMINATION} is false, as AWS requires; set it to false",
            "InvalidConfigurationRequest",
        )
    return result


def _application_group_checks(result: dict[str, str], changes: Mapping[Any, Any]) -> dict[str, str]:
    """What AWS refuses in an Application Load Balancer's target group as a whole (§4.2)."""
    if result[SLOW_START] != "0" and result[ALGORITHM] != "round_robin":
        raise AttributeProblem(
            _blamed(ALGORITHM, SLOW_START, changes),
            f"slow start ({SLOW_START} {result[SLOW_START]}) works with round_robin only, and "
            f"{ALGORITHM} is {result[ALGORITHM]}; set {SLOW_START} to 0 or use round_robin",
            "InvalidConfigurationRequest",
        )
    sticky = result["stickiness.enabled"] == "true" and result["stickiness.type"] == "app_cookie"
    if sticky and not result[APP_COOKIE_NAME]:
        raise AttributeProblem(
            APP_COOKIE_NAME if APP_COOKIE_NAME in changes else "stickiness.type",
            f"app_cookie stickiness follows the application's cookie: set {APP_COOKIE_NAME}",
            "InvalidConfigurationRequest",
        )
    return result


def listener_defaults(lb_type: str, protocol: str | None) -> dict[str, str]:
    """Every attribute of a listener, at AWS's default; a UDP listener has none
    (its flows' idle timeout is 120 s, fixed)."""
    if protocol == "UDP":
        return {}
    return default_attributes(LISTENER_ATTRIBUTES[lb_type])


def resolve_listener_attributes(
    lb_type: str, protocol: str | None, current: Mapping[str, str] | None, changes: Mapping[Any, Any]
) -> dict[str, str]:
    """A listener's attributes (`current`, or its defaults when None) with `changes` applied.

    `protocol` is None for a Gateway Load Balancer's listener, else TCP, UDP or TCP_UDP (HTTP or
    HTTPS for an Application Load Balancer's, which has none yet).
    """
    if current is None:
        current = listener_defaults(lb_type, protocol)
    if protocol == "UDP":
        if TCP_IDLE_TIMEOUT in changes:
            raise AttributeProblem(
                TCP_IDLE_TIMEOUT, f"{TCP_IDLE_TIMEOUT} applies to TCP and TCP_UDP listeners, and this one is UDP "
                "(a UDP flow's idle timeout is 120 seconds, fixed)",
            )
        return resolve_attributes({}, current, changes, "listener")
    return resolve_attributes(LISTENER_ATTRIBUTES[lb_type], current, changes, "listener")


# -- Names --

ELB_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?")


def elb_name_problem(name: str, what: str) -> str | None:
    """Why `name` cannot name a load balancer or target group at AWS, or None."""
    if not ELB_NAME.fullmatch(name):
        return (
            f"a {what} name is 1-32 letters, digits or '-', not starting or ending with '-' "
            f"(it goes into its ARN and DNS name), got '{name}'"
        )
    if what == "load balancer" and name.lower().startswith("internal-"):
        return f"a load balancer name cannot start with 'internal-', got '{name}'"
    return None


# -- Targets --


def resolve_target(
    value: Any,
    target_type: str,
    vpc: str,
    port: int,
    instances: Mapping[str, Instance],
    subnets: Mapping[str, Subnet],
    availability_zone: str | None = None,
    lb_type: str | None = None,
) -> Target:
    """The target `value` names in a target group of `target_type` in VPC `vpc`.

    instance: an instance's name or `i-` ID, in `vpc`. ip: an IPv4 address in a
    subnet of `vpc`, not one AWS reserves; its AZ is that subnet's. Or, with
    `availability_zone` "all", a private address outside the VPC (reached through a
    transit gateway, peering or VPN), which every enabled AZ's nodes may pick; not for a
    Gateway Load Balancer's groups. Raises ValueError(reason).
    """
    if not isinstance(value, str):
        raise ValueError(f"expected an instance name, an instance ID or an IP address, got {_show(value)}")
    if target_type == "instance":
        instance = instances.get(value) or next((i for i in instances.values() if i.id == value), None)
        if instance is None:
            if _is_address(value):
                raise ValueError(f"target type instance takes instances, not IP addresses like {value}")
            raise ValueError(f"unknown instance '{value}'{_did_you_mean(value, instances)}")
        subnet = subnets[instance.subnet]
        if subnet.vpc != vpc:
            raise ValueError(f"instance {instance.name} is in VPC {subnet.vpc}, not in VPC {vpc} (the target group's)")
        return Target(instance.id, instance.private_ip, port, subnet.az, instance.name)
    if not _is_address(value):
        hint = " (that is an instance: use its IP address)" if _instance(value, instances) else ""
        raise ValueError(f"target type ip takes IPv4 addresses, got '{value}'{hint}")
    ip = IPv4Address(value)
    subnet = next((s for s in subnets.values() if s.vpc == vpc and ip in s.cidr), None)
    if subnet is None and availability_zone == "all":
        if lb_type == "gateway":
            raise ValueError(f"{ip} is outside VPC {vpc}: a Gateway Load Balancer's targets are in its VPC")
        if not any(ip in net for net in OUTSIDE_VPC_RANGES):
            raise ValueError(f"{ip} is outside VPC {vpc} and not a private address (10.0.0.0/8, 172.16.0.0/12, "
                             "192.168.0.0/16 or 100.64.0.0/10), as a target outside the VPC must be")
        return Target(str(ip), ip, port, "all")  # whose address it is, outside the VPC, AWS does not know
    if subnet is None:
        outside = availability_zone is None and lb_type not in ("gateway", None)
        hint = "; a target outside the VPC needs AvailabilityZone: all" if outside else ""
        raise ValueError(f"{ip} is not in a subnet of VPC {vpc} (the target group's){hint}")
    if availability_zone not in (None, "all", subnet.az):
        raise ValueError(f"{ip} is in subnet {subnet.name}, in {subnet.az}, not {availability_zone}")
    reserved = _reserved(ip, subnet)
    if reserved:
        raise ValueError(f"{ip} is reserved in subnet {subnet.name} ({subnet.cidr}): {reserved}")
    owner = next((i.name for i in instances.values() if i.private_ip == ip and i.subnet == subnet.name), None)
    return Target(str(ip), ip, port, subnet.az, owner)


# the ranges AWS takes for ip targets outside the target group's VPC (RFC 1918 and RFC 6598)
OUTSIDE_VPC_RANGES = tuple(IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))


def _is_address(value: str) -> bool:
    try:
        IPv4Address(value)
    except ValueError:
        return False
    return True


def _instance(value: str, instances: Mapping[str, Instance]) -> Instance | None:
    return instances.get(value) or next((i for i in instances.values() if i.id == value), None)


def _reserved(ip: IPv4Address, subnet: Subnet) -> str | None:
    base = subnet.cidr.network_address
    names = {base: "network address", base + 1: "VPC router", base + 2: "DNS server", base + 3: "future use"}
    if ip == subnet.cidr.broadcast_address:
        return "broadcast address"
    return names.get(ip)
