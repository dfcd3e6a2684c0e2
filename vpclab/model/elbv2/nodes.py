"""Live node replacement of an Application Load Balancer (reference §5): AWS scales and
replaces an ALB's nodes, and its DNS name follows their new IPs; the replaced nodes serve on
for a while, out of DNS. The static-IP pattern exists for this."""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from ..alloc import subnet_pool
from ..errors import ChangeError
from ..resources import Lab


def _used(lab: Lab, subnet: str) -> set[IPv4Address]:
    """Every address something of the lab holds in `subnet`."""
    used = {i.private_ip for i in lab.instances.values() if i.subnet == subnet}
    used |= {n.private_ip for n in lab.nat_gateways.values() if n.subnet == subnet}
    for lb in lab.load_balancers.values():
        used |= {ip for n in lb.nodes if n.subnet == subnet for ip in (n.private_ip, *n.retired_ips)}
    used |= {e.ip for ep in lab.vpc_endpoints.values() for e in ep.enis if e.subnet == subnet}
    return used


def replace_nodes(lab: Lab, load_balancer: str) -> Lab:
    """Each node of an internal ALB gets a new IP (the lowest free one of its subnet); its old
    one keeps serving, out of DNS, until the next replacement, which retires it for good."""
    lb = next((b for b in lab.load_balancers.values() if load_balancer in (b.name, b.arn)), None)
    if lb is None:
        raise ChangeError("LoadBalancerNotFound", f"Load balancer '{load_balancer}' not found")
    if lb.type != "application":
        raise ChangeError("ValidationError", f"{lb.name} is a {lb.type} load balancer: its node IPs never "
                                             "change; only an Application Load Balancer's nodes are replaced")
    if lb.scheme != "internal":
        raise ChangeError("ValidationError", f"{lb.name} is internet-facing: vpclab replaces the nodes of "
                                             "internal ALBs only (yet)")
    nodes = []
    for node in lb.nodes:
        subnet = lab.subnets[node.subnet]
        pool = subnet_pool(subnet.cidr, f"subnet {subnet.name}")
        for ip in _used(lab, node.subnet):  # retired ones too: an address never comes straight back
            pool.take(ip, "in use")
        try:
            new_ip = pool.allocate(f"load balancer {lb.name}")
        except ValueError as e:
            raise ChangeError("InsufficientFreeAddressesInSubnet", str(e)) from None
        nodes.append(replace(node, private_ip=new_ip, retired_ips=(node.private_ip,)))
    # an alb target is checked at its ALB's first node (model.elbv2.alb_targets)
    groups = {g.name: replace(g, targets=tuple(replace(t, ip=nodes[0].private_ip) if t.id == lb.arn else t
                                               for t in g.targets))
              for g in lab.target_groups.values() if g.target_type == "alb"}
    return replace(lab, load_balancers={**lab.load_balancers, lb.name: replace(lb, nodes=tuple(nodes))},
                   target_groups={**lab.target_groups, **groups})
