"""`vpclab status --json`: one stable schema for everything a lab holds.

Keys exist from the start for capabilities that land later, so scripts can
rely on them; their lists stay empty until a lab has such resources.
"""
from __future__ import annotations

from typing import Callable, Mapping

from vpclab.model.elbv2.application import group_user
from vpclab.model.resources import Lab
from vpclab.model.transit_gateway import transit_gateway_status
from vpclab.plan.common import gwlb_ns


def _str(value) -> str | None:
    return None if value is None else str(value)


def lab_status(lab: Lab, target_health: Callable[[str], dict] = lambda _g: {},
               node_counters: Mapping[str, dict] | None = None,
               appliances: Mapping[str, dict] | None = None) -> dict:
    """The status of a lab; runtime facts (health, counters) come from the daemon."""
    node_counters = node_counters or {}
    appliances = appliances or {}
    instances = []
    for inst in lab.instances.values():
        subnet = lab.subnets[inst.subnet]
        instances.append({
            "name": inst.name,
            "id": inst.id,
            "vpc": subnet.vpc,
            "subnet": inst.subnet,
            "az": subnet.az,
            "private_ip": str(inst.private_ip),
            "public_ip": _str(inst.public_ip),
            "role": inst.role,
            "hostname": inst.hostname,
            **({"appliance": appliances[inst.name]} if inst.name in appliances else {}),
            "enis": [{
                "id": inst.eni_id,
                "subnet": inst.subnet,
                "private_ip": str(inst.private_ip),
                "public_ip": _str(inst.public_ip),
                "security_groups": [lab.security_groups[g].id for g in inst.security_groups],
                "source_dest_check": inst.source_dest_check,
            }],
        })
    return {
        "lab": {"name": lab.name, "region": lab.region, "account": lab.account},
        "instances": instances,
        "internet_hosts": [
            {"name": h.name, "ip": str(h.ip), "dns_name": h.dns_name} for h in lab.internet_hosts.values()
        ],
        "nat_gateways": [
            {"name": n.name, "id": n.id, "subnet": n.subnet, "private_ip": str(n.private_ip),
             "public_ip": str(n.public_ip)}
            for n in lab.nat_gateways.values()
        ],
        "load_balancers": [
            {"name": lb.name, "arn": lb.arn, "type": lb.type, "scheme": lb.scheme, "dns_name": lb.dns_name,
             "vpc": lb.vpc, "attributes": dict(lb.attributes),
             "nodes": [{"az": n.az, "subnet": n.subnet, "private_ip": str(n.private_ip),
                        "scaled_ips": [str(ip) for ip in n.scaled_ips],  # in DNS too (scale-nodes)
                        "public_ip": _str(n.public_ip), "eni_id": n.eni_id,
                        # AWS's per-AZ name; a GWLB has no addresses behind it
                        "zonal_dns_name": lb.zonal_dns_name(n.az) if lb.type != "gateway" else None,
                        **({"counters": node_counters[gwlb_ns(lb.name, n.az)]}
                           if gwlb_ns(lb.name, n.az) in node_counters else {})}
                       for n in lb.nodes],
             "listeners": [{"name": li.name, "arn": li.arn, "protocol": li.protocol, "port": li.port,
                            "target_group": li.target_group, "attributes": dict(li.attributes)}
                           for li in lab.listeners_of(lb.name)]}
            for lb in lab.load_balancers.values()
        ],
        "target_groups": [_target_group(lab, g, target_health(g.name)) for g in lab.target_groups.values()],
        "vpc_endpoint_services": [
            {"id": s.id, "name": s.name, "service_name": s.service_name, "type": s.type,
             "acceptance_required": s.acceptance_required, "allowed_principals": list(s.allowed_principals),
             "load_balancers": [lab.load_balancers[b].arn for b in s.load_balancers]}
            for s in lab.vpc_endpoint_services.values()
        ],
        "vpc_endpoints": [
            {"id": e.id, "name": e.name, "type": e.type, "vpc": e.vpc, "state": e.state,
             "service_name": lab.vpc_endpoint_services[e.service].service_name,
             "dns_names": list(e.dns_entries),  # regional first, then one zonal name per ENI
             "dns_entries": _dns_entries(e),
             "security_groups": [lab.security_groups[g].id for g in e.security_groups],
             "enis": [{"id": n.id, "subnet": n.subnet, "az": n.az, "ip": str(n.ip)} for n in e.enis]}
            for e in lab.vpc_endpoints.values()
        ],
        "transit_gateways": transit_gateway_status(lab),
        # AWS's side as processes and tasks (daemon.supervisor): restarts, how the last run ended
        "engines": [],
        # scheduled functions (the IP-sync function): the daemon fills in their runs
        "lambda_functions": [
            {"name": f.name, "target_group": f.target_group, "schedule_seconds": f.schedule_seconds if f.enabled
             else 0, "runs": 0, "missed_runs": {}, "last_run": None, "history": []}
            for f in lab.lambda_functions.values()
        ],
    }


def _dns_entries(endpoint) -> list[dict]:
    """An interface endpoint's DNS names, as AWS's DnsEntries list them: the regional one
    (az None: every ENI's address) first, then one per ENI's AZ."""
    if not endpoint.dns_entries:
        return []
    regional, *zonal = endpoint.dns_entries
    return [{"dns_name": regional, "az": None}] + [
        {"dns_name": name, "az": eni.az} for name, eni in zip(zonal, endpoint.enis)
    ]


def _target_group(lab: Lab, group, health: dict) -> dict:
    targets = []
    # a group no listener or rule forwards to is not checked: AWS shows its targets unused
    idle = {} if group_user(lab.listeners, lab.listener_rules, group.name) else \
        {"State": "unused", "Reason": "Target.NotInUse"}
    for t in group.targets:
        h = health.get(t.id) or idle
        targets.append({"id": t.id, "name": t.instance, "ip": str(t.ip), "port": t.port, "az": t.az,
                        "state": h.get("State", "initial"), "reason": h.get("Reason")})
    # deregistered targets stay visible while they drain
    by_id = {i.id: i for i in lab.instances.values()}
    for target_id, h in health.items():
        if target_id not in {t.id for t in group.targets}:
            inst = by_id.get(target_id)
            targets.append({"id": target_id, "name": inst.name if inst else None,
                            "ip": str(inst.private_ip) if inst else target_id, "port": group.port,
                            "az": lab.subnets[inst.subnet].az if inst else None,
                            "state": h.get("State"), "reason": h.get("Reason")})
    return {"name": group.name, "arn": group.arn, "protocol": group.protocol, "port": group.port,
            "vpc": group.vpc, "target_type": group.target_type, "attributes": dict(group.attributes),
            "targets": targets}
