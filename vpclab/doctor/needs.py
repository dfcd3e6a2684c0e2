"""Which features a lab uses, read from its compiled plan (pure).

Rulesets are scanned for what they actually say, so a change to what the fabric emits
changes what `vpclab up` checks without touching this module."""
from __future__ import annotations

from dataclasses import replace

from vpclab.doctor.features import EVERY_LAB, nft_uses
from vpclab.engines.nlb import ruleset as nlb_engine
from vpclab.model.resources import Lab
from vpclab.plan.compile import compile_lab
from vpclab.plan.elbv2 import nlb_node_config
from vpclab.plan.wiring import Wiring


def nlb_rulesets(lab: Lab, wiring: Wiring) -> list[str]:
    """Each NLB node's ruleset at its fullest: every endpoint available and every registered
    target routable (what the daemon loads at first, all targets `initial`, and after)."""
    out, routers = [], {}
    for svc in wiring.services:
        if svc.kind != "nlb_node":
            continue
        config = nlb_engine.NodeConfig.from_dict(
            nlb_node_config(lab, svc.param("load_balancer"), svc.param("availability_zone")))
        config = replace(config, endpoints=tuple(replace(e, available=True) for e in config.endpoints))
        targets = {g.name: [nlb_engine.TargetView(t.id, str(t.ip), t.port, t.az) for t in g.targets]
                   for g in lab.target_groups.values()}
        routable = nlb_engine.listener_routes(config, targets)
        out.append(nlb_engine.node_ruleset(config, routable))
        routers.setdefault(config.router_ns, []).append((config, routable))
    # the VPC routers' part, dispatching for every node of their VPC and its interface endpoints
    out += [nlb_engine.router_fastpath_ruleset(nodes) for nodes in routers.values()
            if any(config.router_fast_path or config.endpoints for config, _ in nodes)]
    return out


def lab_rulesets(lab: Lab, wiring: Wiring | None = None) -> list[str]:
    """Every nftables ruleset a lab loads: its namespaces' and its NLB nodes'."""
    wiring = wiring or compile_lab(lab)
    return [ns.nft for ns in wiring.namespaces if ns.nft] + nlb_rulesets(lab, wiring)


def lab_needs(lab: Lab) -> set[str]:
    """The features `vpclab up` must find before it builds anything of this lab."""
    wiring = compile_lab(lab)
    needs = set(EVERY_LAB)
    for ruleset in lab_rulesets(lab, wiring):
        needs |= nft_uses(ruleset)
    kinds = {svc.kind for svc in wiring.services}
    if "gwlb_node" in kinds:
        needs.add("af-packet")  # the node's ring on its endpoint links
    if "nlb_node" in kinds:
        needs.add("conntrack")  # resets a failed target's connections
    if "alb_node" in kinds:
        needs.add("haproxy")  # each ALB node is one HAProxy
    if any(svc.kind == "pp2_relay" and svc.param("transparent") for svc in wiring.services):
        needs.add("ip-transparent")
    if any(ns.kind != "router" and "*nat" in ns.iptables.split("\n") for ns in wiring.namespaces):
        needs.add("iptables:nat")  # hairpin appliances (routers' TTL rules are best effort)
    if any(ns.tx_offload_off for ns in wiring.namespaces):
        needs.add("ethtool")
    return needs
