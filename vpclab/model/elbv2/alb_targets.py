"""Target groups of type `alb` (reference §5.2): an Application Load Balancer as the one target
of a Network Load Balancer's TCP group, on the port of one of its listeners. The NLB sends to
the ALB's node IPs with the client's address (X-Forwarded-For then holds it) and health-checks
it with HTTP(S) through that listener."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..resources import Listener, LoadBalancer, Target, TargetGroup


def alb_target(value: Any, vpc: str, port: int, load_balancers: Mapping[str, LoadBalancer]) -> Target:
    """The ALB `value` names (its name or ARN) as a target: its ID is the ALB's ARN, its address and
    AZ its first node's (where health checks go). ValueError(reason)."""
    lb = next((b for b in load_balancers.values() if value in (b.name, b.arn)), None)
    if lb is None:
        raise ValueError(f"target type alb takes an Application Load Balancer's name or ARN, got '{value}'")
    if lb.type != "application":
        raise ValueError(f"{lb.name} is a {lb.type} load balancer; target type alb takes an Application Load Balancer")
    if lb.vpc != vpc:
        raise ValueError(f"{lb.name} is in VPC {lb.vpc}, not in VPC {vpc} (the target group's)")
    node = lb.nodes[0]
    return Target(lb.arn, node.private_ip, port, node.az)


def alb_group_problem(group: TargetGroup, listeners: Iterable[Listener],
                      load_balancers: Mapping[str, LoadBalancer]) -> str | None:
    """Why an `alb` group's port cannot reach its ALB: it must be one of the ALB's listener ports."""
    if group.target_type != "alb":
        return None
    for target in group.targets:
        name = next(b.name for b in load_balancers.values() if b.arn == target.id)
        ports = sorted(li.port for li in listeners if li.load_balancer == name)
        if group.port not in ports:
            return (f"an alb target group's port must be one of its ALB's listener ports: {name} "
                    f"listens on {', '.join(map(str, ports)) or 'no port'}, not {group.port}")
    return None


MAX_NLBS_PER_ALB = 2  # "an ALB serves at most 2 NLBs" (reference §5.2)


def alb_nlbs_problem(listeners: Iterable[Listener], groups: Mapping[str, TargetGroup],
                     load_balancers: Mapping[str, LoadBalancer]) -> tuple[str, str] | None:
    """The first listener that makes an ALB the target of more NLBs than AWS allows, as
    (listener name, reason); listeners in the file's order."""
    nlbs_of: dict[str, list[str]] = {}
    for li in listeners:
        group = groups.get(li.target_group) if li.target_group else None
        if group is None or group.target_type != "alb":
            continue
        for target in group.targets:
            nlbs = nlbs_of.setdefault(target.id, [])
            if li.load_balancer not in nlbs:
                nlbs.append(li.load_balancer)
            if len(nlbs) > MAX_NLBS_PER_ALB:
                alb = next((b.name for b in load_balancers.values() if b.arn == target.id), target.id)
                return li.name, (f"an Application Load Balancer is the target of at most {MAX_NLBS_PER_ALB} Network "
                                 f"Load Balancers: {alb} already serves {', '.join(nlbs[:-1])}")
    return None


def node_addresses(target: Target, group: TargetGroup, load_balancers: Mapping[str, LoadBalancer]
                   ) -> list[tuple[str, str]]:
    """Where an NLB sends a target's connections, as (ip, az): an ALB target's node IPs, one per
    AZ, as they are now; any other target's own address."""
    if group.target_type == "alb":
        lb = next((b for b in load_balancers.values() if b.arn == target.id), None)
        if lb is not None:
            return [(str(ip), n.az) for n in lb.nodes for ip in n.ips]
    return [(str(target.ip), target.az)]
