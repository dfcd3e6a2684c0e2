"""Compile an Application Load Balancer's nodes: a namespace per AZ with the node's ENI, where
the daemon runs HAProxy (engines.alb) from `alb_node_config`, which is all the engine is told.

The config is plain JSON data from the live model (ALB.md's contract): listeners with their
rules in evaluation order (ascending priority, the default rule last), and every target group
the load balancer forwards to, with its attributes, health check and targets.
"""
from __future__ import annotations

from vpclab.model.elbv2 import rule_arn
from vpclab.model.resources import (
    Certificate,
    FixedResponseAction,
    ForwardAction,
    Lab,
    LoadBalancer,
    LoadBalancerNode,
    RedirectAction,
    RuleAction,
    RuleCondition,
    TargetGroup,
)
from vpclab.plan.common import BASE_SYSCTLS, alb_ns, single_eni
from vpclab.plan.wiring import Namespace, Service

PROMOTE_SECONDARIES = (("ipv4/conf/all/promote_secondaries", "1"), ("ipv4/conf/default/promote_secondaries", "1"))


def alb_node(lab: Lab, lb: LoadBalancer, node: LoadBalancerNode) -> tuple[Namespace, Service]:
    """The node's namespace, its one ENI, and the HAProxy the daemon runs there."""
    subnet = lab.subnets[node.subnet]
    name = alb_ns(lb.name, node.az)
    more = tuple(f"addr add {ip}/{subnet.cidr.prefixlen} dev eth0" for ip in (*node.scaled_ips, *node.retired_ips))
    # deleting a primary address deletes its secondaries too, unless they are promoted
    namespace = Namespace(name=name, kind="alb", sysctls=BASE_SYSCTLS + PROMOTE_SECONDARIES,
                          ip_batch=single_eni(node.private_ip, subnet.cidr.prefixlen, subnet.router_ip) + more)
    return namespace, Service(name, "alb_node", params=(("load_balancer", lb.name), ("availability_zone", node.az)))


def alb_node_config(lab: Lab, lb_name: str, az: str) -> dict:
    """What the ALB node in `az` serves (ALB.md's contract), from the live model."""
    lb = lab.load_balancers[lb_name]
    node = lb.node_in(az)
    if lb.type != "application" or node is None:
        raise KeyError(f"{lb_name} is not an Application Load Balancer with a node in {az}")
    listeners, groups = [], []
    for li in lab.listeners_of(lb_name):
        rules = [_rule(rule.name, rule.arn, rule.priority, rule.conditions, rule.action)
                 for rule in lab.rules_of(li.name)]
        rules.append(_rule("default", rule_arn(lab.region, li.arn, "default"), "default", (), li.default_action))
        listeners.append({"name": li.name, "arn": li.arn, "protocol": li.protocol, "port": li.port,
                          "certificate": _certificate(lab.certificates[li.certificate]) if li.certificate else None,
                          "rules": rules})
        groups += [g["name"] for rule in rules if rule["action"]["type"] == "forward"
                   for g in rule["action"]["target_groups"] if g["name"] not in groups]
    return {
        "load_balancer": lb.name, "arn": lb.arn, "dns_name": lb.dns_name, "scheme": lb.scheme,
        "availability_zone": az, "node_ip": str(node.private_ip),
        "scaled_ips": [str(ip) for ip in node.scaled_ips],  # added nodes' addresses (scale-nodes)
        "retired_ips": [str(ip) for ip in node.retired_ips],  # replaced nodes' addresses, still served
        "public_ip": str(node.public_ip) if node.public_ip is not None else None,
        "attributes": dict(lb.attributes),
        "listeners": listeners,
        "target_groups": {name: _target_group(lab.target_groups[name]) for name in dict.fromkeys(groups)},
    }


def _rule(name: str, arn: str, priority: int | str, conditions: tuple[RuleCondition, ...],
          action: RuleAction | None) -> dict:
    assert action is not None, "an ALB listener always has its default action"
    return {"name": name, "arn": arn, "priority": priority,
            "conditions": [_condition(c) for c in conditions], "action": _action(action)}


def _condition(condition: RuleCondition) -> dict:
    if condition.field == "query-string":
        values: list = [{"key": key, "value": value} for key, value in condition.values]
    else:
        values = list(condition.values)
    if condition.field == "http-header":
        return {"field": condition.field, "name": condition.header_name, "values": values}
    return {"field": condition.field, "values": values}


def _action(action: RuleAction) -> dict:
    if isinstance(action, ForwardAction):
        return {"type": "forward",
                "target_groups": [{"name": g.target_group, "weight": g.weight} for g in action.target_groups],
                "stickiness": {"enabled": action.stickiness_enabled,
                               "duration_seconds": action.stickiness_duration_seconds}}
    if isinstance(action, RedirectAction):
        return {"type": "redirect", "protocol": action.protocol, "host": action.host, "port": action.port,
                "path": action.path, "query": action.query, "status_code": action.status_code}
    assert isinstance(action, FixedResponseAction)
    return {"type": "fixed-response", "status_code": action.status_code, "content_type": action.content_type,
            "message_body": action.message_body}


def _certificate(cert: Certificate) -> dict:
    return {"name": cert.name, "arn": cert.arn, "domain_name": cert.domain_name,
            "subject_alternative_names": list(cert.subject_alternative_names),
            "certificate_file": cert.certificate_file, "private_key_file": cert.private_key_file}


def _target_group(group: TargetGroup) -> dict:
    check = group.health_check_config()
    return {
        "arn": group.arn, "protocol": group.protocol, "port": group.port, "target_type": group.target_type,
        "attributes": dict(group.attributes),
        "health_check": {"protocol": check.protocol, "port": str(check.port), "path": check.path,
                         "interval_seconds": check.interval_seconds, "timeout_seconds": check.timeout_seconds,
                         "healthy_threshold": check.healthy_threshold,
                         "unhealthy_threshold": check.unhealthy_threshold, "matcher": check.matcher},
        "targets": [{"id": t.id, "ip": str(t.ip), "port": t.port, "az": t.az} for t in group.targets],
    }
