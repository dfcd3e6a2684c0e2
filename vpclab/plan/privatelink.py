"""Compile PrivateLink endpoints: the veths of their links (plan.common) into the VPC router.

A GWLB endpoint is a veth from its VPC's router to the GWLB node of its AZ. Each ENI of an
interface endpoint is a veth from the consumer VPC's router into the provider VPC's router, an ENI
of the consumer VPC like any other (security groups, source/destination check); the provider's
router dispatches the endpoint's connections itself where it can (engines.nlb
router_fastpath_ruleset) and hands the rest, unchanged, to the NLB node of the ENI's AZ over a
second veth. Its ip rules keep each link's traffic on its own path whatever the addresses: the
consumer's CIDR may be the provider's own."""
from __future__ import annotations

from vpclab.model.resources import Vpc
from vpclab.plan.common import (ROUTER_ENDPOINT_PREF, ROUTER_ENDPOINT_TABLE, VPC_MTU, Eni, EndpointLink,
                                InterfaceLink, ifname_for, router_ns)
from vpclab.plan.wiring import Link, Wiring


def interface_enis(vpc: Vpc, interfaces: list[InterfaceLink], taken: set[str]) -> list[Eni]:
    """The ENIs of interface endpoints in the VPC, as its router sees them."""
    enis: list[Eni] = []
    for link in interfaces:
        if link.subnet.vpc == vpc.name:
            enis.append(Eni(link.eni.id, f"{link.endpoint.name}:{link.eni.az}", link.router_ns,
                            ifname_for("v-", f"{link.endpoint.name}-{link.eni.az[-1]}", taken), link.eni.ip,
                            link.subnet, link.endpoint.security_groups, True, link.router_ifname))
    return enis


def gwlb_endpoint_links(vpc: Vpc, own_endpoints: list[EndpointLink]) -> Wiring:
    """The VPC's GWLB endpoints: a veth each from its router to the GWLB node."""
    links: list[Link] = []
    for ep in own_endpoints:
        links.append(Link(router_ns(vpc.name), ep.ifname, ep.node_ns, ep.ifname, VPC_MTU))
    return Wiring((), tuple(links))


def interface_endpoint_links(vpc: Vpc, interfaces: list[InterfaceLink]) -> Wiring:
    """The veths from the VPC's router to its NLB nodes, one per interface endpoint ENI they serve."""
    return Wiring((), tuple(Link(router_ns(vpc.name), link.ifname, link.node_ns, link.ifname, VPC_MTU)
                            for link in interfaces if link.router_ns == router_ns(vpc.name)))


def provider_router_batch(links: list[InterfaceLink], eni_table: int) -> list[str]:
    """The provider router's side of each endpoint link. From the consumer (`router_ifname`): a
    connection the router dispatched (its mark, set by engines.nlb) goes to the VPC's ENIs, anything
    else to the node; from the node, everything goes back to the consumer, as do the targets'
    replies to the router's own connections (by mark). Each router answers ARP for the other's
    addresses (proxy ARP: the provider's route from the link to the ENI's IP is the node's)."""
    batch = []
    for link in links:
        to_node, back = ROUTER_ENDPOINT_TABLE + 2 * link.index, ROUTER_ENDPOINT_TABLE + 2 * link.index + 1
        pref = ROUTER_ENDPOINT_PREF + 4 * link.index
        batch += [f"link set {link.router_ifname} up", f"addr add {link.router_ip}/32 dev {link.router_ifname}",
                  f"ntable change name arp_cache dev {link.router_ifname} proxy_delay 0",
                  f"link set {link.ifname} up", f"addr add {link.router_ip}/30 dev {link.ifname}",
                  f"route add default via {link.node_ip} dev {link.ifname} onlink table {to_node}",
                  # no gateway: the consumer's router may have this router's own address; it answers
                  # ARP for its VPC's addresses (proxy ARP)
                  f"route add default dev {link.router_ifname} table {back}",
                  f"rule add pref {pref} iif {link.router_ifname} fwmark {link.router_mark:#x} lookup {eni_table}",
                  f"rule add pref {pref + 1} iif {link.router_ifname} lookup {to_node}",
                  f"rule add pref {pref + 2} iif {link.ifname} lookup {back}",
                  f"rule add pref {pref + 3} fwmark {link.router_mark:#x} lookup {back}"]
    return batch
