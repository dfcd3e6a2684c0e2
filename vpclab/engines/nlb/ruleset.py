"""A Network Load Balancer node, sans-IO (reference §3).

The kernel forwards: each node is a namespace whose nftables table DNATs new
connections to a target and lets conntrack pin them for life. A packet of an
established connection pays for every base chain on its hooks, so a node has
only the chains its listeners and endpoints need, and decisions are taken in nat
chains (a connection's first packet) wherever they can be. This module is the
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
  delete one in use) and 120 s for UDP, set by the dispatching rule on the
  connection conntrack has just created.
- A TCP segment that is neither a SYN nor part of a known connection (after an
  idle timeout, a termination, or a node restart) gets a RST, as at AWS.
- Packets to ports without a listener, and ICMP, are dropped.
- `preserve_client_ip.enabled` off: the target sees the node's private IP (SNAT).
  On: the client's own address; the VPC router returns the replies to the node
  by connection mark. Traffic from an interface endpoint is always translated to
  the node's IP (PrivateLink never preserves the client IP).
- Interface endpoints: each endpoint ENI is a veth from the consumer VPC's router into the
  provider VPC's router, which dispatches what it can itself (below) and passes the rest,
  unchanged, to this namespace over a veth of its own per ENI. The consumer's and the
  provider's CIDRs may be the same, and two consumers may send identical tuples,
  so every endpoint has a conntrack zone of its own, set by the endpoint link
  before conntrack (`priority raw`) for the original direction only: consumers'
  connections stay apart, while the targets' replies, whose tuples NAT made
  unique, find their connection on `eth0` without any zone. Conntrack alone
  translates (DNAT to the target, SNAT to the node's IP, and back): no header
  byte is rewritten in nftables, which a user namespace may refuse (EPERM on
  6.18). Replies find their way back to the consumer by connection mark (one per
  endpoint link, routed by the plan's ip rules). Only the ENI's IP passes on its
  link, and nothing at all while the endpoint is not `available`.
- `proxy_protocol_v2.enabled`: TCP connections on that listener are redirected
  to a local relay (`pp2_relay`), which writes the header and connects back to
  the listener address; that connection is dispatched by the same rule in the
  `output` hook. Direct clients go to the relay on the node's IP; each interface
  endpoint has its own relay on its link address, which adds the endpoint ID and
  the ENI's IP. With the client IP preserved, the direct relay connects from the
  client's address (IP_TRANSPARENT); its connections carry `relay_mark`, and the
  plan routes replies with that mark to the node itself.

The router fast path (`router_fastpath_ruleset`): in a VPC where no flow crosses the
router twice (plan.elbv2.nlb.router_fast_path), the VPC router itself dispatches the new
connections of in-VPC clients to a node, with the node's rules (same pick, same seed, same
timeouts, SNAT to the node's IP unless the client IP is preserved), in one forwarding pass
instead of three. Only listeners without Proxy Protocol v2 whose targets all sit inside the
VPC's CIDR; everything else (health checks, relays, RSTs for unknown segments, which the router
does not dispatch) stays with the node. Its connections carry `FAST_MARK`, by which the router's
filters (plan.ec2) check them as if they had crossed the node. It does the same for the
interface endpoints whose links end in it, which saves their connections a forwarding pass
(consumer router -> provider router -> target): each endpoint link's connections in the link's
zone, with the link's own mark (`ENDPOINT_FAST_MARK` and the two above), always translated to the
node's IP; the router routes them by that mark, both ways. What it does not dispatch from an
endpoint link (PPv2 listeners, unknown segments) passes unchanged to the node, whose endpoint
rules above take it as if the link ended there; while an endpoint is not `available`, nothing passes.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Iterable, Mapping, Sequence

HEALTHY, UNHEALTHY, INITIAL, DRAINING, UNUSED, UNAVAILABLE = (
    "healthy", "unhealthy", "initial", "draining", "unused", "unavailable")
UDP_IDLE_TIMEOUT = 120  # fixed at AWS
SNAT_MARK = 0x1  # new connections the node translates to its own IP
TABLE = "nlb"
# every chain the node's ip table may have, and its hook (`chains` picks a node's)
HOOKS = {
    "endpoints": "type filter hook prerouting priority raw; policy accept;",
    "replies": "type filter hook prerouting priority mangle; policy accept;",
    "dispatch": "type nat hook prerouting priority dstnat; policy accept;",
    "dispatch_out": "type nat hook output priority -100; policy accept;",
    "replies_out": "type route hook output priority mangle; policy accept;",
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "forward": "type filter hook forward priority filter; policy drop;",
    "input": "type filter hook input priority filter; policy drop;",
}
CHAINS = tuple(HOOKS)
# In a VPC router: connections it dispatched for a node, and those it also translated to the
# node's IP. Bits of their own: the router's reply marks (plan.ec2 NLB_REPLY_MARK) stay below.
FAST_MARK = 0x10000
FAST_SNAT_MARK = 0x20000
# In a provider VPC's router: connections from an interface endpoint it dispatched itself (marked
# with the link's own `router_mark`, which has this bit and the two above, plan.common).
ENDPOINT_FAST_MARK = 0x40000
ROUTER_TABLE = "nlb_fastpath"
ROUTER_HOOKS = {
    "endpoints": "type filter hook prerouting priority raw; policy accept;",
    "dispatch": "type nat hook prerouting priority dstnat; policy accept;",
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
}


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
class EndpointLinkConfig:
    """One interface endpoint ENI whose veth ends in this node."""

    vpc_endpoint_id: str
    ifname: str  # the node's side of the ENI's veth
    eni_ip: str  # the ENI's IP in the consumer VPC
    link_ip: str  # the node's own address on that veth: where its PPv2 relays listen
    mark: int  # connection mark of its connections; the plan routes it back out `ifname`
    zone: int  # conntrack zone of its connections' original direction (1..65535, unique in node and router)
    available: bool = False
    router_ifname: str = ""  # the provider router's side of the consumer's veth (`ifname` is its veth to us)
    router_mark: int = 0  # connection mark of those the router dispatches itself (plan.common)


@dataclass(frozen=True)
class NodeConfig:
    load_balancer: str
    availability_zone: str
    node_ip: str
    endpoints: tuple[EndpointLinkConfig, ...] = ()
    listeners: tuple[ListenerConfig, ...] = ()
    relay_mark: int = 0x2  # connection mark of transparent relays' connections; the plan routes it home
    hash_seed: int = field(default=0)
    router_fast_path: bool = False  # the VPC router may dispatch in-VPC clients itself (plan)
    vpc_cidr: str = ""  # only targets inside it are reached on the fast path
    router_ns: str = ""  # where the fast path's table lives

    @classmethod
    def from_dict(cls, data: Mapping) -> "NodeConfig":
        listeners = tuple(ListenerConfig(**li) for li in data.get("listeners", ()))
        endpoints = tuple(EndpointLinkConfig(**e) for e in data.get("endpoints", ()))
        return cls(data["load_balancer"], data["availability_zone"], data["node_ip"], endpoints, listeners,
                   data.get("relay_mark", 0x2), zlib.crc32(data["load_balancer"].encode()) & 0xFFFFFFFF,
                   data.get("router_fast_path", False), data.get("vpc_cidr", ""), data.get("router_ns", ""))

    def destinations(self) -> str:
        """Where a listener is reached: the node's IP on eth0, and each ENI's IP on its link."""
        if not self.endpoints:
            return f"ip daddr {self.node_ip}"
        pairs = [f"\"eth0\" . {self.node_ip}", *(f"\"{e.ifname}\" . {e.eni_ip}" for e in self.endpoints)]
        return f"iifname . ip daddr {{ {', '.join(pairs)} }}"  # a concatenation takes a set, even of one


def routable_targets(targets: Iterable[TargetView], az: str, cross_zone: bool) -> list[TargetView]:
    """The targets a node in `az` sends new connections to (reference §3.3, §3.6).

    In scope: every registered target with cross-zone on, else those of the node's
    AZ; draining and unused ones never take new connections. Healthy ones win.
    With none healthy the node fails open to all in scope (initial and unhealthy
    alike): per AZ with cross-zone off, across AZs with it on.
    """
    scope = [t for t in targets if t.state not in (DRAINING, UNUSED) and (cross_zone or t.az in (az, "all"))]
    healthy = [t for t in scope if t.state == HEALTHY]
    return sorted(healthy or scope, key=lambda t: (t.ip, t.port))


def zone_in_service(targets: Iterable[TargetView], az: str, cross_zone: bool) -> bool:
    """Whether one target group keeps this node's AZ in DNS: it has a healthy target in
    scope, the node's AZ with cross-zone off, any AZ with it on (§3.1)."""
    return any(t.state == HEALTHY for t in targets if cross_zone or t.az in (az, "all"))


def zone_in_dns(groups: Iterable[tuple[Sequence[TargetView], bool]], az: str) -> bool:
    """Whether DNS keeps this node's AZ, given each of the load balancer's target groups
    as (its targets, its cross-zone setting): every group with targets must keep it
    (§3.6, and §7 EvaluateTargetHealth). With no group holding a target, no AZ does."""
    with_targets = [(targets, cross_zone) for targets, cross_zone in groups if targets]
    return bool(with_targets) and all(zone_in_service(targets, az, cross_zone)
                                      for targets, cross_zone in with_targets)


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


def _relays(config: NodeConfig) -> list[ListenerConfig]:
    return [li for li in config.listeners if "tcp" in li.protocols and li.proxy_protocol_v2 and li.relay_port]


def chains(config: NodeConfig) -> tuple[str, ...]:
    """The chains of the node's ip table: only those it needs, as every base chain costs every
    packet that crosses its hook. `endpoints` zones and filters what comes in on endpoint links;
    `replies` marks endpoints' and transparent relays' replies;
    the output chains serve relays and endpoints only."""
    relays = _relays(config)
    transparent = any(li.preserve_client_ip for li in relays)
    needed = {"endpoints": bool(config.endpoints), "replies": bool(config.endpoints) or transparent,
              "dispatch_out": bool(relays), "replies_out": bool(config.endpoints) or transparent}
    return tuple(c for c in CHAINS if needed.get(c, True))


def _link_chain(e: EndpointLinkConfig) -> str:
    """An endpoint link's own regular chain, jumped to from `endpoints` for its packets only."""
    return "link_" + e.ifname.encode().hex()  # any interface name, as a plain nft identifier


def _reset(config: NodeConfig) -> list[str]:
    """The head of an update: every chain the node may have is declared (so a chain it now needs
    exists) and flushed; those it no longer needs are deleted. Existing connections keep their
    conntrack entries and timeout objects (which are never deleted)."""
    out = [f"add table ip {TABLE}"]
    needed = chains(config)
    for chain in CHAINS:
        out += [f"add chain ip {TABLE} {chain} {{ {HOOKS[chain]} }}", f"flush chain ip {TABLE} {chain}"]
        if chain not in needed:
            out.append(f"delete chain ip {TABLE} {chain}")
    for e in config.endpoints:  # the links never change while a lab is up, only whether they carry traffic
        out += [f"add chain ip {TABLE} {_link_chain(e)}", f"flush chain ip {TABLE} {_link_chain(e)}"]
    return out


def node_ruleset(config: NodeConfig, routable: Mapping[str, Sequence[TargetView]], update: bool = False) -> str:
    """The node's whole nftables ruleset; `routable` maps listener names to their targets.

    With `update`, the chains are reset first (`_reset`), in the same transaction, and the
    tables are declared again.
    """
    here = config.destinations()
    listen = [(li, proto) for li in config.listeners for proto in li.protocols]
    endpoints = config.endpoints
    present, relays = chains(config), _relays(config)
    out = _reset(config) if update else []
    out.append(f"table ip {TABLE} {{")
    out += _timeouts(listen)
    if endpoints:
        # Before conntrack, on an endpoint link only: its connections' original direction goes in
        # the endpoint's own zone (the reply direction stays in the default zone, where NAT made
        # it unique), and nothing but the ENI's IP passes, nothing at all unless it is available.
        links = ", ".join(f"\"{e.ifname}\" : goto {_link_chain(e)}" for e in endpoints)
        out += ["\tchain endpoints {", f"\t\t{HOOKS['endpoints']}", f"\t\tiifname vmap {{ {links} }}", "\t}"]
        for e in endpoints:
            out.append(f"\tchain {_link_chain(e)} {{")
            if e.available:
                out.append(f"\t\tip daddr {e.eni_ip} ct original zone set {e.zone} accept "
                           f"comment \"{e.vpc_endpoint_id}\"")
            out += ["\t\tdrop", "\t}"]
    if "replies" in present:
        # replies to endpoint clients and to transparent relays, routed by their connection mark
        out += ["\tchain replies {", f"\t\t{HOOKS['replies']}",
                "\t\tct direction reply ct mark != 0 meta mark set ct mark", "\t}"]
    # only a connection's first packet sees a nat chain: nothing here costs the packets after it
    out += ["\tchain dispatch {", f"\t\t{HOOKS['dispatch']}"]
    if endpoints:
        marks = ", ".join(f"\"{e.ifname}\" : {e.mark:#x}" for e in endpoints)
        out.append(f"\t\tct mark set iifname map {{ {marks} }} comment \"replies go back to the endpoint\"")
    out += [
            # neither a SYN nor a known connection: not dispatched, so input or forward resets it
            "\t\ttcp flags & (fin | syn | rst | ack) != syn return",
            f"\t\tiifname != \"eth0\" meta mark set {SNAT_MARK:#x} comment \"PrivateLink: targets see the node\""]
    out_rules, relay_marks = [], []
    for li, proto in listen:
        targets = routable.get(li.name, ())
        if not targets:
            continue
        match = f"{here} {proto} dport {li.port}"
        # the idle timeout of the connection conntrack has just created (it takes no template before it)
        timeout = f"ct timeout set \"{_timeout_name(li, proto)}\" "
        if li in relays and proto == "tcp":
            # to the relay on the address of the interface the client came in on: the node's IP,
            # or an endpoint's link address
            out.append(f"\t\t{match} {timeout}redirect to :{li.relay_port} comment \"PPv2 relay\"")
            # a relay's own connection to the listener: dispatched (from the node's IP, or
            # from the client's when it is preserved)
            out_rules.append(f"\t\tip daddr {config.node_ip} tcp dport {li.port} {timeout}"
                             f"{_pick(li, proto, targets, config.hash_seed)}")
            if li.preserve_client_ip:
                relay_marks.append(f"\t\tip daddr {config.node_ip} tcp dport {li.port} ct state new "
                                   f"ct mark set {config.relay_mark:#x} comment \"transparent relay\"")
        mark = "" if li.preserve_client_ip else f"meta mark set {SNAT_MARK:#x} "
        out.append(f"\t\t{match} {timeout}{mark}{_pick(li, proto, targets, config.hash_seed)}")
    out.append("\t}")
    if "dispatch_out" in present:
        out += ["\tchain dispatch_out {", f"\t\t{HOOKS['dispatch_out']}", *out_rules, "\t}"]
    if "replies_out" in present:
        # a relay's replies to a consumer, routed out its endpoint
        out += ["\tchain replies_out {", f"\t\t{HOOKS['replies_out']}",
                *relay_marks, "\t\tct direction reply ct mark != 0 meta mark set ct mark", "\t}"]
    out += ["\tchain postrouting {", f"\t\t{HOOKS['postrouting']}",
            f"\t\tmeta mark {SNAT_MARK:#x} snat ip to {config.node_ip}", "\t}"]
    out += ["\tchain forward {", f"\t\t{HOOKS['forward']}",
            "\t\tct state established,related accept",
            "\t\tct state new ct status dnat accept"]
    tcp_ports = sorted({li.port for li, proto in listen if proto == "tcp"})
    ports = _set([str(p) for p in tcp_ports]) if tcp_ports else ""
    unknown = "tcp flags & (fin | syn | rst | ack) != syn reject with tcp reset comment \"no such connection\""
    if endpoints and tcp_ports:  # an ENI's IP is not the node's: its segments are forwarded
        eni = "{ " + ", ".join(f"\"{e.ifname}\" . {e.eni_ip}" for e in endpoints) + " }"
        out.append(f"\t\tiifname . ip daddr {eni} tcp dport {ports} {unknown}")
    out += ["\t}",
            "\tchain input {", f"\t\t{HOOKS['input']}",
            "\t\tct state established,related accept", "\t\tiifname \"lo\" accept"]
    relay_ports = sorted({li.relay_port for li in relays})
    if relay_ports:
        out.append(f"\t\ttcp dport {_set([str(p) for p in relay_ports])} ct status dnat accept")
    if tcp_ports:
        out.append(f"\t\tip daddr {config.node_ip} tcp dport {ports} {unknown}")
    out += ["\t}", "}"]
    return "\n".join(out) + "\n"


def listener_routes(config: NodeConfig, targets_of_group: Mapping[str, Sequence[TargetView]]
                    ) -> dict[str, list[TargetView]]:
    """`routable` for `node_ruleset`: each listener's targets, from its group's."""
    return {li.name: routable_targets(targets_of_group.get(li.target_group, ()), config.availability_zone,
                                      li.cross_zone)
            for li in config.listeners}


def fast_listeners(config: NodeConfig, routable: Mapping[str, Sequence[TargetView]]
                   ) -> list[tuple[ListenerConfig, str, Sequence[TargetView]]]:
    """(listener, protocol, targets) the VPC router dispatches itself for this node: none unless the
    plan allows it; never a Proxy Protocol v2 listener (its relay is in the node); only while every
    target it routes to is inside the VPC's CIDR (elsewhere, the node's path is the plain one)."""
    if not config.router_fast_path or not config.vpc_cidr:
        return []
    cidr = ip_network(config.vpc_cidr)
    out = []
    for li in config.listeners:
        targets = routable.get(li.name, ())
        if li.proxy_protocol_v2 or not targets or any(ip_address(t.ip) not in cidr for t in targets):
            continue
        out += [(li, proto, targets) for proto in li.protocols]
    return out


def _endpoint_links(nodes: Sequence[tuple[NodeConfig, Mapping[str, Sequence[TargetView]]]]
                    ) -> list[tuple[NodeConfig, EndpointLinkConfig, list]]:
    """(node, endpoint link, its fast listeners) of every interface endpoint link ending in the
    router: a link takes the listeners the router dispatches for its node, none unless available."""
    return [(config, e, fast_listeners(config, routable) if e.available else [])
            for config, routable in nodes for e in config.endpoints if e.router_ifname]


def _endpoint_chains(links: list[tuple[NodeConfig, EndpointLinkConfig, list]]) -> list[str]:
    """Per endpoint link, its regular chains, before conntrack: `link_…` (from the consumer) puts
    what the router dispatches in the link's zone for the original direction only (the targets'
    replies, made unique by SNAT, come back in the default zone), everything else, which passes
    unchanged to the node, in the link's zone both ways, as `back_…` (from the node) does its replies:
    colliding consumers stay apart either way, and a connection keeps its entry when its listener
    moves from one kind to the other (a live change). Nothing passes while the endpoint is not
    `available`. `dispatch_link_…`: its connections' first packets, dispatched as the node would,
    with the link's mark (routing and SNAT)."""
    out = []
    for config, e, fast in links:
        out.append(f"\tchain {_link_chain(e)} {{")
        for proto in ("tcp", "udp"):
            ports = sorted({li.port for li, p, _ in fast if p == proto})
            if ports:
                out.append(f"\t\tip daddr {e.eni_ip} {proto} dport {_set([str(p) for p in ports])} "
                           f"ct original zone set {e.zone} accept comment \"{e.vpc_endpoint_id}\"")
        out += [f"\t\tct zone set {e.zone}" if e.available else "\t\tdrop comment \"not available\"", "\t}",
                f"\tchain back_{_link_chain(e)} {{", f"\t\tct zone set {e.zone}", "\t}",
                f"\tchain dispatch_{_link_chain(e)} {{"]
        for li, proto, targets in fast:
            out.append(f"\t\tip daddr {e.eni_ip} {proto} dport {li.port} ct timeout set \"{_timeout_name(li, proto)}\" "
                       f"ct mark set {e.router_mark:#x} meta mark set {e.router_mark:#x} "
                       f"{_pick(li, proto, targets, config.hash_seed)}")
        out.append("\t}")
    return out


def _timeout_name(li: ListenerConfig, proto: str) -> str:
    """The timeout object (`_timeouts`) a listener's new connections take."""
    return f"tcp_{li.idle_timeout}" if proto == "tcp" else "udp_idle"


def _timeouts(listeners: list[tuple[ListenerConfig, str]]) -> list[str]:
    """The conntrack timeout objects of these (listener, protocol): never deleted, connections use them."""
    out = []
    for seconds in sorted({li.idle_timeout for li, proto in listeners if proto == "tcp"}):
        out += [f"\tct timeout tcp_{seconds} {{", "\t\tprotocol tcp; l3proto ip;",
                f"\t\tpolicy = {{ established: {seconds} }}", "\t}"]
    if any(proto == "udp" for _, proto in listeners):
        out += ["\tct timeout udp_idle {", "\t\tprotocol udp; l3proto ip;",
                f"\t\tpolicy = {{ unreplied: {UDP_IDLE_TIMEOUT}, replied: {UDP_IDLE_TIMEOUT} }}", "\t}"]
    return out


def router_fastpath_ruleset(nodes: Sequence[tuple[NodeConfig, Mapping[str, Sequence[TargetView]]]],
                            update: bool = False) -> str:
    """The VPC router's `nlb_fastpath` table for the nodes of one VPC, each with its `routable`.

    A new connection from an in-VPC client (not from the internet gateway) to a fast listener is
    dispatched as its node would (`_pick` with the node's seed, its timeout objects), marked
    `FAST_MARK` (and `FAST_SNAT_MARK` when the target must see the node's IP), and translated to
    the node's IP on its way out. So is one from an interface endpoint whose link ends here, with
    its link's mark (always translated: PrivateLink never preserves the client IP). A segment that
    is neither a SYN nor known goes on to the node, which resets it. With no fast listener, its nat
    chains stay (the connections it dispatched keep their translation: conntrack applies it only at
    a nat hook), empty but for their first rules; a VPC whose router never dispatches (its routes
    send flows through it twice) has none: only the chains that zone what its endpoint links
    pass. `update` resets the chains in the same transaction, as `node_ruleset`'s.
    """
    fast = [(config, li, proto, targets) for config, routable in nodes
            for li, proto, targets in fast_listeners(config, routable)]
    links = _endpoint_links(nodes)
    dispatching = [(config, e) for config, e, listeners in links if listeners]
    # The nat hooks stay while the router may dispatch at all, even with nothing to dispatch now:
    # conntrack translates the packets of the connections it dispatched only where a nat chain is.
    dispatches = any(config.router_fast_path for config, _ in nodes)
    needed = {"endpoints": bool(links), "dispatch": dispatches, "postrouting": dispatches}
    out = []
    if update:
        out.append(f"add table ip {ROUTER_TABLE}")
        for _, e, _ in links:  # links never change while a lab is up, only what they carry
            for chain in (_link_chain(e), f"back_{_link_chain(e)}", f"dispatch_{_link_chain(e)}"):
                out += [f"add chain ip {ROUTER_TABLE} {chain}", f"flush chain ip {ROUTER_TABLE} {chain}"]
        for chain, hook in ROUTER_HOOKS.items():
            out += [f"add chain ip {ROUTER_TABLE} {chain} {{ {hook} }}", f"flush chain ip {ROUTER_TABLE} {chain}"]
            if not needed[chain]:
                out.append(f"delete chain ip {ROUTER_TABLE} {chain}")
    out.append(f"table ip {ROUTER_TABLE} {{")
    out += _timeouts([(li, proto) for _, li, proto, _ in fast])
    out += _endpoint_chains(links)
    if links:
        jumps = ", ".join(f"\"{e.router_ifname}\" : goto {_link_chain(e)}, \"{e.ifname}\" : goto back_{_link_chain(e)}"
                          for _, e, _ in links)
        out += ["\tchain endpoints {", f"\t\t{ROUTER_HOOKS['endpoints']}", f"\t\tiifname vmap {{ {jumps} }}", "\t}"]
    if dispatches:
        out += ["\tchain dispatch {", f"\t\t{ROUTER_HOOKS['dispatch']}",
                "\t\tiifname \"igw\" return comment \"in-VPC clients only\"",
                "\t\ttcp flags & (fin | syn | rst | ack) != syn return comment \"unknown: the node resets it\""]
        if dispatching:  # never a node's own rule: an ENI's IP may be any address, a node's too
            jumps = ", ".join(f"\"{e.router_ifname}\" : goto dispatch_{_link_chain(e)}" for _, e in dispatching)
            out.append(f"\t\tiifname vmap {{ {jumps} }}")
        for config, li, proto, targets in fast:
            timeout = _timeout_name(li, proto)
            mark = FAST_MARK if li.preserve_client_ip else FAST_MARK | FAST_SNAT_MARK
            out.append(f"\t\tip daddr {config.node_ip} {proto} dport {li.port} ct timeout set \"{timeout}\" "
                       f"ct mark set {mark:#x} {_pick(li, proto, targets, config.hash_seed)}")
        out += ["\t}", "\tchain postrouting {", f"\t\t{ROUTER_HOOKS['postrouting']}"]
        for ip in sorted({config.node_ip for config, *_ in fast}, key=ip_address):
            out.append(f"\t\tct mark {FAST_MARK | FAST_SNAT_MARK:#x} ct original ip daddr {ip} snat ip to {ip}")
        if dispatching:
            nodes_of = ", ".join(f"{e.router_mark:#x} : {config.node_ip}" for config, e in dispatching)
            out.append(f"\t\tct mark & {ENDPOINT_FAST_MARK:#x} == {ENDPOINT_FAST_MARK:#x} "
                       f"snat ip to ct mark map {{ {nodes_of} }} comment \"PrivateLink: targets see the node\"")
        out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"
