"""Compile a Gateway Load Balancer's nodes: a namespace per AZ, its GENEVE engine
(engines.gwlb) and the veths of the GWLB endpoints it serves."""
from __future__ import annotations

import zlib

from vpclab.model.resources import Lab, LoadBalancer
from vpclab.plan.common import BASE_SYSCTLS, EndpointLink, gwlb_ns, single_eni
from vpclab.plan.wiring import Namespace, Service

# What a GWLB node takes from its load balancer, listener and target group.
GWLB_NODE_ATTRIBUTES = frozenset({
    "load_balancing.cross_zone.enabled", "tcp.idle_timeout.seconds",
    "send_tcp_reset.on_idle_timeout.enabled", "stickiness.enabled",
    "stickiness.type", "target_failover.on_deregistration", "target_failover.on_unhealthy",
    "deregistration_delay.timeout_seconds", "vpclab.drop_stale_cookie.enabled",
})


def gwlb_listener(lab: Lab, lb: str):
    return next(li for li in lab.listeners.values() if li.load_balancer == lb)


def gwlb_node_attributes(lab: Lab, lb: str) -> dict[str, str]:
    """What a GWLB node takes from its load balancer, listener and target group."""
    listener = gwlb_listener(lab, lb)
    merged = {**lab.load_balancers[lb].attributes, **lab.target_groups[listener.target_group].attributes,
              **listener.attributes}
    return {k: v for k, v in merged.items() if k in GWLB_NODE_ATTRIBUTES}


def gwlb_node(lab: Lab, lb: LoadBalancer, node, endpoints: list[EndpointLink]) -> tuple[Namespace, Service]:
    name = gwlb_ns(lb.name, node.az)
    subnet = lab.subnets[node.subnet]
    served = [e for e in endpoints if e.node_ns == name]
    batch = list(single_eni(node.private_ip, subnet.cidr.prefixlen, subnet.router_ip))
    for ep in served:  # an address only so that the node's kernel answers ARP for the router
        batch += [f"link set {ep.ifname} up", f"addr add {ep.node_ip}/30 dev {ep.ifname}"]
    group = lab.target_groups[gwlb_listener(lab, lb.name).target_group]
    config = {
        "availability_zone": node.az,
        "attributes": gwlb_node_attributes(lab, lb.name),
        "node_ip": str(node.private_ip),
        "endpoints": [{"id": e.endpoint.id, "ifname": e.ifname} for e in served],
        "targets": [{"id": t.id, "ip": str(t.ip), "az": t.az} for t in group.targets],
        # Fixed per load balancer: every node, restarted or not, maps a flow to the same target.
        "hash_seed": zlib.crc32(lb.arn.encode()),
    }
    namespace = Namespace(name=name, kind="gwlb", sysctls=BASE_SYSCTLS, ip_batch=tuple(batch),
                          tx_offload_off=("eth0",) + tuple(e.ifname for e in served))
    service = Service(name, "gwlb_node", params=(("config", config), ("load_balancer", lb.name),
                                                   ("target_group", group.name)))
    return namespace, service

