"""The VPC router's NLB fast path: when the plan allows it (plan.elbv2.router_fast_path), which
listeners it takes (engines.nlb fast_listeners), the router's dispatch table
(router_fastpath_ruleset), and the router's checks of those connections (plan.ec2)."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from vpclab.engines.nlb.ruleset import (
    FAST_MARK, FAST_SNAT_MARK, EndpointLinkConfig, ListenerConfig, NodeConfig, TargetView, fast_listeners, node_ruleset,
    router_fastpath_ruleset,
)
from vpclab.model import load_lab
from vpclab.model.resources import Route
from vpclab.plan.compile import compile_lab
from vpclab.plan.elbv2 import nlb_node_config, router_fast_path

REPO = Path(__file__).resolve().parents[2]
NLB_LAB = REPO / "tests" / "lab" / "labs" / "nlb.yaml"
A = "us-east-1a"
WEB = [TargetView("i-1", "10.0.1.10", 80, A), TargetView("i-2", "10.0.1.11", 80, A)]


def node(*listeners: ListenerConfig, fast: bool = True) -> NodeConfig:
    return NodeConfig("web-nlb", A, "10.0.1.5", listeners=listeners, hash_seed=0x1234, router_fast_path=fast,
                      vpc_cidr="10.0.0.0/16", router_ns="router:app")


def with_route(lab, route: Route):
    table = lab.route_tables["public"]
    return replace(lab, route_tables={**lab.route_tables, "public": replace(table, routes=table.routes + (route,))})


def test_router_fast_path_on_where_routes_are_local_and_the_internet_gateway():
    lab = load_lab(NLB_LAB)
    assert router_fast_path(lab, lab.vpcs["app"])
    config = nlb_node_config(lab, "web-nlb", A)
    assert config["router_fast_path"] and config["vpc_cidr"] == "10.0.0.0/16"
    assert config["router_ns"] == "router:app"


@pytest.mark.parametrize("route", [
    Route(IPv4Network("0.0.0.0/0"), "vpce", "inspection-endpoint"),
    Route(IPv4Network("10.0.9.0/24"), "instance", "client"),
    Route(IPv4Network("192.168.0.0/16"), "eni", "eni-0123"),
    Route(IPv4Network("10.1.0.0/16"), "tgw", "tgw"),
], ids=["gwlb-endpoint", "instance", "eni", "transit-gateway"])
def test_router_fast_path_off_when_a_route_targets_a_gwlb_endpoint_or_a_middlebox(route):
    lab = with_route(load_lab(NLB_LAB), route)
    assert not router_fast_path(lab, lab.vpcs["app"])


def test_router_fast_path_off_for_a_route_more_specific_than_the_local_route():
    lab = with_route(load_lab(NLB_LAB), Route(IPv4Network("10.0.1.0/24"), "igw", "igw"))
    assert not router_fast_path(lab, lab.vpcs["app"])
    # the plan then leaves the router without the fast path's checks
    router = compile_lab(lab).namespace("router:app").nft
    assert "nlb_fast" not in router and "0x10000" not in router


def test_fast_path_skips_proxy_protocol_listeners():
    plain = ListenerConfig("http", "TCP", 80, "web")
    pp2 = ListenerConfig("pp2", "TCP", 8081, "web", proxy_protocol_v2=True, relay_port=20001)
    taken = fast_listeners(node(plain, pp2), {"http": WEB, "pp2": WEB})
    assert [(li.name, proto) for li, proto, _ in taken] == [("http", "tcp")]
    assert "dport 8081" not in router_fastpath_ruleset([(node(plain, pp2), {"http": WEB, "pp2": WEB})])


def test_fast_path_skips_a_listener_while_one_of_its_targets_is_outside_the_vpc():
    li = ListenerConfig("http", "TCP", 80, "web")
    outside = WEB + [TargetView("ip-1", "192.168.5.5", 80, A)]
    assert fast_listeners(node(li), {"http": outside}) == []
    assert [x.name for x, _, _ in fast_listeners(node(li), {"http": WEB})] == ["http"]


def test_fast_path_takes_nothing_unless_the_plan_allows_it_or_there_is_a_target():
    li = ListenerConfig("http", "TCP", 80, "web")
    assert fast_listeners(node(li, fast=False), {"http": WEB}) == []
    assert fast_listeners(node(li), {"http": []}) == []


def test_router_dispatches_as_the_node_does_with_its_pick_seed_and_timeouts():
    tcp = ListenerConfig("http", "TCP", 80, "web", idle_timeout=600)
    udp = ListenerConfig("echo", "UDP", 7, "web", preserve_client_ip=True)
    sticky = ListenerConfig("sticky", "TCP", 81, "web", source_ip_stickiness=True)
    config = node(tcp, udp, sticky)
    routable = {"http": WEB, "echo": WEB, "sticky": WEB}
    router = router_fastpath_ruleset([(config, routable)])
    at_node = node_ruleset(config, routable)

    def pick(text: str, port: str) -> str:
        return re.search(rf"dport {port} .*?(dnat ip to .*)$", text, re.M).group(1)
    for port in ("80", "7", "81"):
        assert pick(router, port) == pick(at_node, port)  # the same target choice, the same seed
    assert "numgen random mod 2" in pick(router, "80") and "jhash ip saddr mod 2 seed 0x1234" in pick(router, "81")
    assert re.search(r"tcp dport 80 ct timeout set \"tcp_600\" ct mark set 0x30000 dnat", router)
    assert re.search(r"udp dport 7 ct timeout set \"udp_idle\" ct mark set 0x10000 dnat", router)  # preserved
    assert "policy = { established: 600 }" in router and "policy = { unreplied: 120, replied: 120 }" in router
    # SNAT to the node's IP, only for connections marked so
    assert f"ct mark {FAST_MARK | FAST_SNAT_MARK:#x} ct original ip daddr 10.0.1.5 snat ip to 10.0.1.5" in router
    # an unknown segment (not a SYN) goes on to the node, which resets it; the internet goes to the node
    dispatch = router.split("chain dispatch {")[1]
    assert dispatch.index("!= syn return") < dispatch.index("dnat") and "iifname \"igw\" return" in dispatch


def test_no_fast_listener_keeps_the_nat_hooks_for_the_connections_already_dispatched_and_the_timeouts():
    # conntrack translates an established connection's packets only where a nat chain hooks: deleting
    # them when the last target leaves (or a listener moves to the node) would cut those connections
    li = ListenerConfig("http", "TCP", 80, "web")
    update = router_fastpath_ruleset([(node(li), {"http": []})], update=True)
    assert "delete chain ip nlb_fastpath dispatch" not in update
    assert "delete chain ip nlb_fastpath postrouting" not in update
    assert "chain dispatch {" in update and "chain postrouting {" in update and "dnat" not in update
    assert "delete table" not in update  # live connections keep their timeout objects
    # a router that never dispatches (plan.elbv2.router_fast_path off) has no nat hook at all
    never = router_fastpath_ruleset([(node(li, fast=False), {"http": []})], update=True)
    assert "delete chain ip nlb_fastpath dispatch" in never and "delete chain ip nlb_fastpath postrouting" in never


def test_router_checks_fast_path_connections_before_dnat_and_after_snat_and_forward_skips_them():
    nft = compile_lab(load_lab(NLB_LAB)).namespace("router:app").nft
    replies = nft.split("chain nlb_replies {")[1].split("\t}")[0]
    assert "ct mark & 0x10000 == 0x10000 goto nlb_fast_pre" in replies
    assert "ct state new ip daddr { 10.0.1.5, 10.0.2.5 } jump nlb_fast_pre" in replies
    pre = nft.split("chain nlb_fast_pre {")[1].split("\t}")[0]
    assert "iifname vmap {" in pre and "jump from_" in pre  # the client's egress, by its own link
    post = nft.split("chain nlb_fast_post {")[1].split("\t}")[0]
    assert "hook postrouting priority 110" in post  # after srcnat (100): the source the target sees
    assert "oifname vmap {" in post and "jump to_" in post
    forward = nft.split("chain forward {")[1].split("\t}")[0].splitlines()
    assert forward[2].strip().startswith("ct mark & 0x10000 == 0x10000 accept")


@pytest.mark.skipif(shutil.which("nft") is None or shutil.which("unshare") is None, reason="needs nft")
def test_router_fastpath_ruleset_and_its_updates_load_in_nftables():
    tcp = ListenerConfig("http", "TCP_UDP", 80, "web")
    first = router_fastpath_ruleset([(node(tcp), {"http": WEB})], update=True)
    none = router_fastpath_ruleset([(node(tcp), {"http": []})], update=True)
    # with an interface endpoint link ending in the router, available, then pending
    link = EndpointLinkConfig("vpce-1", "pn-consumer-a", "10.0.1.50", "169.254.64.2", 0x100, 1, True,
                              "pl-consumer-a", 0x70000)
    endpoint = router_fastpath_ruleset([(replace(node(tcp), endpoints=(link,)), {"http": WEB})], update=True)
    pending = router_fastpath_ruleset([(replace(node(tcp), endpoints=(replace(link, available=False),)),
                                        {"http": WEB})], update=True)
    script = "".join(f"nft -f - <<'EOF'\n{r}EOF\n" for r in (first, first, none, endpoint, pending, endpoint)) + \
        "nft list table ip nlb_fastpath\n"
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=20).returncode != 0:
        pytest.skip("no user namespaces here")
    result = subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert "chain dispatch" in result.stdout and "snat to 10.0.1.5" in result.stdout
    assert "ct original zone set 1" in result.stdout and "snat to ct mark map" in result.stdout
