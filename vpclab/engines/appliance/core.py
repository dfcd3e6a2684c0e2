"""The reference GWLB appliance, sans-IO: echo what GWLB sends, or drop it.

A one-arm appliance (reference §1.2) returns each GENEVE datagram with its
header byte for byte (the cookie included, so a reused 5-tuple's new cookie is
echoed at once) and the inner packet unchanged. The outer IP/UDP swap belongs
to the shell.

Optional rules, from a lab file (parsed and validated by
`vpclab.model.appliance.ApplianceConfig`, re-exported here):

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

from ipaddress import ip_address
from typing import NamedTuple

from vpclab.engines.io.geneve import HEADER_LEN, GeneveError, decode, parse_inner

# The configuration is pure and lives in the model (the lab loader validates an
# instance's `Appliance` with it); re-exported here so existing imports keep working.
from vpclab.model.appliance import (  # noqa: F401
    ALLOW,
    ANY,
    DENY,
    INBOUND,
    OUTBOUND,
    PROTOCOLS,
    ApplianceConfig,
    ApplianceConfigError,
    Network,
    Rule,
    in_any as _in_any,
    parse_rules,
)


class Reply(NamedTuple):
    """Send `datagram` back to the GWLB node that sent it (the received bytes, unchanged)."""
    datagram: bytes | memoryview


class Drop(NamedTuple):
    reason: str


_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__ (hot path)


class _Flow:
    __slots__ = ("initiator", "allowed", "rule", "last_seen", "gen", "head")


class Appliance:
    """Echo GWLB's GENEVE datagrams, enforcing per-flow verdicts."""

    def __init__(self, config: ApplianceConfig | None = None) -> None:
        self._flows: dict[tuple[int, int], _Flow] = {}
        # A flow's 40-byte header as first received: GWLB repeats it on every packet,
        # so most packets are one lookup here, with no decode (the bytes were valid once).
        self._by_header: dict[bytes, _Flow] = {}
        self._gen = 0
        self.flows = 0
        self.packets_in = 0
        self.dropped: dict[str, int] = {}
        self.malformed: dict[str, int] = {}
        self.configure(config or ApplianceConfig())

    def configure(self, config: ApplianceConfig) -> None:
        """Swap the rules live; each flow is judged again, by its initiator, on its next packet."""
        self.config = config
        self._idle_timeout = config.flow_idle_timeout
        self.rule_flows = [0] * len(config.rules)
        self._gen += 1

    def handle(self, datagram: bytes | memoryview, now: float) -> Reply | Drop:
        self.packets_in += 1
        head = datagram[:HEADER_LEN]
        if type(head) is not bytes:
            head = bytes(head)
        flow = self._by_header.get(head)
        if (flow is not None and flow.gen == self._gen
                and now - flow.last_seen < self._idle_timeout):
            flow.last_seen = now
            if not flow.allowed:
                return self._drop("denied")
            return _tuple_new(Reply, (datagram,))
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
            if flow is not None:
                self._by_header.pop(flow.head, None)
            flow = _Flow()
            flow.initiator = (info[0], ip_address(info[1]), ip_address(info[2]), info[4])
            flow.head = header.raw
            self._judge(flow)
            self._flows[key] = flow
            if offset == HEADER_LEN:
                self._by_header[head] = flow
            self.flows += 1
        elif flow.gen != self._gen:
            self._judge(flow)
        flow.last_seen = now
        if not flow.allowed:
            return self._drop("denied")
        return _tuple_new(Reply, (datagram,))

    def expire(self, now: float) -> int:
        timeout = self.config.flow_idle_timeout
        idle = [k for k, f in self._flows.items() if now - f.last_seen >= timeout]
        for key in idle:
            self._by_header.pop(self._flows.pop(key).head, None)
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

    @property
    def packets_out(self) -> int:
        """Every packet in is replied to or dropped (and counted as such): no counter per reply."""
        return self.packets_in - sum(self.dropped.values()) - sum(self.malformed.values())

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
