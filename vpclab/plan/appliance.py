"""Compile the hairpin GWLB appliance (`Appliance: {kind: hairpin}`): iptables NAT only.

AWS's "iptables hairpin" appliance returns each GENEVE datagram to the GWLB node that sent
it with no process in the data path: DNAT to the node's 6081, then MASQUERADE to the
appliance's own address (conntrack keeps the node's source port). The GWLB accepts it
because it comes from its target, to its node's 6081, GENEVE header unchanged.
"""
from __future__ import annotations

from ipaddress import IPv4Address

from vpclab.model.appliance import HAIRPIN
from vpclab.model.resources import Instance, Lab, Vpc


def is_hairpin(inst: Instance) -> bool:
    return inst.role == "appliance" and (inst.appliance or {}).get("kind") == HAIRPIN


def gwlb_node_ips(lab: Lab, vpc: Vpc) -> list[IPv4Address]:
    """Every GWLB node in the VPC: a GWLB's targets are in its VPC, and a rule for a node
    that never sends here matches nothing."""
    return [n.private_ip for lb in lab.load_balancers.values() if lb.type == "gateway" and lb.vpc == vpc.name
            for n in lb.nodes]


def hairpin_rules(own_ip: IPv4Address, node_ips: list[IPv4Address]) -> str:
    """AWS's iptables hairpin appliance: GENEVE from a GWLB node goes back to that node's
    6081 (DNAT), from this instance's address (MASQUERADE keeps the node's source port)."""
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]
    for ip in node_ips:
        lines.append(f"-A PREROUTING -i eth0 -s {ip}/32 -d {own_ip}/32 -p udp -m udp --dport 6081 "
                     f"-j DNAT --to-destination {ip}:6081")
    for ip in node_ips:
        lines.append(f"-A POSTROUTING -o eth0 -s {ip}/32 -d {ip}/32 -p udp -m udp --dport 6081 -j MASQUERADE")
    return "\n".join(lines + ["COMMIT", ""])
