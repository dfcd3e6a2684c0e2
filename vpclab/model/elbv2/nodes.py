"""Live node replacement and scaling of an Application Load Balancer (reference §5): AWS scales and
replaces an ALB's nodes, and its DNS name follows their new IPs; the replaced nodes serve on
for a while, out of DNS. The static-IP pattern exists for this."""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from ..alloc import subnet_pool
from ..errors import ChangeError
from ..resources import Lab, LoadBalancer, LoadBalancerNode


MAX_NODES_PER_AZ = 8  # the lab's bound (AWS publishes none): one DNS answer's worth per AZ


def _used(lab: Lab, subnet: str) -> set[IPv4Address]:
    """Every address something of the lab holds in `subnet`."""
    used = {i.private_ip for i in lab.instances.values() if i.subnet == subnet}
    used |= {n.private_ip for n in lab.nat_gateways.values() if n.subnet == subnet}
    for lb in lab.load_balancers.values():
        used |= {ip for n in lb.nodes if n.subnet == subnet for ip in (*n.ips, *n.retired_ips)}
    used |= {e.ip for ep in lab.vpc_endpoints.values() for e in ep.enis if e.subnet == subnet}
    return used


def _internal_alb(lab: Lab, load_balancer: str) -> LoadBalancer:
    """The internal ALB whose nodes change (ChangeError otherwise)."""
    lb = next((b for b in lab.load_balancers.values() if load_balancer in (b.name, b.arn)), None)
    if lb is None:
        raise ChangeError("LoadBalancerNotFound", f"Load balancer '{load_balancer}' not found")
    if lb.type != "application":
        raise ChangeError("ValidationError", f"{lb.name} is a {lb.type} load balancer: its node IPs never "
                                             "change; only an Application Load Balancer's nodes are replaced or scaled")
    if lb.scheme != "internal":
        raise ChangeError("ValidationError", f"{lb.name} is internet-facing: vpclab replaces the nodes of "
                                             "internal ALBs only (yet)")
    return lb


def _new_ips(lab: Lab, lb: LoadBalancer, node: LoadBalancerNode, count: int) -> list[IPv4Address]:
    """`count` free addresses of the node's subnet, lowest first; a retired one never comes straight back."""
    subnet = lab.subnets[node.subnet]
    pool = subnet_pool(subnet.cidr, f"subnet {subnet.name}")
    for ip in _used(lab, node.subnet):
        pool.take(ip, "in use")
    try:
        return [pool.allocate(f"load balancer {lb.name}") for _ in range(count)]
    except ValueError as e:
        raise ChangeError("InsufficientFreeAddressesInSubnet", str(e)) from None


def _with_nodes(lab: Lab, lb: LoadBalancer, nodes: list[LoadBalancerNode]) -> Lab:
    # an alb target is checked at its ALB's first node (model.elbv2.alb_targets)
    groups = {g.name: replace(g, targets=tuple(replace(t, ip=nodes[0].private_ip) if t.id == lb.arn else t
                                               for t in g.targets))
              for g in lab.target_groups.values() if g.target_type == "alb"}
    return replace(lab, load_balancers={**lab.load_balancers, lb.name: replace(lb, nodes=tuple(nodes))},
                   target_groups={**lab.target_groups, **groups})


def replace_nodes(lab: Lab, load_balancer: str) -> Lab:
    """Each node of an internal ALB gets new IPs (the lowest free ones of its subnet, as many as
    it has); its old ones keep serving, out of DNS, until the next change, which retires them."""
    lb = _internal_alb(lab, load_balancer)
    nodes = []
    for node in lb.nodes:
        new = _new_ips(lab, lb, node, len(node.ips))
        nodes.append(replace(node, private_ip=new[0], scaled_ips=tuple(new[1:]), retired_ips=node.ips))
    return _with_nodes(lab, lb, nodes)


def scale_nodes(lab: Lab, load_balancer: str, per_az: int) -> Lab:
    """AWS scales an ALB by adding or removing nodes: each AZ gets `per_az` addresses in DNS. Added
    ones are the lowest free; removed ones (the newest first) serve on, out of DNS, until the next
    change; a scale-out keeps the previously retired ones serving."""
    lb = _internal_alb(lab, load_balancer)
    if not 1 <= per_az <= MAX_NODES_PER_AZ:
        raise ChangeError("ValidationError", f"nodes per AZ must be 1 to {MAX_NODES_PER_AZ}, got {per_az}")
    nodes = []
    for node in lb.nodes:
        have = node.ips
        if per_az >= len(have):
            added = tuple(_new_ips(lab, lb, node, per_az - len(have)))
            nodes.append(replace(node, scaled_ips=(*node.scaled_ips, *added)))
        else:
            nodes.append(replace(node, scaled_ips=have[1:per_az], retired_ips=have[per_az:]))
    return _with_nodes(lab, lb, nodes)
