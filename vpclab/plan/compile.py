"""Compile a `Lab` into a `Wiring`: the pure heart of the VPC semantics.

One module per AWS service compiles its part, each into the types of plan.wiring; what they
share is plan.common. A VPC's router (ec2) gets a veth from every service's ENIs, and the order
below is the order of `vpclab plan`'s listing. Adding a service: its module, and its lines here.
"""
from __future__ import annotations

from vpclab.model.resources import Lab, Vpc
from vpclab.plan import awslambda, ec2, elbv2, privatelink, route53, transit_gateway
from vpclab.plan.common import Eni, InterfaceLink, endpoint_links, interface_links
from vpclab.plan.wiring import Wiring


def compile_lab(lab: Lab) -> Wiring:
    endpoints = endpoint_links(lab)
    interfaces = interface_links(lab)
    internet = ec2.Internet()
    parts: list[Wiring] = []
    for vpc in lab.vpcs.values():
        own_endpoints = [e for e in endpoints if e.endpoint.vpc == vpc.name]
        parts += [
            ec2.vpc_router(lab, vpc, _enis_of(lab, vpc, interfaces), own_endpoints,
                           elbv2.router_fast_path(lab, vpc), interfaces),
            privatelink.gwlb_endpoint_links(vpc, own_endpoints),
            privatelink.interface_endpoint_links(vpc, interfaces),
            elbv2.nodes(lab, vpc, endpoints, interfaces),
            ec2.nat_gateways_and_instances(lab, vpc),
            route53.vpc_resolver(lab, vpc),
            internet.gateway(lab, vpc),
        ]
    parts.append(transit_gateway.transit_gateways(lab))
    parts.append(internet.internet(lab, route53.aws_dns_names(lab)))
    parts.append(awslambda.functions(lab))
    return Wiring.join(parts)


def _enis_of(lab: Lab, vpc: Vpc, interfaces: list[InterfaceLink]) -> list[Eni]:
    """Every ENI in the VPC, as its router sees them; the order names their interfaces."""
    taken: set[str] = {"lo", "igw"}
    return (ec2.nat_gateway_enis(lab, vpc, taken) + elbv2.node_enis(lab, vpc, taken)
            + privatelink.interface_enis(vpc, interfaces, taken) + ec2.instance_enis(lab, vpc, taken)
            + transit_gateway.attachment_enis(lab, vpc, taken))
