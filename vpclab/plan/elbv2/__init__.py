"""Compile ELBv2 load balancers: a namespace per node of a Gateway, Network or Application Load
Balancer in each of its AZs, the node's engine (engines.gwlb, engines.nlb, engines.alb) and its
ENI in the VPC router. One module per type: gwlb, nlb, alb; their public names are here."""
from __future__ import annotations

from vpclab.model.resources import Lab, Vpc
from vpclab.plan.common import EndpointLink, Eni, InterfaceLink, alb_ns, gwlb_ns, ifname_for, nlb_ns
from vpclab.plan.elbv2.alb import alb_node, alb_node_config
from vpclab.plan.elbv2.gwlb import GWLB_NODE_ATTRIBUTES, gwlb_listener, gwlb_node, gwlb_node_attributes
from vpclab.plan.elbv2.nlb import (NLB_RELAY_PORT, RELAY_MARK, RELAY_TABLE, nlb_node, nlb_node_config, nlb_node_services,
                                   router_fast_path)
from vpclab.plan.wiring import Namespace, Service, Wiring

# What other layers and tests use: node_enis, nodes and the names imported above (alb_node_config...).


def node_enis(lab: Lab, vpc: Vpc, taken: set[str]) -> list[Eni]:
    """The ENIs of the load balancer nodes in the VPC, as its router sees them."""
    enis: list[Eni] = []
    for lb in lab.load_balancers.values():
        for node in lb.nodes:
            subnet = lab.subnets[node.subnet]
            if subnet.vpc != vpc.name:
                continue
            if lb.type == "gateway":  # an ENI AWS manages: no security groups on a GWLB
                enis.append(Eni(node.eni_id, f"{lb.name}:{node.az}", gwlb_ns(lb.name, node.az),
                                ifname_for("g-", f"{lb.name}-{node.az[-1]}", taken), node.private_ip,
                                subnet, (), True))
            elif lb.type == "application":  # a proxy: it sends from its own address, behind its groups
                enis.append(Eni(node.eni_id, f"{lb.name}:{node.az}", alb_ns(lb.name, node.az),
                                ifname_for("a-", f"{lb.name}-{node.az[-1]}", taken), node.private_ip,
                                subnet, lb.security_groups, True,
                                secondary_ips=(*node.scaled_ips, *node.retired_ips)))
            else:  # an NLB node forwards with the client's address when it preserves it: no source check
                enis.append(Eni(node.eni_id, f"{lb.name}:{node.az}", nlb_ns(lb.name, node.az),
                                ifname_for("l-", f"{lb.name}-{node.az[-1]}", taken), node.private_ip,
                                subnet, (), False))
    return enis


def nodes(lab: Lab, vpc: Vpc, endpoints: list[EndpointLink], interfaces: list[InterfaceLink]) -> Wiring:
    """The nodes of the VPC's load balancers: GWLB nodes first, then NLB nodes, then ALB nodes."""
    namespaces: list[Namespace] = []
    services: list[Service] = []
    mine = [b for b in lab.load_balancers.values() if b.vpc == vpc.name]
    for lb in (b for b in mine if b.type == "gateway"):
        for node in lb.nodes:
            ns, svc = gwlb_node(lab, lb, node, endpoints)
            namespaces.append(ns)
            services.append(svc)
    for lb in (b for b in mine if b.type == "network"):
        for node in lb.nodes:
            namespaces.append(nlb_node(lab, lb, node, interfaces))
            services.extend(nlb_node_services(lab, lb, node, interfaces))
    for lb in (b for b in mine if b.type == "application"):
        for node in lb.nodes:
            ns, svc = alb_node(lab, lb, node)
            namespaces.append(ns)
            services.append(svc)
    return Wiring(tuple(namespaces), (), tuple(services))
