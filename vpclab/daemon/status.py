"""`vpclab status --json`: one stable schema for everything a lab holds.

Keys exist from the start for capabilities that land later, so scripts can
rely on them; their lists stay empty until a lab has such resources.
"""
from __future__ import annotations

from vpclab.model.resources import Lab


def _str(value) -> str | None:
    return None if value is None else str(value)


def lab_status(lab: Lab) -> dict:
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
        "load_balancers": [],
        "target_groups": [],
        "vpc_endpoint_services": [],
        "vpc_endpoints": [],
    }
