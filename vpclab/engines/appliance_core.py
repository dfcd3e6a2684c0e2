"""The reference GWLB appliance, sans-IO: echo what GWLB sends, or drop it.

A one-arm appliance (reference §1.2) returns each GENEVE datagram with its
header byte for byte (the cookie included, so a reused 5-tuple's new cookie is
echoed at once) and the inner packet unchanged. The outer IP/UDP swap belongs
to the shell.

Optional rules, from a lab file:

    inside: [10.0.0.0/16]          # who is "inside" for `direction`
    drop_all: false
    rules:                         # in order, first match wins, default allow
      - {action: deny, direction: inbound, protocol: tcp, port: 22}
      - {action: allow, protocol: udp, port: [53, "8000-8100"], destination: 10.0.2.0/24}

A flow is a GWLB flow cookie (with its endpoint ID). Its first packet is the
initiator: rules match that packet's source, destination, protocol and
destination port, and `direction` says where the initiator sits (`inbound`:
outside `inside`; `outbound`: inside). The verdict sticks to the flow, so
replies follow it. A flow rebalanced here mid-stream has a reply as its first
packet, and is judged by that.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any, Mapping, NamedTuple, Sequence

from vpclab.engines.geneve import GeneveError, decode, parse_inner

ALLOW, DENY = "allow", "deny"
INBOUND, OUTBOUND, ANY = "inbound", "outbound", "any"
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
_ANY_PROTOCOL = ("any", "all", "-1")

Network = IPv4Network | IPv6Network


class Reply(NamedTuple):
    """Send `datagram` back to the GWLB node that sent it (the received bytes, unchanged)."""
    datagram: bytes | memoryview


class Drop(NamedTuple):
    reason: str


_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__ (hot path)


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
        if self.source and not _in_any(src, self.source):
            return False
        return not self.destination or _in_any(dst, self.destination)


def _in_any(address: Any, networks: tuple[Network, ...]) -> bool:
    # ipaddress does not check versions in `in`; an IPv4 address could match ::/0.
    return any(address.version == n.version and address in n for n in networks)


@dataclass(frozen=True)
class ApplianceConfig:
    inside: tuple[Network, ...] = ()
    rules: tuple[Rule, ...] = ()
    drop_all: bool = False
    flow_idle_timeout: float = 350.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ApplianceConfig:
        """Parse `{inside, drop_all, rules, flow_idle_timeout}`; ValueError names the bad field."""
        data = dict(data or {})
        unknown = sorted(set(data) - {"inside", "drop_all", "rules", "flow_idle_timeout"})
        if unknown:
            raise ValueError(f"appliance: unknown key(s) {', '.join(unknown)}")
        inside = _networks("appliance.inside", data.get("inside", ()))
        drop_all = data.get("drop_all", False)
        if not isinstance(drop_all, bool):
            raise ValueError(f"appliance.drop_all: expected true or false, got {drop_all!r}")
        timeout = data.get("flow_idle_timeout", 350.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"appliance.flow_idle_timeout: expected a positive number, got {timeout!r}")
        rules = parse_rules(data.get("rules", ()))
        if not inside and any(r.direction != ANY for r in rules):
            raise ValueError("appliance.rules: direction inbound/outbound needs appliance.inside")
        return cls(inside=inside, rules=rules, drop_all=drop_all, flow_idle_timeout=float(timeout))


_RULE_KEYS = {"action", "direction", "protocol", "port", "source", "destination"}


def parse_rules(rules: Sequence[Mapping[str, Any]]) -> tuple[Rule, ...]:
    if not isinstance(rules, (list, tuple)):
        raise ValueError(f"appliance.rules: expected a list, got {type(rules).__name__}")
    return tuple(_parse_rule(f"appliance.rules[{i}]", rule) for i, rule in enumerate(rules))


def _parse_rule(where: str, rule: Mapping[str, Any]) -> Rule:
    if not isinstance(rule, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {rule!r}")
    unknown = sorted(set(rule) - _RULE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
    action = rule.get("action")
    if action not in (ALLOW, DENY):
        raise ValueError(f"{where}.action: expected allow or deny, got {action!r}")
    direction = rule.get("direction", ANY)
    if direction not in (INBOUND, OUTBOUND, ANY):
        raise ValueError(f"{where}.direction: expected inbound, outbound or any, got {direction!r}")
    protocol = _protocol(f"{where}.protocol", rule.get("protocol", "any"))
    ports = _ports(f"{where}.port", rule.get("port", ()))
    if ports and protocol not in (None, 6, 17):
        raise ValueError(f"{where}.port: ports need protocol tcp, udp or any")
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
    raise ValueError(f"{where}: expected tcp, udp, icmp, icmpv6, any or 0-255, got {value!r}")


def _ports(where: str, value: Any) -> tuple[tuple[int, int], ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    ranges = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            lo = hi = item
        elif isinstance(item, str) and item.partition("-")[0].strip().isdigit():
            first, dash, last = item.partition("-")
            if dash and not last.strip().isdigit():
                raise ValueError(f"{where}: bad port range {item!r}")
            lo, hi = int(first), int(last) if dash else int(first)
        else:
            raise ValueError(f"{where}: expected a port, a 'low-high' range or a list, got {item!r}")
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"{where}: port range {item!r} outside 1-65535 or reversed")
        ranges.append((lo, hi))
    return tuple(ranges)


def _networks(where: str, value: Any) -> tuple[Network, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    networks = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{where}: expected a CIDR string, got {item!r}")
        try:
            networks.append(ip_network(item))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    return tuple(networks)


class _Flow:
    __slots__ = ("initiator", "allowed", "rule", "last_seen", "gen")


class Appliance:
    """Echo GWLB's GENEVE datagrams, enforcing per-flow verdicts."""

    def __init__(self, config: ApplianceConfig | None = None) -> None:
        self._flows: dict[tuple[int, int], _Flow] = {}
        self._gen = 0
        self.flows = 0
        self.packets_in = 0
        self.packets_out = 0
        self.dropped: dict[str, int] = {}
        self.malformed: dict[str, int] = {}
        self.configure(config or ApplianceConfig())

    def configure(self, config: ApplianceConfig) -> None:
        """Swap the rules live; each flow is judged again, by its initiator, on its next packet."""
        self.config = config
        self.rule_flows = [0] * len(config.rules)
        self._gen += 1

    def handle(self, datagram: bytes | memoryview, now: float) -> Reply | Drop:
        self.packets_in += 1
        try:
            header, offset = decode(datagram)
        except GeneveError as error:
            return self._malformed(error.reason)
        if self.config.drop_all:
            return self._drop("drop_all")
        key = (header.endpoint_id, header.flow_cookie)
        flow = self._flows.get(key)
        if flow is None or now - flow.last_seen >= self.config.flow_idle_timeout:
            info = parse_inner(memoryview(datagram)[offset:])
            if info is None:
                return self._malformed("malformed_inner")
            flow = _Flow()
            flow.initiator = (info[0], ip_address(info[1]), ip_address(info[2]), info[4])
            self._judge(flow)
            self._flows[key] = flow
            self.flows += 1
        elif flow.gen != self._gen:
            self._judge(flow)
        flow.last_seen = now
        if not flow.allowed:
            return self._drop("denied")
        self.packets_out += 1
        return _tuple_new(Reply, (datagram,))

    def expire(self, now: float) -> int:
        timeout = self.config.flow_idle_timeout
        idle = [k for k, f in self._flows.items() if now - f.last_seen >= timeout]
        for key in idle:
            del self._flows[key]
        return len(idle)

    def _judge(self, flow: _Flow) -> None:
        proto, src, dst, dport = flow.initiator
        inside = self.config.inside
        inbound = not _in_any(src, inside) if inside else True
        flow.allowed, flow.rule, flow.gen = True, None, self._gen
        for index, rule in enumerate(self.config.rules):
            if rule.matches(proto, src, dst, dport, inbound):
                flow.allowed, flow.rule = rule.action == ALLOW, index
                self.rule_flows[index] += 1
                break

    def _drop(self, reason: str) -> Drop:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        return Drop(reason)

    def _malformed(self, reason: str) -> Drop:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1
        return Drop(reason)

    def snapshot(self) -> dict:
        return {
            "flows": self.flows,
            "active_flows": len(self._flows),
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "dropped": dict(sorted(self.dropped.items())),
            "malformed": dict(sorted(self.malformed.items())),
            "rule_flows": list(self.rule_flows),
            "drop_all": self.config.drop_all,
        }
