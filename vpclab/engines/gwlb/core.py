"""A Gateway Load Balancer node, sans-IO (reference §2).

One node serves one AZ. Raw inner IP packets arrive from GWLB endpoints
(`from_endpoint`) and leave GENEVE-encapsulated towards a target appliance
(`Encap`); the appliance's GENEVE datagrams come back (`from_appliance`) and
their inner packets return to the endpoint (`Decap`). Nothing here does I/O or
reads a clock: callers pass `now` (seconds, monotonic), and every packet gets a
result, never an exception, so the shell needs no error handling per packet.

Choices where AWS leaves room (reference: **uncertain**):

- `initial` targets get no new flows while any in-scope target is healthy. With
  none healthy the node fails open: a new flow is pinned, by its hash, to any
  in-scope target that is `healthy`, `unhealthy` or `initial`, never to
  `draining` or `unused` ones, and stays there for life under `no_rebalance`.
- A returned datagram must match a live flow by endpoint ID and cookie.
  Otherwise it is dropped as `stale_cookie`, or, with `drop_stale_cookie` off,
  its inner packet goes back to its endpoint if that endpoint is attached.
- A TCP packet without a flow starts one even if it is not a SYN
  (`new_flow_on_non_syn`, default on), so flows survive a node restart.
- With `send_tcp_reset.on_idle_timeout.enabled`, a non-SYN TCP packet without
  a flow is answered with a RST to its sender and dropped, and a TCP flow that
  idles out gets a RST to each of its ends (both sent the flow's traffic),
  built from the last acknowledgment each end sent, so that it lands exactly
  at the receiver's next expected sequence number. Flows keyed on 3 or 2
  tuples remember up to `MAX_RESET_CONNECTIONS` connections for this.
- A RST ends a 5-tuple TCP flow: it lingers `RESET_LINGER` seconds so the RST's
  own return matches, and a new SYN on it starts a new flow with a new cookie.
- Non-first fragments carry no ports, so they hash on the 3-tuple.
- Target choice is rendezvous hashing of the flow over the candidates' ids, both
  salted by the load balancer's `hash_seed`: a restarted node maps a flow to the
  target it had whenever that target still stands (its cookie is new).
- When the deregistration delay ends the target leaves the group (no new
  flows, no health checks). With `no_rebalance` its existing flows keep going
  to it, and its GENEVE replies are still taken, until each flow idles out
  (350 s TCP or the listener's value, 120 s others): AWS closes them only when
  idle, and a busy flow never is. With `rebalance` they are rehashed to a
  target still registered on their next packet.
"""
from __future__ import annotations

import zlib
from collections import deque
from typing import Iterable, NamedTuple

from vpclab.engines.gwlb.config import (
    FIVE_TUPLE, NO_REBALANCE, REBALANCE, THREE_TUPLE, TWO_TUPLE, GwlbConfig,
)
from vpclab.engines.gwlb.targets import HEALTHY, UNHEALTHY, UNUSED, GwlbTargets, Target, _endpoint_int
from vpclab.engines.io.geneve import (
    ETH_P_IP, ETH_P_IPV6, HEADER_LEN, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN,
    GeneveError, GwlbHeader, decode, int_to_vpce_id, parse_inner, tcp_reset, tcp_sequence,
)

RESET_LINGER = 10.0
MAX_RESET_CONNECTIONS = 64  # per flow, when RSTs are on and several connections share a flow
# Peak*PerSecond: the highest 10-second average within a CloudWatch period.
PEAK_WINDOW = 10.0
METRIC_PERIOD = 60.0
# The UDP source port of a flow's GENEVE datagrams: IANA's dynamic range.
SRC_PORT_BASE = 49152
SRC_PORT_BITS = 14

_NO_PROTO = 256  # 2-tuple keys: never a real IP protocol number


class Encap(NamedTuple):
    """Send `datagram` (GENEVE header + inner) over UDP from `src_port` to `target_ip`:6081."""
    target_ip: str
    src_port: int
    datagram: bytes


class Decap(NamedTuple):
    """Deliver `inner` (a view into the received datagram) to endpoint `endpoint_id`."""
    endpoint_id: int
    inner: memoryview


class Drop(NamedTuple):
    reason: str


class Reset(NamedTuple):
    """Send `packet`, a TCP RST this node made, out of endpoint `endpoint_id`."""
    endpoint_id: int
    packet: bytes


class PeakRate:
    """`PeakBytesPerSecond` and `PeakPacketsPerSecond`: the highest 10-second
    average of two running totals within the last 60 s (one CloudWatch period).

    `sample` takes the totals at any times (a node's housekeeping tick); a
    window closes at the first sample 10 s or more after it opened."""

    def __init__(self) -> None:
        self._opened: tuple[float, int, int] | None = None
        self._closed: deque[tuple[float, float, float]] = deque()  # (closed at, bytes/s, packets/s)

    def sample(self, now: float, total_bytes: int, total_packets: int) -> None:
        opened = self._opened
        if opened is None or now - opened[0] >= PEAK_WINDOW:
            if opened is not None:
                elapsed = now - opened[0]
                self._closed.append((now, (total_bytes - opened[1]) / elapsed,
                                     (total_packets - opened[2]) / elapsed))
            self._opened = (now, total_bytes, total_packets)
        while self._closed and now - self._closed[0][0] > METRIC_PERIOD:
            self._closed.popleft()

    def peak(self) -> tuple[float, float]:
        """(bytes/s, packets/s); each the maximum over the period's closed windows, 0 if none."""
        return (max((w[1] for w in self._closed), default=0.0),
                max((w[2] for w in self._closed), default=0.0))


_drops: dict[str, Drop] = {}
_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__ (hot path)


class _Flow:
    __slots__ = ("key", "endpoint_id", "cookie", "header", "hash", "src_port", "target",
                 "last_seen", "timeout", "gen", "reset", "acks")


# How many parts of the 5-tuple each stickiness type keys on.
_KEY_PARTS = {FIVE_TUPLE: 5, THREE_TUPLE: 3, TWO_TUPLE: 2}


def _key(endpoint_id: int, parts: int, proto: int, src: bytes, dst: bytes, sport: int, dport: int) -> tuple:
    # Order the two ends so both directions of a flow get the same key.
    if src < dst or (src == dst and sport <= dport):
        lo, lo_port, hi, hi_port = src, sport, dst, dport
    else:
        lo, lo_port, hi, hi_port = dst, dport, src, sport
    if parts == 5 and (proto == IPPROTO_TCP or proto == IPPROTO_UDP):
        return endpoint_id, proto, lo, lo_port, hi, hi_port
    if parts == 2:
        return endpoint_id, _NO_PROTO, lo, 0, hi, 0
    return endpoint_id, proto, lo, 0, hi, 0


def flow_key(packet: bytes | memoryview, stickiness: str = FIVE_TUPLE) -> tuple | None:
    """The direction-independent flow key of an inner IP packet, or None if malformed.

    `(proto, low address, low port, high address, high port)`: the 5-tuple for
    TCP/UDP, ports 0 (the 3-tuple) otherwise or with `source_ip_dest_ip_proto`
    stickiness, and proto 256 too with `source_ip_dest_ip`.
    """
    if stickiness not in _KEY_PARTS:
        raise ValueError(f"unknown stickiness {stickiness!r}")
    info = parse_inner(packet)
    if info is None:
        return None
    proto, src, dst, sport, dport = info[:5]
    return _key(0, _KEY_PARTS[stickiness], proto, src, dst, sport, dport)[1:]


class FastPathHooks:
    """What GwlbNode offers a fast path, an in-kernel data path for established flows
    (its state is GwlbNode's)."""

    @property
    def generation(self) -> int:
        """Changes whenever targets change (health, registration, draining, settings):
        a fast path must then drop what it carries, so that each flow's next packet
        comes here and is revalidated."""
        return self._gen

    def may_offload(self, proto: int) -> bool:
        """Whether a flow of this inner protocol may ride a fast path once it is
        established. Not TCP while RSTs are on: they need each ACK (`_note_ack`)."""
        return not (proto == IPPROTO_TCP and self._send_tcp_reset)

    def flow_seen(self, header: bytes, last_seen: float, packets: int, size: int) -> bool:
        """Fold in what a fast path carried from an endpoint for the flow whose GENEVE
        header is `header`: `packets` inner packets of `size` bytes in all since the
        last call, the latest at `last_seen`. False if that flow is gone: the fast
        path must forget it."""
        flow = self._by_header.get(header)
        if flow is None:
            return False
        if last_seen > flow.last_seen:
            flow.last_seen = last_seen
        self.processed_packets += packets
        self.processed_bytes += size
        return True

    def has_flow(self, header: bytes) -> bool:
        """Whether the flow whose GENEVE header is `header` is still in the table."""
        return header in self._by_header

    def take_resets(self) -> list[Reset]:
        """The RSTs made since the last call, to send out of their endpoints."""
        resets, self._resets = self._resets, []
        return resets


class GwlbNode(GwlbTargets, FastPathHooks):
    """The flow table, target choice and GENEVE encap/decap of one GWLB node."""

    def __init__(self, config: GwlbConfig | None = None, endpoints: Iterable[int | str] = (),
                 first_cookie: int = 0) -> None:
        """`first_cookie`: where the cookie sequence starts; a restarted node's own start keeps it
        from handing a dead node's cookies to other flows (appliances key verdicts on them)."""
        self._use(config or GwlbConfig())
        self._resets: list[Reset] = []
        self._endpoints: set[int] = {_endpoint_int(e) for e in endpoints}
        self._targets: dict[str, Target] = {}
        self._target_ips: frozenset[str] = frozenset()
        # Deregistered targets still carrying `no_rebalance` flows; dropped once those idle out.
        self._retired: set[Target] = set()
        self._healthy: list[Target] = []
        self._fallback: list[Target] = []
        self._healthy_keys: list[int] = []  # rendezvous keys of _healthy's targets, in its order
        self._fallback_keys: list[int] = []
        self._gen = 0  # bumped on every target change; flows revalidate lazily
        self._next_deadline = float("inf")  # earliest end of a deregistration delay
        self._flows: dict[tuple, _Flow] = {}
        self._by_cookie: dict[tuple[int, int], _Flow] = {}
        self._by_header: dict[bytes, _Flow] = {}
        self._flow_seq = first_cookie & 0xFFFFFFFF
        self._cookie_salt = zlib.crc32(self.config.hash_seed.to_bytes(8, "big", signed=True))
        self.new_flow_count = 0
        self.processed_bytes = 0
        self.processed_packets = 0
        self.peak_rate = PeakRate()
        self.unmatched_forwarded = 0
        self.tcp_resets_sent = 0
        self.drops: dict[str, int] = {}

    def reconfigure(self, config: GwlbConfig) -> None:
        """Apply new settings live. Flows keep their timeout and target; a stickiness
        change re-keys flows, so existing ones start afresh with new cookies."""
        self._use(config)
        self._targets_changed()

    def _use(self, config: GwlbConfig) -> None:
        """Take `config` and what the hot path reads of it as plain attributes."""
        self.config = config
        self._key_parts = _KEY_PARTS[config.stickiness]
        self._max_packet = config.max_packet
        self._send_tcp_reset = config.send_tcp_reset

    # --- packets --------------------------------------------------------------

    def from_endpoint(self, inner: bytes | memoryview, endpoint_id: int, now: float) -> Encap | Drop:
        """An inner IP packet from a GWLB endpoint → GENEVE towards its flow's target."""
        if now >= self._next_deadline:
            self._end_draining(now)
        size = len(inner)
        if size > self._max_packet:
            return self._drop("oversize")
        if endpoint_id not in self._endpoints:
            return self._drop("unknown_endpoint")
        info = parse_inner(inner)
        if info is None:
            return self._drop("malformed_inner")
        proto, src, dst, sport, dport, tcp_flags, length = info
        if length < size:  # link-layer padding
            inner = inner[:length]
            size = length
        key = _key(endpoint_id, self._key_parts, proto, src, dst, sport, dport)
        flow = self._flows.get(key)
        if (flow is None or now - flow.last_seen >= flow.timeout
                or (flow.reset and tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN)):
            if proto == IPPROTO_TCP and tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN:
                if self._send_tcp_reset:
                    if flow is not None and now - flow.last_seen >= flow.timeout:
                        self._end_idle(flow)
                    return self._refuse(inner, endpoint_id, src, dst, sport, dport, tcp_flags)
                if not self.config.new_flow_on_non_syn:
                    return self._drop("non_syn_without_flow")
            elif flow is not None and self._send_tcp_reset and now - flow.last_seen >= flow.timeout:
                self._end_idle(flow)
            flow = self._new_flow(key, endpoint_id, proto, src, dst, now)
            if flow is None:
                return self._drop("no_targets")
        elif flow.gen != self._gen:
            reason = self._revalidate(flow)
            if reason is not None:
                return self._drop(reason)
        flow.last_seen = now
        if proto == IPPROTO_TCP and self._send_tcp_reset:
            self._note_ack(flow, inner, src, dst, sport, dport, tcp_flags)
        if tcp_flags & TCP_RST and self._key_parts == 5:
            flow.reset = True
            flow.timeout = min(flow.timeout, RESET_LINGER)
        self.processed_bytes += size
        self.processed_packets += 1
        return _tuple_new(Encap, (flow.target.ip, flow.src_port, flow.header + inner))

    def from_appliance(self, datagram: bytes | memoryview, src_ip: str, now: float) -> Decap | Drop:
        """A GENEVE datagram back from an appliance → its inner packet to the endpoint."""
        if now >= self._next_deadline:
            self._end_draining(now)
        if src_ip not in self._target_ips:
            return self._drop("unknown_target")
        head = datagram[:HEADER_LEN]
        if type(head) is not bytes:
            head = bytes(head)
        flow = self._by_header.get(head)
        if flow is not None and now - flow.last_seen < flow.timeout:
            # Byte-identical to the header we sent: valid by construction.
            endpoint_id, offset = flow.endpoint_id, HEADER_LEN
        else:
            try:
                header, offset = decode(datagram)
            except GeneveError as error:
                return self._drop(error.reason)
            endpoint_id = header.endpoint_id
            flow = self._by_cookie.get((endpoint_id, header.flow_cookie))
            if flow is None or now - flow.last_seen >= flow.timeout:
                if self.config.drop_stale_cookie:
                    return self._drop("stale_cookie")
                if endpoint_id not in self._endpoints:
                    return self._drop("unknown_endpoint")
                self.unmatched_forwarded += 1
        size = len(datagram) - offset
        if size > self._max_packet:
            return self._drop("oversize")
        if size < 20 or (datagram[offset] >> 4) not in (4, 6):
            return self._drop("malformed_inner")
        return _tuple_new(Decap, (endpoint_id, memoryview(datagram)[offset:]))

    def expire(self, now: float) -> int:
        """Remove idle flows and end finished deregistrations; return flows removed.

        Call it about once a second: it also samples the Peak*PerSecond rates.
        With TCP resets on, the RSTs for idle flows wait in `take_resets`."""
        if now >= self._next_deadline:
            self._end_draining(now)
        self.peak_rate.sample(now, self.processed_bytes, self.processed_packets)
        idle = [f for f in self._flows.values() if now - f.last_seen >= f.timeout]
        for flow in idle:
            self._end_idle(flow)
        if self._retired:
            self._drop_unused_retired()
        return len(idle)

    # --- TCP resets (send_tcp_reset.on_idle_timeout.enabled) -------------------------

    def _note_ack(self, flow: _Flow, inner: bytes | memoryview, src: bytes, dst: bytes,
                  sport: int, dport: int, tcp_flags: int) -> None:
        """Remember the last acknowledgment each end of each connection sent: a RST
        to that end carries it as its sequence number."""
        acks = flow.acks
        if tcp_flags & TCP_RST:
            acks.pop((src, sport, dport), None)
            acks.pop((dst, dport, sport), None)
            return
        if not tcp_flags & TCP_ACK or not (sport or dport):  # no ACK yet, or a fragment
            return
        segment = tcp_sequence(inner)
        if segment is None:
            return
        end = (src, sport, dport)
        if end not in acks and len(acks) >= MAX_RESET_CONNECTIONS:
            del acks[next(iter(acks))]  # the connection heard from least recently
        acks.pop(end, None)
        acks[end] = (dst, segment[1])

    def _end_idle(self, flow: _Flow) -> None:
        """Forget an idle flow; with TCP resets on, first reset both ends of each of
        its connections (a flow ended by a RST already was)."""
        self._forget(flow)
        if not self._send_tcp_reset or flow.reset:
            return
        for (src, sport, dport), (dst, ack) in flow.acks.items():
            self._resets.append(Reset(flow.endpoint_id, tcp_reset(dst, src, dport, sport, ack)))
            self.tcp_resets_sent += 1

    def _refuse(self, inner: bytes | memoryview, endpoint_id: int, src: bytes, dst: bytes,
                sport: int, dport: int, tcp_flags: int) -> Reset | Drop:
        """A non-SYN TCP packet without a flow: a RST back to its sender, as RFC 9293
        §3.10.7.1 builds one (none for a RST or a segment without ports), and no flow."""
        self._drop("non_syn_without_flow")
        segment = tcp_sequence(inner)
        if tcp_flags & TCP_RST or segment is None or not (sport or dport):
            return _drops["non_syn_without_flow"]
        seq, ack, length = segment
        if tcp_flags & TCP_ACK:
            packet = tcp_reset(dst, src, dport, sport, ack)
        else:
            packet = tcp_reset(dst, src, dport, sport, 0, seq + length)
        self.tcp_resets_sent += 1
        return Reset(endpoint_id, packet)

    def _drop(self, reason: str) -> Drop:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        drop = _drops.get(reason)
        if drop is None:
            drop = _drops[reason] = Drop(reason)
        return drop

    def _new_flow(self, key: tuple, endpoint_id: int, proto: int, src: bytes, dst: bytes,
                  now: float) -> _Flow | None:
        old = self._flows.get(key)
        if old is not None:
            self._forget(old)
        _, kproto, lo, lo_port, hi, hi_port = key
        flow_hash = zlib.crc32(lo + hi + bytes((kproto >> 8, kproto & 0xFF, lo_port >> 8,
                                                lo_port & 0xFF, hi_port >> 8, hi_port & 0xFF)),
                               self._cookie_salt)
        target = self._pick(flow_hash)
        if target is None:
            return None
        self._flow_seq += 1
        # A bijection of the sequence number: unique among 2**32 flows, yet not guessable at a glance.
        cookie = (self._flow_seq * 0x9E3779B1 + self._cookie_salt) & 0xFFFFFFFF
        flow = _Flow()
        flow.key = key
        flow.endpoint_id = endpoint_id
        flow.cookie = cookie
        flow.header = GwlbHeader(protocol=ETH_P_IP if len(src) == 4 else ETH_P_IPV6,
                                 endpoint_id=endpoint_id, flow_cookie=cookie).raw
        flow.hash = flow_hash
        flow.src_port = SRC_PORT_BASE + (flow_hash >> (32 - SRC_PORT_BITS))
        flow.target = target
        flow.last_seen = now
        flow.timeout = (self.config.tcp_idle_timeout if proto == IPPROTO_TCP
                        else self.config.non_tcp_idle_timeout)
        flow.gen = self._gen
        flow.reset = False
        flow.acks = {}
        self._flows[key] = flow
        self._by_cookie[endpoint_id, cookie] = flow
        self._by_header[flow.header] = flow
        self.new_flow_count += 1
        return flow

    def _revalidate(self, flow: _Flow) -> str | None:
        """Apply target changes to a flow; return a drop reason if it cannot be sent."""
        target = flow.target
        cfg = self.config
        if target.removed:
            if cfg.on_deregistration == NO_REBALANCE:
                flow.gen = self._gen  # stays on its deregistered target until it idles out
                return None
            moved = self._pick(flow.hash)
            if moved is None:
                return "no_targets"
            flow.target = moved
        elif target.state in (UNHEALTHY, UNUSED) and cfg.on_unhealthy == REBALANCE:
            moved = self._pick(flow.hash, healthy_only=True)
            if moved is not None:
                flow.target = moved
        flow.gen = self._gen
        return None

    def _forget(self, flow: _Flow) -> None:
        del self._flows[flow.key]
        del self._by_cookie[flow.endpoint_id, flow.cookie]
        del self._by_header[flow.header]

    # --- status ---------------------------------------------------------------

    def snapshot(self) -> dict:
        """Counters named after AWS/GatewayELB metrics, plus drops, targets and endpoints.

        `ActiveFlowCount` includes idle flows not yet removed: call `expire` first.
        `ProcessedBytes` counts each inner packet once, as it enters from an endpoint;
        `PeakBytesPerSecond` and `PeakPacketsPerSecond` are the highest 10-second
        averages of those packets in the last 60 s, as sampled by `expire`.
        Host counts cover the targets this node may use (its AZ, or all with cross-zone).
        """
        cfg = self.config
        scope = [t for t in self._targets.values() if cfg.cross_zone or t.az == cfg.availability_zone]
        peak_bytes, peak_packets = self.peak_rate.peak()
        return {
            "AvailabilityZone": cfg.availability_zone,
            "ActiveFlowCount": len(self._flows),
            "NewFlowCount": self.new_flow_count,
            "ProcessedBytes": self.processed_bytes,
            "PeakBytesPerSecond": round(peak_bytes, 1),
            "PeakPacketsPerSecond": round(peak_packets, 1),
            "HealthyHostCount": sum(t.state == HEALTHY for t in scope),
            "UnHealthyHostCount": sum(t.state == UNHEALTHY for t in scope),
            "drops": dict(sorted(self.drops.items())),
            "unmatched_forwarded": self.unmatched_forwarded,
            "tcp_resets_sent": self.tcp_resets_sent,
            "endpoints": [int_to_vpce_id(e) for e in sorted(self._endpoints)],
            "targets": [{"id": t.id, "ip": t.ip, "az": t.az, "state": t.state, "since": t.since}
                        for t in self.targets()],
        }
