"""The permissions of security groups and network ACLs: protocols, ports and rules as AWS
keys them, read from the lab file and shared with live changes (model/changes.py)."""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network
from typing import Any

from ..reader import (
    BOOLEAN,
    INTEGER,
    NETWORK,
    PROTOCOL,
    TEXT,
    Field,
    _between,
    _choice,
    _fields,
    _Invalid,
    _join,
    _leaf,
    _mapping,
)
from ..resources import NaclEntry, SgRule

ANYWHERE = IPv4Network("0.0.0.0/0")
ALL_TRAFFIC_OUT = SgRule("-1", cidr=ANYWHERE)  # AWS's egress rule for a new group


def port_range(protocol: str, first: int | None, last: int | None) -> tuple[int | None, int | None]:
    """The ports a rule keeps: tcp/udp 0–65535; icmp type and code (-1 = all); none for others."""
    if protocol in ("tcp", "udp"):
        if first is None or last is None:
            raise ValueError(f"{protocol} needs a port range")
        for port in (first, last):
            if not 0 <= port <= 65535:
                raise ValueError(f"port {port} is outside 0-65535")
        if first > last:
            raise ValueError(f"the port range {first}-{last} is reversed")
        return first, last
    if protocol == "icmp":
        icmp_type = -1 if first is None else first
        code = -1 if last is None else last
        for what, number in (("type", icmp_type), ("code", code)):
            if not -1 <= number <= 255:
                raise ValueError(f"ICMP {what} {number} is outside -1 to 255")
        if icmp_type == -1 and code != -1:
            raise ValueError(f"ICMP code {code} needs an ICMP type; -1 (all types) takes all codes")
        return icmp_type, code
    return None, None  # all traffic or another protocol: AWS ignores ports


def permission_key(rule: SgRule) -> SgRule:
    """AWS identifies a rule by everything but its description."""
    return replace(rule, description="")


def same_permission(a: SgRule, b: SgRule) -> bool:
    return permission_key(a) == permission_key(b)


def _sg_rule(peer_key: str) -> Field:
    """A permission; `peer_key` is SourceSecurityGroupId (ingress) or DestinationSecurityGroupId (egress)."""
    schema = {
        "IpProtocol": PROTOCOL,
        "FromPort": INTEGER,
        "ToPort": INTEGER,
        "CidrIp": NETWORK,
        peer_key: TEXT,
        "Description": TEXT,
    }

    def read(value: Any, path: str) -> SgRule:
        props = _fields(value, path, schema, required=("IpProtocol",))
        if ("CidrIp" in props) == (peer_key in props):
            raise _Invalid(path, f"a rule needs exactly one of CidrIp or {peer_key}")
        protocol = props["IpProtocol"]
        for key in ("FromPort", "ToPort"):
            if protocol in ("tcp", "udp") and key not in props:
                raise _Invalid(_join(path, key), f"required key is missing for {protocol}")
        try:
            from_port, to_port = port_range(protocol, props.get("FromPort"), props.get("ToPort"))
        except ValueError as e:
            raise _Invalid(path, str(e)) from None
        return SgRule(
            protocol, from_port, to_port, props.get("CidrIp"), props.get(peer_key), props.get("Description", "")
        )

    return read


_NACL_ENTRY = {
    "RuleNumber": _leaf(_between(1, 32766)),
    "Protocol": PROTOCOL,
    "RuleAction": _leaf(_choice("allow", "deny")),
    "Egress": BOOLEAN,
    "CidrBlock": NETWORK,
    "PortRange": _mapping({"From": INTEGER, "To": INTEGER}, required=("From", "To")),
    "IcmpTypeCode": _mapping({"Type": INTEGER, "Code": INTEGER}),
}


def _nacl_entry(value: Any, path: str) -> NaclEntry:
    props = _fields(value, path, _NACL_ENTRY, required=("RuleNumber", "Protocol", "RuleAction", "CidrBlock"))
    protocol = props["Protocol"]
    if protocol in ("tcp", "udp") and "PortRange" not in props:
        raise _Invalid(_join(path, "PortRange"), f"required key is missing for {protocol}")
    ports, icmp = props.get("PortRange", {}), props.get("IcmpTypeCode", {})
    port_from = port_to = icmp_type = icmp_code = None
    try:
        if protocol == "icmp":
            icmp_type, icmp_code = port_range(protocol, icmp.get("Type"), icmp.get("Code"))
        else:
            port_from, port_to = port_range(protocol, ports.get("From"), ports.get("To"))
    except ValueError as e:
        raise _Invalid(path, str(e)) from None
    return NaclEntry(
        props["RuleNumber"],
        protocol,
        props["RuleAction"],
        props.get("Egress", False),
        props["CidrBlock"],
        port_from,
        port_to,
        icmp_type,
        icmp_code,
    )
