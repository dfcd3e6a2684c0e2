"""Compile PrivateLink endpoints: the veths of their links (plan.common) into the VPC router.

A GWLB endpoint is a veth from its VPC's router to the GWLB node of its AZ; each ENI of an
interface endpoint is a veth from the consumer VPC's router into the NLB node of its AZ, an ENI
of the VPC like any other (security groups, source/destination check)."""
from __future__ import annotations

from vpclab.model.resources import Vpc
from vpclab.plan.common import VPC_MTU, Eni, EndpointLink, InterfaceLink, ifname_for, router_ns
from vpclab.plan.wiring import Link, Wiring


def interface_enis(vpc: Vpc, interfaces: list[InterfaceLink], taken: set[str]) -> list[Eni]:
    """The ENIs of interface endpoints in the VPC, as its router sees them."""
    enis: list[Eni] = []
    for link in interfaces:
        if link.subnet.vpc == vpc.name:
            enis.append(Eni(link.eni.id, f"{link.endpoint.name}:{link.eni.az}", link.node_ns,
                            ifname_for("v-", f"{link.endpoint.name}-{link.eni.az[-1]}", taken), link.eni.ip,
                            link.subnet, link.endpoint.security_groups, True, link.ifname))
    return enis


def gwlb_endpoint_links(vpc: Vpc, own_endpoints: list[EndpointLink]) -> Wiring:
    """The VPC's GWLB endpoints: a veth each from its router to the GWLB node."""
    links: list[Link] = []
    for ep in own_endpoints:
        links.append(Link(router_ns(vpc.name), ep.ifname, ep.node_ns, ep.ifname, VPC_MTU))
    return Wiring((), tuple(links))
