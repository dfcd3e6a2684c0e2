"""What every service's compiler shares: namespace and interface names, sysctls, the ENI as a
VPC router sees it, and the veths that join a consumer VPC's router to a load balancer node
(PrivateLink endpoints, which both the router (ec2) and the nodes (elbv2) are wired from)."""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from vpclab.model.resources import EndpointEni, Lab, Subnet, VpcEndpoint

VPC_MTU = 9001
ALT_DNS_IP = "169.254.169.253"  # AWS's link-local resolver address
# GWLB endpoint links (consumer router <-> GWLB node): one /30 each, link-local.
ENDPOINT_LINKS = IPv4Network("169.254.128.0/17")

# Every namespace: no IPv6 until it is done on purpose, no reverse-path
# filtering (inspection paths are asymmetric by design), no redirects.
BASE_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("ipv6/conf/all/disable_ipv6", "1"),
    ("ipv6/conf/default/disable_ipv6", "1"),
    ("ipv4/conf/all/rp_filter", "0"),
    ("ipv4/conf/default/rp_filter", "0"),
    ("ipv4/conf/all/send_redirects", "0"),
    ("ipv4/conf/default/send_redirects", "0"),
    ("ipv4/conf/all/accept_redirects", "0"),
    ("ipv4/conf/default/accept_redirects", "0"),
)
# A namespace that forwards: no early demux, which would look every forwarded TCP and UDP
# packet up in the socket table before routing it (only the packets it delivers locally gain).
FORWARDING = (("ipv4/ip_forward", "1"), ("ipv4/ip_early_demux", "0"))
PROXY_ARP = (("ipv4/conf/default/proxy_arp", "1"),)
# A router's (or NLB node's) policy rules make the kernel check each forwarded packet's source
# with a second full route lookup, which only drops sources that are its own addresses; a
# router's nftables does that with one set lookup (router_ruleset). A node needs no such drop:
# a packet from its own address finds no socket to answer it.
ACCEPT_LOCAL = (("ipv4/conf/all/accept_local", "1"),)


def router_ns(vpc: str) -> str:
    return f"router:{vpc}"


def igw_ns(igw: str) -> str:
    return f"igw:{igw}"


def nat_ns(nat: str) -> str:
    return f"nat:{nat}"


def nlb_ns(lb: str, az: str) -> str:
    return f"nlb:{lb}:{az}"


def gwlb_ns(lb: str, az: str) -> str:
    return f"gwlb:{lb}:{az}"


def alb_ns(lb: str, az: str) -> str:
    return f"alb:{lb}:{az}"


def tgw_ns(tgw: str) -> str:
    return f"tgw:{tgw}"


def tgw_owner(tgw: str, az: str) -> str:
    """The owner name of a transit gateway's ENI in one AZ of a VPC (a VPC has one attachment
    per gateway), as a VPC router's route to the gateway finds it; no lab name has an '@'."""
    return f"{tgw}@{az}"


INTERNET_NS = "internet:router"  # lab names have no colon, so no instance can collide


@dataclass(frozen=True)
class EndpointLink:
    """A GWLB endpoint: a veth from its VPC's router to the GWLB node of its AZ."""

    endpoint: VpcEndpoint
    subnet: Subnet
    node_ns: str
    ifname: str
    router_ip: IPv4Address
    node_ip: IPv4Address

    @property
    def available(self) -> bool:
        return self.endpoint.state == "available"


def endpoint_links(lab: Lab) -> list[EndpointLink]:
    links = []
    slots = ENDPOINT_LINKS.subnets(new_prefix=30)
    taken: set[str] = set()
    for ep in lab.vpc_endpoints.values():
        if ep.type != "GatewayLoadBalancer":
            continue
        eni = ep.enis[0]
        lb = lab.load_balancer_of_endpoint(ep.name).name
        slot = next(slots)
        links.append(EndpointLink(ep, lab.subnets[eni.subnet], gwlb_ns(lb, eni.az),
                                  ifname_for("ep-", ep.name, taken),
                                  slot.network_address + 1, slot.network_address + 2))
    return links


INTERFACE_LINKS = IPv4Network("169.254.64.0/18")  # each endpoint ENI's link to its node, a /30: router .1, node .2
ENDPOINT_MARK = 0x100  # + endpoint link index, in an NLB node: connections from that endpoint
ENDPOINT_TABLE = 100  # + endpoint link index, in an NLB node: routes their replies back to it
# In the provider VPC's router, per endpoint link: the connection mark of the connections it dispatches
# itself (engines.nlb ENDPOINT_FAST_MARK + index, with the fast path's bits: checked as if through the
# node), and two tables: to the node (what the router does not dispatch) and back to the consumer.
NLB_FAST_ENDPOINT = 0x40000  # the bit of those marks (engines.nlb ENDPOINT_FAST_MARK)
ROUTER_ENDPOINT_MARK = 0x30000 | NLB_FAST_ENDPOINT
ROUTER_ENDPOINT_TABLE = 600  # + 2 * index: to the node; + 1: back to the consumer VPC's router
ROUTER_ENDPOINT_PREF = 300  # + 4 * index: the link's ip rules, before every ENI's


@dataclass(frozen=True)
class InterfaceLink:
    """One ENI of an interface endpoint: a veth from the consumer VPC's router into the provider VPC's
    router (`router_ifname`), which dispatches the endpoint's connections itself where it can, and a
    veth from there to the NLB node of its AZ (`ifname`, the same name at both ends), which takes the
    rest unchanged (engines.nlb explains how colliding CIDRs are kept apart in both)."""

    endpoint: VpcEndpoint
    eni: EndpointEni
    subnet: Subnet  # the ENI's, in the consumer VPC
    load_balancer: str
    node_ns: str
    router_ns: str  # the provider VPC's router
    router_ifname: str  # its side of the consumer router's veth
    ifname: str  # the veth between the provider router and the node, at both ends
    router_ip: IPv4Address  # the provider router's address on both its sides
    node_ip: IPv4Address  # the node's own address on its side: where the endpoint's PPv2 relays listen
    index: int  # among the provider router's endpoint links: marks, tables and conntrack zone

    @property
    def available(self) -> bool:
        return self.endpoint.state == "available"

    @property
    def mark(self) -> int:
        return ENDPOINT_MARK + self.index

    @property
    def table(self) -> int:
        return ENDPOINT_TABLE + self.index

    @property
    def zone(self) -> int:  # 0 is the default zone, where the targets' replies are
        return 1 + self.index

    @property
    def router_mark(self) -> int:
        return ROUTER_ENDPOINT_MARK + self.index


def interface_links(lab: Lab) -> list[InterfaceLink]:
    links = []
    slots = INTERFACE_LINKS.subnets(new_prefix=30)
    taken: dict[str, set[str]] = {}  # interface names per provider router (pl- and pn- share a suffix)
    for ep in lab.vpc_endpoints.values():
        if ep.type != "Interface":
            continue
        for eni in ep.enis:
            lb = lab.load_balancer_of_endpoint(ep.name, eni.az)
            router = router_ns(lb.vpc)
            names = taken.setdefault(router, set())
            outer = ifname_for("pl-", f"{ep.name}-{eni.az[-1]}", names)
            slot = next(slots)
            links.append(InterfaceLink(ep, eni, lab.subnets[eni.subnet], lb.name, nlb_ns(lb.name, eni.az), router,
                                       outer, "pn-" + outer[3:], slot.network_address + 1,
                                       slot.network_address + 2, len(names) - 1))
    return links


@dataclass(frozen=True)
class Eni:
    """An ENI as the router sees it."""

    id: str
    owner: str  # instance or NAT gateway name
    owner_ns: str
    ifname: str  # the router's side of the veth
    ip: IPv4Address
    subnet: Subnet
    security_groups: tuple[str, ...]
    source_dest_check: bool
    owner_ifname: str = "eth0"  # the owner's side; an NLB node has one more per interface endpoint
    secondary_ips: tuple[IPv4Address, ...] = ()  # a replaced ALB node's old addresses (model.elbv2.nodes)

    @property
    def ips(self) -> tuple[IPv4Address, ...]:
        return (self.ip, *self.secondary_ips)

    @property
    def chain(self) -> str:
        return self.id.replace("-", "_")


def ifname_for(prefix: str, name: str, taken: set[str]) -> str:
    """A unique Linux interface name (15 characters at most)."""
    base = (prefix + "".join(c if c.isalnum() or c in "-_" else "-" for c in name))[:15]
    candidate, n = base, 1
    while candidate in taken:
        suffix = str(n)
        candidate = base[: 15 - len(suffix)] + suffix
        n += 1
    taken.add(candidate)
    return candidate


def single_eni(ip, prefixlen: int, gateway) -> tuple[str, ...]:
    """A namespace with one interface, eth0, whose default route is its subnet's router."""
    return ("link set lo up", "link set eth0 up", f"addr add {ip}/{prefixlen} dev eth0",
            f"route add default via {gateway} dev eth0")


NLB_FAST_MARK = 0x10000  # in a VPC router: connections it dispatched for an NLB node (engines.nlb FAST_MARK)


def nlb_fast_path_chains(nlb_nodes: list[Eni], eni_chains: list, jumps_from: list[str], jumps_to: list[str],
                         endpoints: list[tuple[int, Eni]] = ()) -> list[str]:
    """A VPC router's checks of the connections it dispatches for NLB nodes (plan.ec2 router_ruleset),
    as if each packet had crossed its node: `nlb_fast_pre`, before any DNAT, the sender's egress
    and the node's ingress (by the connection's original destination, the node's IP);
    `nlb_fast_post`, after SNAT, the node's egress and the receiver's ingress, with the addresses
    the receiver sees. `eni_chains`: (ENI, its leaving rules, its entering rules). `endpoints`:
    (router mark, node ENI) of each interface endpoint link ending here: those connections come from
    another VPC (its router checked the consumer's side), are found by their mark, not by their
    original destination (the ENI's IP, which may be any address here), and are routed by it."""
    to_node = [f"{e.ip} : jump to_{e.chain}" for e, _, entering in eni_chains if entering and e in nlb_nodes]
    from_node = [f"{e.ip} : jump from_{e.chain}" for e, leaving, _ in eni_chains if leaving and e in nlb_nodes]
    entering_of = {e.id: bool(entering) for e, _, entering in eni_chains}
    leaving_of = {e.id: bool(leaving) for e, leaving, _ in eni_chains}
    ep_to = [f"{mark:#x} : goto to_{e.chain}" if entering_of.get(e.id) else f"{mark:#x} : return"
             for mark, e in endpoints]
    ep_from = [f"{mark:#x} : jump from_{e.chain}" for mark, e in endpoints if leaving_of.get(e.id)]
    endpoint = f"ct mark & {NLB_FAST_ENDPOINT:#x} == {NLB_FAST_ENDPOINT:#x}"
    out = ["\tchain nlb_fast_pre {"]
    if endpoints:
        out.append(f"\t\t{endpoint} meta mark set ct mark comment \"interface endpoints: routed by mark\"")
    if jumps_from:
        out.append("\t\tiifname vmap { " + ", ".join(jumps_from) + " }")
    if ep_to:
        out.append("\t\tct mark vmap { " + ", ".join(ep_to) + " }")
    if to_node:
        out.append("\t\tct original ip daddr vmap { " + ", ".join(to_node) + " }")
    out.append("\t}")
    if from_node or jumps_to or ep_from:
        out += ["\tchain nlb_fast_post {", "\t\ttype filter hook postrouting priority 110; policy accept;",
                f"\t\tct mark & {NLB_FAST_MARK:#x} != {NLB_FAST_MARK:#x} return"]
        if ep_from:
            out.append("\t\tct mark vmap { " + ", ".join(ep_from) + " }")
        if from_node:
            only = f"ct mark & {NLB_FAST_ENDPOINT:#x} == 0 " if endpoints else ""
            out.append(f"\t\t{only}ct original ip daddr vmap {{ " + ", ".join(from_node) + " }")
        if jumps_to:
            out.append("\t\toifname vmap { " + ", ".join(jumps_to) + " }")
        out.append("\t}")
    return out
