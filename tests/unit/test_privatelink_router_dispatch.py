"""Interface endpoints through the provider VPC's router: the plan's links and policy routing
(plan.common interface_links, plan.privatelink), the router's dispatch for an endpoint link
(engines.nlb router_fastpath_ruleset), its checks (plan.ec2) and the daemon's part."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from vpclab.daemon.balancers import NlbNode, _router_connections, apply_router_fast_path
from vpclab.engines.nlb import ruleset as nlb
from vpclab.model import load_lab, load_lab_text
from vpclab.plan.common import NLB_FAST_ENDPOINT, ROUTER_ENDPOINT_MARK, interface_links
from vpclab.plan.compile import compile_lab
from vpclab.plan.elbv2 import nlb_node_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "privatelink-cross-zone.yaml"
A = "us-east-1a"
WEB = [nlb.TargetView("i-1", "10.11.0.10", 80, A), nlb.TargetView("i-2", "10.11.0.11", 80, A)]
LINK = nlb.EndpointLinkConfig("vpce-0123456789abcdef0", "pn-consumer-a", "10.11.0.50", "169.254.64.2", 0x100, 1,
                              True, "pl-consumer-a", ROUTER_ENDPOINT_MARK)
PL_CHAIN = "link_" + b"pn-consumer-a".hex()  # a link's chains, as named in the node


def node(*listeners: nlb.ListenerConfig, link=LINK, fast: bool = True) -> nlb.NodeConfig:
    return nlb.NodeConfig("nlb", A, "10.11.0.5", (link,), listeners, hash_seed=0x1234, router_fast_path=fast,
                          vpc_cidr="10.11.0.0/24", router_ns="router:provider")


def chain(rules: str, name: str) -> list[str]:
    body = rules.split(f"\tchain {name} {{\n")[1].split("\n\t}")[0]
    return [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("type ")]


def test_the_marks_of_the_plan_and_the_engine_agree():
    assert ROUTER_ENDPOINT_MARK & nlb.ENDPOINT_FAST_MARK == nlb.ENDPOINT_FAST_MARK == NLB_FAST_ENDPOINT
    assert ROUTER_ENDPOINT_MARK & (nlb.FAST_MARK | nlb.FAST_SNAT_MARK) == nlb.FAST_MARK | nlb.FAST_SNAT_MARK


def test_an_endpoint_enis_veth_ends_in_the_provider_router_and_a_second_one_reaches_the_node():
    lab = load_lab(EXAMPLE)
    wiring = compile_lab(lab)
    link = interface_links(lab)[0]
    assert (link.router_ns, link.router_ifname, link.ifname) == ("router:provider-vpc", "pl-provider-end",
                                                                 "pn-provider-end")
    pairs = {(x.a_ns, x.a_ifname, x.b_ns, x.b_ifname) for x in wiring.links}
    assert ("router:provider-vpc", "pl-provider-end", "router:consumer-vpc", "v-provider-endp") in pairs
    assert ("router:provider-vpc", "pn-provider-end", link.node_ns, "pn-provider-end") in pairs
    router = wiring.namespace("router:provider-vpc").ip_batch
    # the router's own connections to the VPC's ENIs, the rest to the node, the node's back out
    assert "rule add pref 300 iif pl-provider-end fwmark 0x70000 lookup 200" in router
    assert "rule add pref 301 iif pl-provider-end lookup 600" in router
    assert "rule add pref 302 iif pn-provider-end lookup 601" in router
    assert "rule add pref 303 fwmark 0x70000 lookup 601" in router  # the targets' replies
    assert "route add default via 169.254.64.2 dev pn-provider-end onlink table 600" in router
    # no gateway: the consumer router's address (10.11.0.1) is this router's own too
    assert "route add default dev pl-provider-end table 601" in router
    node_batch = wiring.namespace(link.node_ns).ip_batch
    assert "route add default via 169.254.64.1 dev pn-provider-end onlink table 100" in node_batch
    config = nlb_node_config(lab, "provider-nlb", A)["endpoints"][0]
    assert (config["ifname"], config["router_ifname"], config["router_mark"]) == ("pn-provider-end",
                                                                                   "pl-provider-end", 0x70000)


def test_links_are_numbered_per_provider_router_so_zones_marks_and_tables_are_unique_there():
    # the endpoint in both consumer subnets: an ENI in each AZ, to two nodes behind one router
    lab = load_lab_text(EXAMPLE.read_text().replace("SubnetIds: [consumer-1]", "SubnetIds: [consumer-1, consumer-2]"),
                        "two-enis.yaml")
    links = interface_links(lab)
    assert [(x.index, x.zone, x.router_mark) for x in links] == [(0, 1, 0x70000), (1, 2, 0x70001)]
    assert len({x.node_ns for x in links}) == len({x.router_ifname for x in links}) == 2
    router = compile_lab(lab).namespace("router:provider-vpc").ip_batch
    assert "rule add pref 307 fwmark 0x70001 lookup 603" in router


def test_the_router_zones_what_it_dispatches_one_way_and_what_it_passes_to_the_node_both_ways():
    http = nlb.ListenerConfig("http", "TCP", 80, "web")
    echo = nlb.ListenerConfig("echo", "UDP", 7, "web")
    pp2 = nlb.ListenerConfig("pp2", "TCP", 81, "web", proxy_protocol_v2=True, relay_port=20002)
    rules = nlb.router_fastpath_ruleset([(node(http, echo, pp2), {"http": WEB, "echo": WEB, "pp2": WEB})])
    assert chain(rules, "endpoints") == [f'iifname vmap {{ "pl-consumer-a" : goto {PL_CHAIN}, '
                                         f'"pn-consumer-a" : goto back_{PL_CHAIN} }}']
    assert chain(rules, PL_CHAIN) == [
        'ip daddr 10.11.0.50 tcp dport 80 ct original zone set 1 accept comment "vpce-0123456789abcdef0"',
        'ip daddr 10.11.0.50 udp dport 7 ct original zone set 1 accept comment "vpce-0123456789abcdef0"',
        "ct zone set 1"]  # the PPv2 listener (its relay is in the node), anything else, goes to the node
    assert chain(rules, f"back_{PL_CHAIN}") == ["ct zone set 1"]  # and comes back from it


def test_nothing_passes_while_the_endpoint_is_not_available():
    rules = nlb.router_fastpath_ruleset([(node(nlb.ListenerConfig("http", "TCP", 80, "web"),
                                               link=replace(LINK, available=False)), {"http": WEB})])
    assert chain(rules, PL_CHAIN) == ['drop comment "not available"']


def test_the_router_dispatches_an_endpoints_connections_as_the_node_does_and_translates_to_its_ip():
    http = nlb.ListenerConfig("http", "TCP", 80, "web", idle_timeout=600, preserve_client_ip=True)
    config = node(http)
    rules = nlb.router_fastpath_ruleset([(config, {"http": WEB})])
    at_node = nlb.node_ruleset(config, {"http": WEB})
    [rule] = chain(rules, f"dispatch_{PL_CHAIN}")
    assert rule.startswith('ip daddr 10.11.0.50 tcp dport 80 ct timeout set "tcp_600" '
                           "ct mark set 0x70000 meta mark set 0x70000 dnat")
    assert rule.split("dnat")[1] == re.search(r"dport 80 .*?dnat(.*)$", at_node, re.M).group(1)  # same pick
    dispatch = chain(rules, "dispatch")
    # after the unknown segments (the node resets them), before any node's rule (an ENI may have its IP)
    assert dispatch.index(f'iifname vmap {{ "pl-consumer-a" : goto dispatch_{PL_CHAIN} }}') == 2
    # always translated, even where the listener preserves its own clients' IPs (PrivateLink never does)
    assert ('ct mark & 0x40000 == 0x40000 snat ip to ct mark map { 0x70000 : 10.11.0.5 } '
            'comment "PrivateLink: targets see the node"') in chain(rules, "postrouting")


@pytest.mark.parametrize("why", ["no fast path", "no target", "target outside the VPC"])
def test_an_endpoint_the_router_does_not_dispatch_for_passes_everything_to_the_node(why):
    http = nlb.ListenerConfig("http", "TCP", 80, "web")
    config = node(http, fast=why != "no fast path")
    targets = {"no target": [], "target outside the VPC": [nlb.TargetView("ip", "192.168.0.9", 80, A)]}.get(why, WEB)
    rules = nlb.router_fastpath_ruleset([(config, {"http": targets})])
    assert chain(rules, PL_CHAIN) == ["ct zone set 1"]
    assert "0x70000" not in rules and "ct original zone set" not in rules
    update = nlb.router_fastpath_ruleset([(config, {"http": targets})], update=True)
    assert "delete chain ip nlb_fastpath endpoints" not in update


def test_the_router_checks_endpoint_connections_by_mark_as_if_through_the_node():
    nft = compile_lab(load_lab(EXAMPLE)).namespace("router:provider-vpc").nft
    pre = chain(nft, "nlb_fast_pre")
    assert pre[0] == ('ct mark & 0x40000 == 0x40000 meta mark set ct mark '
                      'comment "interface endpoints: routed by mark"')
    # the node's ingress by the link's mark (the node's ENI has nothing to check here), never by the ENI's IP
    assert "ct mark vmap { 0x70000 : return }" in pre


def test_the_daemon_loads_the_routers_table_for_endpoint_links_without_a_fast_path_and_forgets_their_connections():
    config = node(nlb.ListenerConfig("http", "TCP", 80, "web"), fast=False)
    loaded = []
    apply_router_fast_path(lambda ns, argv, text: loaded.append((ns, text)),
                           [NlbNode("nlb", A, "nlb:nlb:a", config, {"http": WEB})], "router:provider")
    assert [ns for ns, _ in loaded] == ["router:provider"] and "chain endpoints" in loaded[0][1]
    assert _router_connections(config) == []  # nothing dispatched there
    assert ("router:provider", ["--reply-dst", "10.11.0.5", "--mark", "0x70000"]) in \
        _router_connections(replace(config, router_fast_path=True))


# the NLB node of AZ a gets an ACL of its own: its ENI has checks, both ways
STRICT = """
network_acls:
  strict:
    VpcId: provider-vpc
    SubnetAssociations: [provider-1]
    Entries:
      - {RuleNumber: 100, Protocol: -1, RuleAction: deny, CidrBlock: 192.168.0.0/16}
      - {RuleNumber: 200, Protocol: -1, RuleAction: allow, CidrBlock: 0.0.0.0/0}
      - {RuleNumber: 100, Protocol: -1, RuleAction: deny, Egress: true, CidrBlock: 192.168.0.0/16}
      - {RuleNumber: 200, Protocol: -1, RuleAction: allow, Egress: true, CidrBlock: 0.0.0.0/0}
"""


def test_the_router_checks_an_endpoints_connections_against_its_nodes_subnet_by_mark_not_by_address():
    lab = load_lab_text(EXAMPLE.read_text() + STRICT, "strict.yaml")
    nft = compile_lab(lab).namespace("router:provider-vpc").nft
    eni = lab.load_balancers["provider-nlb"].node_in(A).eni_id.replace("-", "_")
    pre, post = chain(nft, "nlb_fast_pre"), chain(nft, "nlb_fast_post")
    # the targets' replies enter the node's subnet; then nothing else (goto): the ENI's IP is no node's
    assert f"ct mark vmap {{ 0x70000 : goto to_{eni} }}" in pre
    assert pre.index(f"ct mark vmap {{ 0x70000 : goto to_{eni} }}") < \
        next(i for i, line in enumerate(pre) if line.startswith("ct original ip daddr vmap"))
    # the connection leaves the node's subnet towards the target, which then sees the node's IP
    assert f"ct mark vmap {{ 0x70000 : jump from_{eni} }}" in post
    assert any(line.startswith("ct mark & 0x40000 == 0 ct original ip daddr vmap") for line in post)
    assert post[-1].startswith("oifname vmap")
