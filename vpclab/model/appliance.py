"""The reference GWLB appliance's configuration: rules, validated.

Pure and shared: the lab loader validates an instance's `Appliance` mapping with
`ApplianceConfig.from_dict`, and the appliance (`vpclab.engines.appliance.core`)
runs it. The format:

    inside: [10.0.0.0/16]          # who is "inside" for `direction`
    drop_all: false
    flow_idle_timeout: 350         # seconds
    rules:                         # in order, first match wins, default allow
      - {action: deny, direction: inbound, protocol: tcp, port: 22}
      - {action: allow, protocol: udp, port: [53, "8000-8100"], destination: 10.0.2.0/24}

`kind: hairpin` runs no vpclab process in the data path: iptables in the
instance returns GENEVE to the GWLB node unchanged (DNAT back to the node,
MASQUERADE), as in AWS's "iptables hairpin" appliance; it takes no other key.
The default kind, `reference`, is the Python appliance with these rules.

A rule matches a flow's initiating packet: its source, destination, protocol
and destination port; `direction` says where the initiator sits (`inbound`:
outside `inside`; `outbound`: inside).

Errors are `ApplianceConfigError`, a ValueError whose message is
`<where>: <reason>` (`appliance.rules[0].action: expected allow or deny, ...`);
`where` and `reason` are also attributes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, Mapping, Sequence


class ApplianceConfigError(ValueError):
    """A bad appliance setting: `where` is its dotted path from `appliance`, `reason` why."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


REFERENCE, HAIRPIN = "reference", "hairpin"
KINDS = (REFERENCE, HAIRPIN)
ALLOW, DENY = "allow", "deny"
INBOUND, OUTBOUND, ANY = "inbound", "outbound", "any"
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
_ANY_PROTOCOL = ("any", "all", "-1")

Network = IPv4Network | IPv6Network


@dataclass(frozen=True)
class Rule:
    action: str
    direction: str = ANY
    protocol: int | None = None                # None: any
    ports: tuple[tuple[int, int], ...] = ()    # inclusive ranges; empty: any
    source: tuple[Network, ...] = ()           # empty: any
    destination: tuple[Network, ...] = ()

    def matches(self, proto: int, src: Any, dst: Any, dport: int, inbound: bool) -> bool:
        if self.direction != ANY and inbound != (self.direction == INBOUND):
            return False
        if self.protocol is not None and proto != self.protocol:
            return False
        if self.ports and not (proto in (6, 17) and any(lo <= dport <= hi for lo, hi in self.ports)):
            return False
        if self.source and not in_any(src, self.source):
            return False
        return not self.destination or in_any(dst, self.destination)


def in_any(address: Any, networks: tuple[Network, ...]) -> bool:
    # ipaddress does not check versions in `in`; an IPv4 address could match ::/0.
    return any(address.version == n.version and address in n for n in networks)


@dataclass(frozen=True)
class ApplianceConfig:
    inside: tuple[Network, ...] = ()
    rules: tuple[Rule, ...] = ()
    drop_all: bool = False
    flow_idle_timeout: float = 350.0
    kind: str = REFERENCE

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ApplianceConfig:
        """Parse `{kind, inside, drop_all, rules, flow_idle_timeout}`; ApplianceConfigError (a ValueError)
        names the field."""
        if data is not None and not isinstance(data, Mapping):
            raise ApplianceConfigError("appliance", f"expected a mapping, got {type(data).__name__}")
        data = dict(data or {})
        unknown = sorted(map(str, set(data) - {"kind", "inside", "drop_all", "rules", "flow_idle_timeout"}))
        if unknown:
            raise ApplianceConfigError("appliance", f"unknown key(s) {', '.join(unknown)}")
        kind = data.pop("kind", REFERENCE)
        if kind not in KINDS:
            raise ApplianceConfigError("appliance.kind", f"expected {' or '.join(KINDS)}, got {kind!r}")
        if kind == HAIRPIN:
            if data:  # iptables returns every packet: nothing to configure
                raise ApplianceConfigError(f"appliance.{sorted(map(str, data))[0]}", "the hairpin appliance "
                                           "takes no settings but kind (iptables returns every packet)")
            return cls(kind=HAIRPIN)
        inside = _networks("appliance.inside", data.get("inside", ()))
        drop_all = data.get("drop_all", False)
        if not isinstance(drop_all, bool):
            raise ApplianceConfigError("appliance.drop_all", f"expected true or false, got {drop_all!r}")
        timeout = data.get("flow_idle_timeout", 350.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ApplianceConfigError("appliance.flow_idle_timeout", f"expected a positive number, got {timeout!r}")
        rules = parse_rules(data.get("rules", ()))
        if not inside and any(r.direction != ANY for r in rules):
            raise ApplianceConfigError("appliance.rules", "direction inbound/outbound needs appliance.inside")
        return cls(inside=inside, rules=rules, drop_all=drop_all, flow_idle_timeout=float(timeout))


_RULE_KEYS = {"action", "direction", "protocol", "port", "source", "destination"}


def parse_rules(rules: Sequence[Mapping[str, Any]]) -> tuple[Rule, ...]:
    if not isinstance(rules, (list, tuple)):
        raise ApplianceConfigError("appliance.rules", f"expected a list, got {type(rules).__name__}")
    return tuple(_parse_rule(f"appliance.rules[{i}]", rule) for i, rule in enumerate(rules))


def _parse_rule(where: str, rule: Mapping[str, Any]) -> Rule:
    if not isinstance(rule, Mapping):
        raise ApplianceConfigError(where, f"expected a mapping, got {rule!r}")
    unknown = sorted(map(str, set(rule) - _RULE_KEYS))
    if unknown:
        raise ApplianceConfigError(where, f"unknown key(s) {', '.join(unknown)}")
    action = rule.get("action")
    if action not in (ALLOW, DENY):
        raise ApplianceConfigError(f"{where}.action", f"expected allow or deny, got {action!r}")
    direction = rule.get("direction", ANY)
    if direction not in (INBOUND, OUTBOUND, ANY):
        raise ApplianceConfigError(f"{where}.direction", f"expected inbound, outbound or any, got {direction!r}")
    protocol = _protocol(f"{where}.protocol", rule.get("protocol", "any"))
    ports = _ports(f"{where}.port", rule.get("port", ()))
    if ports and protocol not in (None, 6, 17):
        raise ApplianceConfigError(f"{where}.port", "ports need protocol tcp, udp or any")
    return Rule(action=action, direction=direction, protocol=protocol, ports=ports,
                source=_networks(f"{where}.source", rule.get("source", ())),
                destination=_networks(f"{where}.destination", rule.get("destination", ())))


def _protocol(where: str, value: Any) -> int | None:
    if isinstance(value, str):
        name = value.lower()
        if name in _ANY_PROTOCOL:
            return None
        if name in PROTOCOLS:
            return PROTOCOLS[name]
        if name.isdigit():
            value = int(name)
    if isinstance(value, int) and not isinstance(value, bool):
        if value == -1:
            return None
        if 0 <= value <= 255:
            return value
    raise ApplianceConfigError(where, f"expected tcp, udp, icmp, icmpv6, any or 0-255, got {value!r}")


def _ports(where: str, value: Any) -> tuple[tuple[int, int], ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    ranges = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            lo = hi = item
        elif isinstance(item, str) and item.partition("-")[0].strip().isdigit():
            first, dash, last = item.partition("-")
            if dash and not last.strip().isdigit():
                raise ApplianceConfigError(where, f"bad port range {item!r}")
            lo, hi = int(first), int(last) if dash else int(first)
        else:
            raise ApplianceConfigError(where, f"expected a port, a 'low-high' range or a list, got {item!r}")
        if not 1 <= lo <= hi <= 65535:
            raise ApplianceConfigError(where, f"port range {item!r} outside 1-65535 or reversed")
        ranges.append((lo, hi))
    return tuple(ranges)


def _networks(where: str, value: Any) -> tuple[Network, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    networks = []
    for item in items:
        if not isinstance(item, str):
            raise ApplianceConfigError(where, f"expected a CIDR string, got {item!r}")
        try:
            networks.append(ip_network(item))
        except ValueError as error:
            raise ApplianceConfigError(where, str(error)) from None
    return tuple(networks)
