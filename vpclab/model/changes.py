"""Live changes: pure functions from a Lab to a new Lab, refused as AWS refuses them."""
from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import IPv4Network
from typing import Literal

from .errors import ChangeError
from .loader import parse_integer, parse_network, parse_protocol, port_range, same_permission
from .resources import Lab, SecurityGroup, SgRule

Direction = Literal["ingress", "egress"]
PORT_ARG = re.compile(r"(-1|\d+)(?:-(-1|\d+))?")


def sg_rule_from_args(
    protocol: str | int,
    port: str | int | None = None,
    from_port: str | int | None = None,
    to_port: str | int | None = None,
    cidr: str | IPv4Network | None = None,
    source_group: str | None = None,
    description: str = "",
) -> SgRule:
    """A rule from CLI-style arguments (`--protocol tcp --port 80 --cidr 0.0.0.0/0`).

    protocol: tcp, udp, icmp, -1 or all, or a number. port: "80", "1000-2000" or
    "-1" (all); for icmp it is "type" or "type-code". Or give from_port and
    to_port (icmp: type and code). source_group is the peer group, by name or
    ID; for an egress rule it is the destination.
    """
    try:
        name = parse_protocol(protocol)
    except ValueError as e:
        raise ChangeError("InvalidParameterValue", str(e)) from None
    if port is not None and (from_port is not None or to_port is not None):
        raise ChangeError("InvalidParameterCombination", "give a port or from/to ports, not both")
    first, last = _ports(name, port) if port is not None else (_int(from_port), _int(to_port))
    if name in ("tcp", "udp") and (first is None or last is None):
        raise ChangeError("MissingParameter", f"{name} needs a port: 80, or a range like 1000-2000")
    try:
        first, last = port_range(name, first, last)
    except ValueError as e:
        raise ChangeError("InvalidParameterValue", str(e)) from None
    if cidr is not None and source_group is not None:
        raise ChangeError("InvalidParameterCombination", "give a CIDR or a security group, not both")
    if cidr is None and source_group is None:
        raise ChangeError("MissingParameter", "give a CIDR or a security group")
    try:
        network = parse_network(cidr) if cidr is not None else None
    except ValueError as e:
        raise ChangeError("InvalidParameterValue", str(e)) from None
    return SgRule(name, first, last, network, source_group, description)


def _int(value: str | int | None) -> int | None:
    try:
        return None if value is None else parse_integer(value)
    except ValueError as e:
        raise ChangeError("InvalidParameterValue", str(e)) from None


def _ports(protocol: str, port: str | int) -> tuple[int | None, int | None]:
    match = PORT_ARG.fullmatch(str(port).strip())
    if not match:
        raise ChangeError("InvalidParameterValue", f"'{port}' is not a port (80), a range (1000-2000) or -1 (all)")
    first = int(match[1])
    last = int(match[2]) if match[2] is not None else None
    if protocol == "icmp":
        return first, -1 if last is None else last  # type, code
    if first == -1 and last is None:
        return 0, 65535  # AWS CLI: -1 means all ports
    return first, first if last is None else last


def authorize_security_group_ingress(lab: Lab, group_name_or_id: str, rule: SgRule) -> Lab:
    return _change(lab, group_name_or_id, rule, "ingress", add=True)


def revoke_security_group_ingress(lab: Lab, group_name_or_id: str, rule: SgRule) -> Lab:
    return _change(lab, group_name_or_id, rule, "ingress", add=False)


def authorize_security_group_egress(lab: Lab, group_name_or_id: str, rule: SgRule) -> Lab:
    return _change(lab, group_name_or_id, rule, "egress", add=True)


def revoke_security_group_egress(lab: Lab, group_name_or_id: str, rule: SgRule) -> Lab:
    return _change(lab, group_name_or_id, rule, "egress", add=False)


def _change(lab: Lab, group_name_or_id: str, rule: SgRule, direction: Direction, add: bool) -> Lab:
    group = _group(lab, group_name_or_id)
    rule = _resolved(lab, group, rule)
    rules: tuple[SgRule, ...] = getattr(group, direction)
    exists = any(same_permission(rule, r) for r in rules)
    if add and exists:
        raise ChangeError("InvalidPermission.Duplicate", f'the specified rule "{_summary(rule)}" already exists')
    if not add and not exists:
        raise ChangeError("InvalidPermission.NotFound", "The specified rule does not exist in this security group.")
    kept = rules + (rule,) if add else tuple(r for r in rules if not same_permission(r, rule))
    changed = replace(group, **{direction: kept})
    return replace(lab, security_groups={**lab.security_groups, group.name: changed})


def _group(lab: Lab, name_or_id: str) -> SecurityGroup:
    for group in lab.security_groups.values():
        if name_or_id in (group.name, group.id):
            return group
    raise ChangeError("InvalidGroup.NotFound", f"The security group '{name_or_id}' does not exist")


def _resolved(lab: Lab, group: SecurityGroup, rule: SgRule) -> SgRule:
    """The rule normalised as the loader would, its peer group named and in the same VPC."""
    rule = sg_rule_from_args(
        rule.protocol,
        from_port=rule.from_port,
        to_port=rule.to_port,
        cidr=rule.cidr,
        source_group=rule.group,
        description=rule.description,
    )
    if rule.group is None:
        return rule
    peer = _group(lab, rule.group)
    if peer.vpc != group.vpc:
        raise ChangeError(
            "InvalidGroup.NotFound", "You have specified two resources that belong to different networks."
        )
    return replace(rule, group=peer.name)


def _summary(rule: SgRule) -> str:
    """As AWS words a rule: `peer: 0.0.0.0/0, TCP, from port: 80, to port: 80, ALLOW`."""
    parts = [f"peer: {rule.cidr if rule.group is None else rule.group}"]
    parts.append("ALL" if rule.protocol == "-1" else rule.protocol.upper())
    if rule.from_port is not None:
        parts += [f"from port: {rule.from_port}", f"to port: {rule.to_port}"]
    return ", ".join(parts + ["ALLOW"])
