"""Compile ELBv2 load balancers: a namespace per node of a Gateway or Network Load Balancer in
each of its AZs, the node's engine (engines.gwlb, engines.nlb) and its ENI in the VPC router."""
from __future__ import annotations

import zlib

from vpclab.model.resources import Lab, LoadBalancer, Vpc
from vpclab.plan.common import (
    ACCEPT_LOCAL,
    BASE_SYSCTLS,
    FORWARDING,
    PROXY_ARP,
    Eni,
    EndpointLink,
    InterfaceLink,
    gwlb_ns,
    ifname_for,
    interface_links,
    nlb_ns,
    single_eni,
)
from vpclab.plan.wiring import Namespace, Service, Wiring

# What a GWLB node takes from its load balancer, listener and target group.
GWLB_NODE_ATTRIBUTES = frozenset({
    "load_balancing.cross_zone.enabled", "tcp.idle_timeout.seconds",
    "send_tcp_reset.on_idle_timeout.enabled", "stickiness.enabled",
    "stickiness.type", "target_failover.on_deregistration", "target_failover.on_unhealthy",
    "deregistration_delay.timeout_seconds", "vpclab.drop_stale_cookie.enabled",
})
NLB_RELAY_PORT = 20000  # + listener index: a node's local Proxy Protocol v2 relays
RELAY_MARK = 0x2  # in an NLB node: connections of its transparent PPv2 relays (engines.nlb)
RELAY_TABLE = 99  # their replies, addressed to the client, are local there


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
            else:  # an NLB node forwards with the client's address when it preserves it: no source check
                enis.append(Eni(node.eni_id, f"{lb.name}:{node.az}", nlb_ns(lb.name, node.az),
                                ifname_for("l-", f"{lb.name}-{node.az[-1]}", taken), node.private_ip,
                                subnet, (), False))
    return enis


def nodes(lab: Lab, vpc: Vpc, endpoints: list[EndpointLink], interfaces: list[InterfaceLink]) -> Wiring:
    """The nodes of the VPC's load balancers: GWLB nodes first, then NLB nodes."""
    namespaces: list[Namespace] = []
    services: list[Service] = []
    for lb in (b for b in lab.load_balancers.values() if b.vpc == vpc.name and b.type == "gateway"):
        for node in lb.nodes:
            ns, svc = _gwlb_node(lab, lb, node, endpoints)
            namespaces.append(ns)
            services.append(svc)
    for lb in (b for b in lab.load_balancers.values() if b.vpc == vpc.name and b.type == "network"):
        for node in lb.nodes:
            namespaces.append(_nlb_node(lab, lb, node, interfaces))
            services.extend(_nlb_node_services(lab, lb, node, interfaces))
    return Wiring(tuple(namespaces), (), tuple(services))


# --- Gateway Load Balancers ------------------------------------------------------


def gwlb_listener(lab: Lab, lb: str):
    return next(li for li in lab.listeners.values() if li.load_balancer == lb)


def gwlb_node_attributes(lab: Lab, lb: str) -> dict[str, str]:
    """What a GWLB node takes from its load balancer, listener and target group."""
    listener = gwlb_listener(lab, lb)
    merged = {**lab.load_balancers[lb].attributes, **lab.target_groups[listener.target_group].attributes,
              **listener.attributes}
    return {k: v for k, v in merged.items() if k in GWLB_NODE_ATTRIBUTES}


def _gwlb_node(lab: Lab, lb: LoadBalancer, node, endpoints: list[EndpointLink]) -> tuple[Namespace, Service]:
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


# --- Network Load Balancers and interface endpoints -----------------------------


def _effective_cross_zone(lab: Lab, lb: LoadBalancer, group_name: str) -> bool:
    """The target group's `load_balancing.cross_zone.enabled` wins unless it defers to the load balancer's."""
    own = lab.target_groups[group_name].attributes.get("load_balancing.cross_zone.enabled",
                                                        "use_load_balancer_configuration")
    if own == "use_load_balancer_configuration":
        own = lb.attributes.get("load_balancing.cross_zone.enabled", "false")
    return own == "true"


def nlb_node_config(lab: Lab, lb_name: str, az: str) -> dict:
    """What an NLB node's ruleset is made of (engines.nlb.NodeConfig), from the live model."""
    lb = lab.load_balancers[lb_name]
    node = lb.node_in(az)
    listeners = []
    for i, li in enumerate(lab.listeners_of(lb_name)):
        attrs = lab.target_groups[li.target_group].attributes
        listeners.append({
            "name": li.name, "protocol": li.protocol, "port": li.port, "target_group": li.target_group,
            "idle_timeout": int(li.attributes.get("tcp.idle_timeout.seconds", 350)),
            "preserve_client_ip": attrs.get("preserve_client_ip.enabled") == "true",
            "proxy_protocol_v2": attrs.get("proxy_protocol_v2.enabled") == "true",
            "cross_zone": _effective_cross_zone(lab, lb, li.target_group),
            "source_ip_stickiness": attrs.get("stickiness.enabled") == "true",
            "relay_port": NLB_RELAY_PORT + i,
        })
    endpoints = [{"vpc_endpoint_id": link.endpoint.id, "ifname": link.ifname, "eni_ip": str(link.eni.ip),
                  "link_ip": str(link.node_ip), "mark": link.mark, "zone": link.zone,
                  "available": link.available}
                 for link in interface_links(lab) if link.node_ns == nlb_ns(lb_name, az)]
    return {"load_balancer": lb_name, "availability_zone": az, "node_ip": str(node.private_ip),
            "endpoints": endpoints, "listeners": listeners, "relay_mark": RELAY_MARK}


def _nlb_node(lab: Lab, lb: LoadBalancer, node, interfaces: list[InterfaceLink]) -> Namespace:
    """The node's namespace; its ruleset is the daemon's (engines.nlb): it follows target health.
    Each interface endpoint ENI of its AZ is a veth into it: the node answers ARP for the ENI's
    IP there (proxy ARP) and routes that endpoint's replies back out by connection mark."""
    subnet = lab.subnets[node.subnet]
    batch = list(single_eni(node.private_ip, subnet.cidr.prefixlen, subnet.router_ip))
    own = [link for link in interfaces if link.node_ns == nlb_ns(lb.name, node.az)]
    # a transparent PPv2 relay's replies are addressed to the client: deliver them here (engines.nlb)
    batch += [f"route add local default dev lo table {RELAY_TABLE}",
              f"rule add pref 99 fwmark {RELAY_MARK:#x} lookup {RELAY_TABLE}"]
    for link in own:
        batch += [f"link set {link.ifname} up", f"addr add {link.node_ip}/30 dev {link.ifname}",
                  f"ntable change name arp_cache dev {link.ifname} proxy_delay 0",
                  f"route add default via {link.subnet.router_ip} dev {link.ifname} onlink table {link.table}",
                  f"rule add pref {100 + link.index} fwmark {link.mark:#x} lookup {link.table}"]
    return Namespace(name=nlb_ns(lb.name, node.az), kind="nlb",
                     sysctls=BASE_SYSCTLS + FORWARDING + ACCEPT_LOCAL + (PROXY_ARP if own else ()),
                     ip_batch=tuple(batch))


def _nlb_node_services(lab: Lab, lb: LoadBalancer, node, interfaces: list[InterfaceLink]) -> list[Service]:
    """The node's ruleset keeper, and a Proxy Protocol v2 relay per PPv2 listener: one for direct
    clients on the node's IP, and one per interface endpoint on its link address, which alone
    knows the endpoint ID and the ENI's IP."""
    ns = nlb_ns(lb.name, node.az)
    services = [Service(ns, "nlb_node", params=(("load_balancer", lb.name), ("availability_zone", node.az)))]
    for li in nlb_node_config(lab, lb.name, node.az)["listeners"]:
        if li["proxy_protocol_v2"] and li["protocol"] == "TCP":
            upstream = ("upstream", f"{node.private_ip}:{li['port']}")
            direct = (upstream, ("transparent", True)) if li["preserve_client_ip"] else (upstream,)
            services.append(Service(ns, "pp2_relay", (f"{node.private_ip}:{li['relay_port']}",), direct))
            services += [Service(ns, "pp2_relay", (f"{link.node_ip}:{li['relay_port']}",),
                                 (upstream, ("vpc_endpoint_id", link.endpoint.id), ("dst_ip", str(link.eni.ip))))
                         for link in interfaces if link.node_ns == ns]
    return services
