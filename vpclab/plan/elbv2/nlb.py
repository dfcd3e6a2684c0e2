"""Compile a Network Load Balancer's nodes: a namespace per AZ whose ruleset the daemon keeps
(engines.nlb), its Proxy Protocol v2 relays, and the ENIs of the interface endpoints of its AZ."""
from __future__ import annotations

from vpclab.model.resources import Lab, LoadBalancer, Vpc
from vpclab.plan.common import (
    ACCEPT_LOCAL,
    BASE_SYSCTLS,
    FORWARDING,
    InterfaceLink,
    interface_links,
    nlb_ns,
    router_ns,
    single_eni,
)
from vpclab.plan.wiring import Namespace, Service

NLB_RELAY_PORT = 20000  # + listener index: a node's local Proxy Protocol v2 relays
RELAY_MARK = 0x2  # in an NLB node: connections of its transparent PPv2 relays (engines.nlb)
RELAY_TABLE = 99  # their replies, addressed to the client, are local there


def _effective_cross_zone(lab: Lab, lb: LoadBalancer, group_name: str) -> bool:
    """The target group's `load_balancing.cross_zone.enabled` wins unless it defers to the load balancer's."""
    own = lab.target_groups[group_name].attributes.get("load_balancing.cross_zone.enabled",
                                                        "use_load_balancer_configuration")
    if own == "use_load_balancer_configuration":
        own = lb.attributes.get("load_balancing.cross_zone.enabled", "false")
    return own == "true"


# Route targets that send a flow through the router a second time (a GWLB endpoint, a middlebox
# instance or ENI, a transit gateway): with them, NAT in the router could rewrite a flow's tuple
# on its second pass (DESIGN.md), so the router keeps out of NAT.
_TWO_PASS_TARGETS = ("vpce", "instance", "eni", "tgw")


def router_fast_path(lab: Lab, vpc: Vpc) -> bool:
    """Whether the VPC's router may dispatch its clients' NLB connections itself (engines.nlb
    `router_fastpath_ruleset`): the VPC has an NLB, and no flow crosses its router twice, as
    no route sends traffic anywhere but to local ENIs, the internet gateway or a NAT gateway, and
    none is more specific than the local route. Route tables do not change while a lab is up
    (no live change touches them), so this holds for the lab's life."""
    if not any(lb.type == "network" and lb.vpc == vpc.name for lb in lab.load_balancers.values()):
        return False
    for rt in (t for t in lab.route_tables.values() if t.vpc == vpc.name):
        for route in rt.routes:
            if route.target_kind in _TWO_PASS_TARGETS:
                return False
            if route.target_kind != "local" and route.destination.overlaps(vpc.cidr) \
                    and route.destination.prefixlen > vpc.cidr.prefixlen:
                return False
    return True


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
                  "available": link.available, "router_ifname": link.router_ifname,
                  "router_mark": link.router_mark}
                 for link in interface_links(lab) if link.node_ns == nlb_ns(lb_name, az)]
    vpc = lab.vpcs[lb.vpc]
    return {"load_balancer": lb_name, "availability_zone": az, "node_ip": str(node.private_ip),
            "endpoints": endpoints, "listeners": listeners, "relay_mark": RELAY_MARK,
            "router_fast_path": router_fast_path(lab, vpc), "vpc_cidr": str(vpc.cidr), "router_ns": router_ns(vpc.name)}


def nlb_node(lab: Lab, lb: LoadBalancer, node, interfaces: list[InterfaceLink]) -> Namespace:
    """The node's namespace; its ruleset is the daemon's (engines.nlb): it follows target health.
    Each interface endpoint ENI of its AZ reaches it through the VPC router, on a veth of its own
    (plan.privatelink): the node routes that endpoint's replies back out of it by connection mark."""
    subnet = lab.subnets[node.subnet]
    batch = list(single_eni(node.private_ip, subnet.cidr.prefixlen, subnet.router_ip))
    own = [link for link in interfaces if link.node_ns == nlb_ns(lb.name, node.az)]
    # a transparent PPv2 relay's replies are addressed to the client: deliver them here (engines.nlb)
    batch += [f"route add local default dev lo table {RELAY_TABLE}",
              f"rule add pref 99 fwmark {RELAY_MARK:#x} lookup {RELAY_TABLE}"]
    for link in own:
        batch += [f"link set {link.ifname} up", f"addr add {link.node_ip}/30 dev {link.ifname}",
                  f"route add default via {link.router_ip} dev {link.ifname} onlink table {link.table}",
                  f"rule add pref {100 + link.index} fwmark {link.mark:#x} lookup {link.table}"]
    return Namespace(name=nlb_ns(lb.name, node.az), kind="nlb",
                     sysctls=BASE_SYSCTLS + FORWARDING + ACCEPT_LOCAL,
                     ip_batch=tuple(batch))


def nlb_node_services(lab: Lab, lb: LoadBalancer, node, interfaces: list[InterfaceLink]) -> list[Service]:
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
