"""A Network Load Balancer node, sans-IO (reference §3).

The kernel forwards: each node is a namespace whose nftables table DNATs new
connections to a target and lets conntrack pin them for life. This module is the
pure part: which targets a node may send new connections to (`routable_targets`)
and the node's ruleset (`node_ruleset`). The daemon feeds it health and
registration changes and applies the result with `nft -f`; no byte goes through
Python.

How AWS's behaviour maps onto the ruleset:

- TCP hashes on the 5-tuple and the sequence number, so a connection's target is
  a random pick kept for its life: `numgen random`, pinned by conntrack. UDP hashes
  on the 5-tuple (`jhash`), so a flow keeps its target until it idles out.
  `stickiness.type=source_ip` hashes on the client address alone.
- Idle timeouts are conntrack timeout objects: the listener's
  `tcp.idle_timeout.seconds` (named `tcp_<seconds>`, so a change never has to
  delete one in use) and 120 s for UDP.
- A TCP segment that is neither a SYN nor part of a known connection (after an
  idle timeout, a termination, or a node restart) gets a RST, as at AWS.
- Packets to ports without a listener, and ICMP, are dropped.
- `preserve_client_ip.enabled` off: the target sees the node's private IP (SNAT).
  On: the client's own address; the VPC router returns the replies to the node
  by connection mark. Traffic from an interface endpoint is always translated to
  the node's IP (PrivateLink never preserves the client IP).
- `proxy_protocol_v2.enabled`: direct traffic on that TCP listener is redirected
  to a local relay (`pp2_relay`), which writes the header and connects back to
  the listener address; that connection is dispatched by the same rule in the
  `output` hook. Traffic from an interface endpoint already carries the header
  (the endpoint writes it, knowing the consumer, its own IP and its ID).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

HEALTHY, UNHEALTHY, INITIAL, DRAINING, UNUSED, UNAVAILABLE = (
    "healthy", "unhealthy", "initial", "draining", "unused", "unavailable")
UDP_IDLE_TIMEOUT = 120  # fixed at AWS
SNAT_MARK = 0x1  # new connections the node translates to its own IP
TABLE = "nlb"
CHAINS = ("raw", "dispatch", "dispatch_out", "postrouting", "forward", "input")


@dataclass(frozen=True)
class TargetView:
    """A registered target as a node sees it: where it is and its health state."""

    id: str
    ip: str
    port: int
    az: str
    state: str = INITIAL


@dataclass(frozen=True)
class ListenerConfig:
    name: str
    protocol: str  # TCP, UDP or TCP_UDP
    port: int
    target_group: str
    idle_timeout: int = 350  # TCP only
    preserve_client_ip: bool = False
    proxy_protocol_v2: bool = False
    cross_zone: bool = False  # the target group's effective setting
    source_ip_stickiness: bool = False
    relay_port: int = 0  # the local PPv2 relay, when proxy_protocol_v2 is on

    @property
    def protocols(self) -> tuple[str, ...]:
        return ("tcp", "udp") if self.protocol == "TCP_UDP" else (self.protocol.lower(),)


@dataclass(frozen=True)
class NodeConfig:
    load_balancer: str
    availability_zone: str
    node_ip: str
    link_ips: tuple[str, ...] = ()  # the node's side of its interface endpoint links
    listeners: tuple[ListenerConfig, ...] = ()
    hash_seed: int = field(default=0)

    @classmethod
    def from_dict(cls, data: Mapping) -> "NodeConfig":
        listeners = tuple(ListenerConfig(**li) for li in data.get("listeners", ()))
        return cls(data["load_balancer"], data["availability_zone"], data["node_ip"],
                   tuple(data.get("link_ips", ())), listeners,
                   zlib.crc32(data["load_balancer"].encode()) & 0xFFFFFFFF)

    def addresses(self) -> tuple[str, ...]:
        return (self.node_ip, *self.link_ips)


def routable_targets(targets: Iterable[TargetView], az: str, cross_zone: bool) -> list[TargetView]:
    """The targets a node in `az` sends new connections to (reference §3.3, §3.6).

    In scope: every registered target with cross-zone on, else those of the node's
    AZ; draining and unused ones never take new connections. Healthy ones win.
    With none healthy the node fails open to all in scope (initial and unhealthy
    alike): per AZ with cross-zone off, across AZs with it on.
    """
    scope = [t for t in targets if t.state not in (DRAINING, UNUSED) and (cross_zone or t.az == az)]
    healthy = [t for t in scope if t.state == HEALTHY]
    return sorted(healthy or scope, key=lambda t: (t.ip, t.port))


def zone_in_service(targets: Iterable[TargetView], az: str, cross_zone: bool) -> bool:
    """Whether DNS keeps this node's AZ: it has a healthy target in scope (§3.1)."""
    return any(t.state == HEALTHY for t in targets if cross_zone or t.az == az)


def _set(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _pick(listener: ListenerConfig, protocol: str, targets: Sequence[TargetView], seed: int) -> str:
    elements = ", ".join(f"{i} : {t.ip} . {t.port}" for i, t in enumerate(targets))
    if listener.source_ip_stickiness:
        index = f"jhash ip saddr mod {len(targets)} seed {seed:#x}"
    elif protocol == "udp":
        index = f"jhash ip saddr . udp sport . ip daddr . udp dport mod {len(targets)} seed {seed:#x}"
    else:  # the sequence number is in AWS's TCP hash: a fresh pick per connection
        index = f"numgen random mod {len(targets)}"
    return f"dnat ip to {index} map {{ {elements} }}"


def node_ruleset(config: NodeConfig, routable: Mapping[str, Sequence[TargetView]], update: bool = False) -> str:
    """The node's whole nftables table; `routable` maps listener names to their targets.

    With `update`, every chain is flushed first, in the same transaction, and the
    table is declared again: existing connections keep their conntrack entries and
    their timeout objects (which are never deleted).
    """
    here = _set(config.addresses())
    listen = [(li, proto) for li in config.listeners for proto in li.protocols]
    timeouts = sorted({li.idle_timeout for li, proto in listen if proto == "tcp"})
    out = [f"flush chain ip {TABLE} {chain}" for chain in CHAINS] if update else []
    out.append(f"table ip {TABLE} {{")
    for seconds in timeouts:
        out += [f"\tct timeout tcp_{seconds} {{", "\t\tprotocol tcp; l3proto ip;",
                f"\t\tpolicy = {{ established: {seconds} }}", "\t}"]
    if any(proto == "udp" for _, proto in listen):
        out += ["\tct timeout udp_idle {", "\t\tprotocol udp; l3proto ip;",
                f"\t\tpolicy = {{ unreplied: {UDP_IDLE_TIMEOUT}, replied: {UDP_IDLE_TIMEOUT} }}", "\t}"]
    out += ["\tchain raw {", "\t\ttype filter hook prerouting priority raw; policy accept;"]
    for li, proto in listen:
        timeout = f"tcp_{li.idle_timeout}" if proto == "tcp" else "udp_idle"
        out.append(f"\t\tip daddr {here} {proto} dport {li.port} ct timeout set \"{timeout}\"")
    out += ["\t}", "\tchain dispatch {", "\t\ttype nat hook prerouting priority dstnat; policy accept;",
            # neither a SYN nor a known connection: not dispatched, so the input chain resets it
            "\t\ttcp flags & (fin | syn | rst | ack) != syn return",
            f"\t\tiifname != \"eth0\" meta mark set {SNAT_MARK:#x} comment \"PrivateLink: targets see the node\""]
    out_rules = []
    for li, proto in listen:
        targets = routable.get(li.name, ())
        if not targets:
            continue
        match = f"ip daddr {here} {proto} dport {li.port}"
        if proto == "tcp" and li.proxy_protocol_v2 and li.relay_port:
            out.append(f"\t\tiifname \"eth0\" {match} redirect to :{li.relay_port} comment \"PPv2 relay\"")
        mark = "" if li.preserve_client_ip else f"meta mark set {SNAT_MARK:#x} "
        out.append(f"\t\t{match} {mark}{_pick(li, proto, targets, config.hash_seed)}")
        if proto == "tcp" and li.proxy_protocol_v2 and li.relay_port:
            # the relay's own connection to the listener: dispatched, and from the node's IP
            out_rules.append(f"\t\tip daddr {config.node_ip} tcp dport {li.port} "
                             f"{_pick(li, proto, targets, config.hash_seed)}")
    out += ["\t}", "\tchain dispatch_out {", "\t\ttype nat hook output priority -100; policy accept;",
            *out_rules, "\t}",
            "\tchain postrouting {", "\t\ttype nat hook postrouting priority srcnat; policy accept;",
            f"\t\tmeta mark {SNAT_MARK:#x} snat ip to {config.node_ip}", "\t}",
            "\tchain forward {", "\t\ttype filter hook forward priority filter; policy drop;",
            "\t\tct state established,related accept",
            "\t\tct state new ct status dnat accept", "\t}",
            "\tchain input {", "\t\ttype filter hook input priority filter; policy drop;",
            "\t\tct state established,related accept", "\t\tiifname \"lo\" accept"]
    tcp_ports = sorted({li.port for li, proto in listen if proto == "tcp"})
    relay_ports = sorted({li.relay_port for li, proto in listen
                          if proto == "tcp" and li.proxy_protocol_v2 and li.relay_port})
    if relay_ports:
        out.append(f"\t\ttcp dport {_set([str(p) for p in relay_ports])} ct status dnat accept")
    if tcp_ports:
        ports = _set([str(p) for p in tcp_ports])
        out += [f"\t\tip daddr {here} tcp dport {ports} tcp flags & (fin | syn | rst | ack) != syn "
                "reject with tcp reset comment \"no such connection\""]
    out += ["\t}", "}"]
    return "\n".join(out) + "\n"


def listener_routes(config: NodeConfig, targets_of_group: Mapping[str, Sequence[TargetView]]
                    ) -> dict[str, list[TargetView]]:
    """`routable` for `node_ruleset`: each listener's targets, from its group's."""
    return {li.name: routable_targets(targets_of_group.get(li.target_group, ()), config.availability_zone,
                                      li.cross_zone)
            for li in config.listeners}
