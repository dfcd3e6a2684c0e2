"""Elastic Load Balancing and PrivateLink rules, shared by the lab loader and live changes.

Everything here is pure and raises ValueError subclasses with a one-line reason;
the loader pins them to a key path (`LabFileError`), live changes to an AWS
error code (`ChangeError`).

- Attributes: the AWS keys of each resource, their defaults and their checks
  (`LOAD_BALANCER_ATTRIBUTES`, `TARGET_GROUP_ATTRIBUTES`, `LISTENER_ATTRIBUTES`,
  `resolve_attributes`). Values are stored as AWS returns them: strings.
- Names: `elb_name_problem` (load balancer and target group names are
  DNS-friendly and at most 32 characters).
- Targets: `resolve_target` turns `appliance-1`, `i-0…` or `10.0.21.20` into a
  `Target` of a target group, as RegisterTargets does.
- Principals: `parse_principal`, `principal_allows` (endpoint service permissions).

References: /work/shared/reference/aws-behaviour.md §2.2, §2.4, §6.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Callable, Iterable, Mapping

from .resources import Instance, Subnet, Target

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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int, float)):
        return f"'{value}'"
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value), type(value).__name__)


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
            hint = did_you_mean(value.strip().lower(), choices) if isinstance(value, str) else ""
            raise ValueError(f"expected one of {', '.join(choices)}, got {_show(value)}{hint}")
        return value.strip().lower()

    return parse


NO_REBALANCE, REBALANCE = "no_rebalance", "rebalance"
STICKINESS_TYPES = ("source_ip_dest_ip_proto", "source_ip_dest_ip")

# Per load balancer type. Only gateway is supported so far.
LOAD_BALANCER_ATTRIBUTES: Mapping[str, Mapping[str, AttributeSpec]] = {
    "gateway": {
        "deletion_protection.enabled": AttributeSpec("false", boolean_value, "refuse deletion"),
        "load_balancing.cross_zone.enabled": AttributeSpec(
            "false", boolean_value, "each node may send flows to targets in every enabled AZ"
        ),
    },
}
TARGET_GROUP_ATTRIBUTES: Mapping[str, Mapping[str, AttributeSpec]] = {
    "gateway": {
        "deregistration_delay.timeout_seconds": AttributeSpec(
            "300", integer_between(0, 3600), "seconds a deregistered target keeps its existing flows"
        ),
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
}
LISTENER_ATTRIBUTES: Mapping[str, Mapping[str, AttributeSpec]] = {
    "gateway": {
        "tcp.idle_timeout.seconds": AttributeSpec("350", integer_between(60, 6000), "TCP flow idle timeout"),
    },
}
# AWS keys vpclab knows but does not take, per attribute set: refused with this reason, not as unknown.
UNSUPPORTED_ATTRIBUTES: Mapping[str, Mapping[str, str]] = {
    "load balancer": {},
    "target group": {
        "load_balancing.cross_zone.enabled": "is a load balancer attribute for a Gateway Load Balancer",
    },
    "listener": {
        "send_tcp_reset.on_idle_timeout.enabled": "is not supported yet (vpclab's GWLB never sends a TCP reset)",
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
            raise AttributeProblem(name, f"unknown {what} attribute '{name}'{did_you_mean(name, schema)}")
        try:
            result[key] = schema[key].parse(value)
        except ValueError as e:
            raise AttributeProblem(name, str(e)) from None
    for first, second in EQUAL_ATTRIBUTES:
        if first in result and second in result and result[first] != result[second]:
            blamed = second if second in changes or first not in changes else first
            raise AttributeProblem(
                blamed,
                f"{first} ({result[first]}) and {second} ({result[second]}) must be equal, as AWS requires; "
                "set both",
                "InvalidConfigurationRequest",
            )
    return result


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
) -> Target:
    """The target `value` names in a target group of `target_type` in VPC `vpc`.

    instance: an instance's name or `i-` ID, in `vpc`. ip: an IPv4 address in a
    subnet of `vpc`, not one AWS reserves; its AZ is that subnet's. Raises
    ValueError(reason).
    """
    if not isinstance(value, str):
        raise ValueError(f"expected an instance name, an instance ID or an IP address, got {_show(value)}")
    if target_type == "instance":
        instance = instances.get(value) or next((i for i in instances.values() if i.id == value), None)
        if instance is None:
            if _is_address(value):
                raise ValueError(f"target type instance takes instances, not IP addresses like {value}")
            raise ValueError(f"unknown instance '{value}'{did_you_mean(value, instances)}")
        subnet = subnets[instance.subnet]
        if subnet.vpc != vpc:
            raise ValueError(f"instance {instance.name} is in VPC {subnet.vpc}, not in VPC {vpc} (the target group's)")
        return Target(instance.id, instance.private_ip, port, subnet.az, instance.name)
    if not _is_address(value):
        hint = " (that is an instance: use its IP address)" if _instance(value, instances) else ""
        raise ValueError(f"target type ip takes IPv4 addresses, got '{value}'{hint}")
    ip = IPv4Address(value)
    subnet = next((s for s in subnets.values() if s.vpc == vpc and ip in s.cidr), None)
    if subnet is None:
        raise ValueError(f"{ip} is not in a subnet of VPC {vpc} (the target group's)")
    reserved = _reserved(ip, subnet)
    if reserved:
        raise ValueError(f"{ip} is reserved in subnet {subnet.name} ({subnet.cidr}): {reserved}")
    owner = next((i.name for i in instances.values() if i.private_ip == ip and i.subnet == subnet.name), None)
    return Target(str(ip), ip, port, subnet.az, owner)


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


# -- Endpoint service principals --

PRINCIPAL = re.compile(r"arn:aws:iam::(\d{12}):(root|role/[\w+=,.@-]{1,64}|user/[\w+=,.@-]{1,64})")


def parse_principal(value: Any) -> str:
    """`*` or `arn:aws:iam::<account>:root|role/<name>|user/<name>` (no paths, as AWS)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a principal ARN or *, got {_show(value)}")
    if value == "*" or PRINCIPAL.fullmatch(value):
        return value
    if re.fullmatch(r"\d{12}", value):
        raise ValueError(f"a principal is an ARN: write arn:aws:iam::{value}:root for the whole account")
    raise ValueError(
        f"'{value}' is not a principal: expected arn:aws:iam::<account>:root, "
        "arn:aws:iam::<account>:role/<name>, arn:aws:iam::<account>:user/<name> or *"
    )


def principal_account(principal: str) -> str | None:
    """The account a principal belongs to; None for `*` (everyone)."""
    match = PRINCIPAL.fullmatch(principal)
    return match[1] if match else None


def principal_allows(principals: Iterable[str], account: str) -> bool:
    """Whether `account` may connect: a role or user counts as its account, `*` as everyone."""
    return any(p == "*" or principal_account(p) == account for p in principals)
