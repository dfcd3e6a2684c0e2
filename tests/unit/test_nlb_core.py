"""The NLB node's pure core: target choice (reference §3.3, §3.6) and its nftables ruleset."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from vpclab.engines.nlb.ruleset import (
    DRAINING, HEALTHY, INITIAL, UNHEALTHY, UNUSED, ListenerConfig, NodeConfig, TargetView,
    listener_routes, node_ruleset, routable_targets, zone_in_dns, zone_in_service,
)

A, B = "us-east-1a", "us-east-1b"


def t(ip: str, az: str, state: str = HEALTHY, port: int = 80) -> TargetView:
    return TargetView(f"i-{ip.replace('.', '')}", ip, port, az, state)


def ips(targets) -> list[str]:
    return [x.ip for x in targets]


def test_cross_zone_off_sends_only_to_targets_in_the_nodes_zone():
    targets = [t("10.0.1.10", A), t("10.0.2.10", B)]
    assert ips(routable_targets(targets, A, cross_zone=False)) == ["10.0.1.10"]


def test_cross_zone_on_sends_to_every_zone():
    targets = [t("10.0.1.10", A), t("10.0.2.10", B)]
    assert ips(routable_targets(targets, A, cross_zone=True)) == ["10.0.1.10", "10.0.2.10"]


def test_unhealthy_targets_get_no_new_connections_while_one_is_healthy():
    targets = [t("10.0.1.10", A, UNHEALTHY), t("10.0.1.11", A), t("10.0.1.12", A, INITIAL)]
    assert ips(routable_targets(targets, A, cross_zone=False)) == ["10.0.1.11"]


def test_all_targets_unhealthy_in_the_zone_fails_open_to_the_zone_only():
    targets = [t("10.0.1.10", A, UNHEALTHY), t("10.0.1.11", A, UNHEALTHY), t("10.0.2.10", B)]
    assert ips(routable_targets(targets, A, cross_zone=False)) == ["10.0.1.10", "10.0.1.11"]


def test_all_targets_unhealthy_everywhere_fails_open_across_zones_with_cross_zone_on():
    targets = [t("10.0.1.10", A, UNHEALTHY), t("10.0.2.10", B, UNHEALTHY)]
    assert ips(routable_targets(targets, A, cross_zone=True)) == ["10.0.1.10", "10.0.2.10"]


def test_one_healthy_target_in_another_zone_ends_fail_open_with_cross_zone_on():
    targets = [t("10.0.1.10", A, UNHEALTHY), t("10.0.2.10", B)]
    assert ips(routable_targets(targets, A, cross_zone=True)) == ["10.0.2.10"]


def test_draining_and_unused_targets_never_take_new_connections_even_failing_open():
    targets = [t("10.0.1.10", A, DRAINING), t("10.0.1.11", A, UNUSED), t("10.0.1.12", A, UNHEALTHY)]
    assert ips(routable_targets(targets, A, cross_zone=False)) == ["10.0.1.12"]


def test_a_zone_without_targets_has_nothing_to_route_to():
    assert routable_targets([t("10.0.2.10", B)], A, cross_zone=False) == []


def test_new_targets_in_initial_state_are_used_when_nothing_is_healthy_yet():
    targets = [t("10.0.1.10", A, INITIAL), t("10.0.1.11", A, INITIAL)]
    assert ips(routable_targets(targets, A, cross_zone=False)) == ["10.0.1.10", "10.0.1.11"]


def test_zone_leaves_dns_without_a_healthy_target():
    assert zone_in_service([t("10.0.1.10", A), t("10.0.2.10", B, UNHEALTHY)], A, cross_zone=False)
    assert not zone_in_service([t("10.0.1.10", A), t("10.0.2.10", B, UNHEALTHY)], B, cross_zone=False)
    assert zone_in_service([t("10.0.1.10", A), t("10.0.2.10", B, UNHEALTHY)], B, cross_zone=True)


def test_cross_zone_off_an_az_stays_in_dns_only_with_a_healthy_target_in_each_target_group():
    web = [t("10.0.1.10", A), t("10.0.2.10", B)]
    half = [t("10.0.1.11", A, UNHEALTHY), t("10.0.2.11", B)]
    groups = [(web, False), (half, False)]
    assert not zone_in_dns(groups, A)  # web is healthy in A, but half is not
    assert zone_in_dns(groups, B)
    assert zone_in_dns([(web, False)], A)


def test_cross_zone_on_each_target_group_needs_a_healthy_target_in_any_az():
    web = [t("10.0.1.10", A), t("10.0.2.10", B, UNHEALTHY)]
    half = [t("10.0.1.11", A, UNHEALTHY), t("10.0.2.11", B)]
    assert zone_in_dns([(web, True), (half, True)], A) and zone_in_dns([(web, True), (half, True)], B)
    assert not zone_in_dns([(web, True), ([t("10.0.2.11", B, UNHEALTHY)], True)], A)
    assert not zone_in_dns([(web, False), (half, True)], B)  # web keeps its own setting: off


def test_a_target_group_without_targets_does_not_count_but_alone_keeps_no_az():
    web = [t("10.0.1.10", A)]
    assert zone_in_dns([(web, False), ([], False)], A)
    assert not zone_in_dns([([], False)], A)
    assert not zone_in_dns([], A)


ENDPOINT = {"vpc_endpoint_id": "vpce-0123456789abcdef0", "ifname": "pl-consumer-a", "eni_ip": "10.0.1.50",
            "link_ip": "169.254.64.2", "mark": 0x100, "zone": 1, "available": True}


HERE = 'iifname . ip daddr { "eth0" . 10.0.1.5, "pl-consumer-a" . 10.0.1.50 }'


def config(endpoints=(ENDPOINT,), **listener) -> NodeConfig:
    base = dict(name="web", protocol="TCP", port=80, target_group="tg")
    base.update(listener)
    return NodeConfig.from_dict({"load_balancer": "nlb", "availability_zone": A, "node_ip": "10.0.1.5",
                                 "endpoints": list(endpoints), "listeners": [base]})


def test_tcp_connections_pick_a_random_target_and_conntrack_pins_them():
    rules = node_ruleset(config(), {"web": [t("10.0.1.10", A), t("10.0.1.11", A, port=8080)]})
    # reached at the node's IP, or at an endpoint's ENI IP on its link
    assert (f'{HERE} tcp dport 80 ct timeout set "tcp_350" meta mark set 0x1 '
            "dnat ip to numgen random mod 2 map { 0 : 10.0.1.10 . 80, 1 : 10.0.1.11 . 8080 }") in rules


def test_udp_flows_hash_on_the_five_tuple():
    rules = node_ruleset(config(protocol="UDP", preserve_client_ip=True), {"web": [t("10.0.1.10", A)]})
    assert ('udp dport 80 ct timeout set "udp_idle" dnat ip to jhash ip saddr . udp sport . ip daddr . udp dport '
            "mod 1") in rules
    assert "ct timeout udp_idle" in rules and "unreplied: 120" in rules


def test_tcp_udp_listener_dispatches_both_protocols():
    rules = node_ruleset(config(protocol="TCP_UDP"), {"web": [t("10.0.1.10", A)]})
    assert 'tcp dport 80 ct timeout set "tcp_350" meta mark set 0x1 dnat' in rules
    assert 'udp dport 80 ct timeout set "udp_idle" meta mark set 0x1 dnat' in rules


def test_source_ip_stickiness_hashes_on_the_client_address():
    rules = node_ruleset(config(source_ip_stickiness=True), {"web": [t("10.0.1.10", A), t("10.0.1.11", A)]})
    assert "dnat ip to jhash ip saddr mod 2" in rules


def test_client_ip_preservation_leaves_the_source_alone():
    preserved = node_ruleset(config(preserve_client_ip=True), {"web": [t("10.0.1.10", A)]})
    assert 'tcp dport 80 ct timeout set "tcp_350" dnat ip to numgen' in preserved
    assert "tcp dport 80 meta mark set" not in preserved
    # but traffic from an interface endpoint is always translated to the node's IP
    assert 'iifname != "eth0" meta mark set 0x1' in preserved


def test_listener_idle_timeout_is_a_conntrack_timeout_named_by_its_value():
    rules = node_ruleset(config(idle_timeout=600), {"web": [t("10.0.1.10", A)]})
    assert "ct timeout tcp_600" in rules and "policy = { established: 600 }" in rules
    # set on the connection conntrack has just made, by the rule that dispatches it: before
    # conntrack (priority raw) there is no connection yet, and the kernel ignores it there
    dispatch = rules.split("chain dispatch {")[1].split("\n\t}")[0]
    assert 'tcp dport 80 ct timeout set "tcp_600" meta mark set 0x1 dnat' in dispatch
    assert rules.count("ct timeout set") == 1


def test_a_listener_without_targets_dispatches_nothing():
    rules = node_ruleset(config(), {"web": []})
    assert "dnat" not in rules.split("chain dispatch {")[1].split("}")[0]


def test_segments_of_unknown_connections_are_reset():
    rules = node_ruleset(config(), {"web": [t("10.0.1.10", A)]})
    assert "tcp flags & (fin | syn | rst | ack) != syn return" in rules
    # at the node's IP, and at an ENI's IP, which is not the node's: those segments are forwarded
    reset = 'tcp dport 80 tcp flags & (fin | syn | rst | ack) != syn reject with tcp reset comment "no such connection"'
    assert f"ip daddr 10.0.1.5 {reset}" in chain(rules, "input")
    assert f'iifname . ip daddr {{ "pl-consumer-a" . 10.0.1.50 }} {reset}' in chain(rules, "forward")


def test_proxy_protocol_listener_redirects_clients_to_the_relay_on_the_address_they_reached():
    rules = node_ruleset(config(proxy_protocol_v2=True, relay_port=20000), {"web": [t("10.0.1.10", A)]})
    # redirected to the address of the interface they came in on: direct clients to the node's IP,
    # endpoint clients to their link's address, where the endpoint's own relay listens
    assert f'{HERE} tcp dport 80 ct timeout set "tcp_350" redirect to :20000' in rules
    out = rules.split("chain dispatch_out {")[1].split("}")[0]
    assert 'ip daddr 10.0.1.5 tcp dport 80 ct timeout set "tcp_350" dnat ip to numgen random mod 1' in out


def chain(rules: str, name: str) -> list[str]:
    """The rules of one chain of the node's table, without its hook line."""
    body = rules.split(f"\tchain {name} {{\n")[1].split("\n\t}")[0]
    return [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("type ")]


LINK = "link_" + b"pl-consumer-a".hex()


def test_each_endpoint_keeps_its_connections_in_its_own_conntrack_zone_before_conntrack():
    rules = node_ruleset(config(), {"web": [t("10.0.1.10", A)]})
    assert "type filter hook prerouting priority raw" in rules.split("chain endpoints {")[1].split("}")[0]
    # only packets that come in on an endpoint link pay more than one lookup
    assert chain(rules, "endpoints") == [f'iifname vmap {{ "pl-consumer-a" : goto {LINK} }}']
    # the original direction only: the targets' replies, whose tuples NAT made unique, need no zone
    assert chain(rules, LINK)[0] == 'ip daddr 10.0.1.50 ct original zone set 1 accept comment "vpce-0123456789abcdef0"'


def test_two_endpoints_have_two_zones():
    other = dict(ENDPOINT, vpc_endpoint_id="vpce-0fedcba9876543210", ifname="pl-other-a", link_ip="169.254.64.6",
                 mark=0x101, zone=2)
    rules = node_ruleset(config(endpoints=(ENDPOINT, other)), {"web": [t("10.0.1.10", A)]})
    assert "ct original zone set 1 accept" in "\n".join(chain(rules, LINK))
    assert "ct original zone set 2 accept" in "\n".join(chain(rules, "link_" + b"pl-other-a".hex()))


def test_endpoint_traffic_is_translated_by_conntrack_alone():
    rules = node_ruleset(config(), {"web": [t("10.0.1.10", A)]})
    # DNAT to the target and SNAT to the node; conntrack gives the consumer the ENI's IP back
    assert 'iifname != "eth0" meta mark set 0x1' in rules and "snat ip to 10.0.1.5" in rules
    assert " set 10." not in rules and "table netdev" not in rules


def test_endpoint_replies_are_routed_back_by_connection_mark():
    rules = node_ruleset(config(), {"web": [t("10.0.1.10", A)]})
    assert 'ct mark set iifname map { "pl-consumer-a" : 0x100 }' in rules
    assert "ct direction reply ct mark != 0 meta mark set ct mark" in rules.split("chain replies {")[1]
    assert "type route hook output" in rules.split("chain replies_out {")[1].split("}")[0]


def test_an_endpoint_that_is_not_available_carries_nothing():
    rules = node_ruleset(config(endpoints=[dict(ENDPOINT, available=False)]), {"web": [t("10.0.1.10", A)]})
    # dropped before conntrack, even where the ENI's IP is also the node's (identical CIDRs)
    assert chain(rules, LINK) == ["drop"]


def test_an_endpoint_link_carries_only_traffic_to_its_eni():
    assert chain(node_ruleset(config(), {"web": [t("10.0.1.10", A)]}), LINK) == [
        'ip daddr 10.0.1.50 ct original zone set 1 accept comment "vpce-0123456789abcdef0"', "drop"]


def test_a_node_without_endpoints_has_no_zones_and_matches_its_own_ip_alone():
    rules = node_ruleset(config(endpoints=()), {"web": [t("10.0.1.10", A)]})
    assert "zone" not in rules and "iifname map" not in rules and "iifname . ip daddr" not in rules
    assert 'ip daddr 10.0.1.5 tcp dport 80 ct timeout set "tcp_350" meta mark set 0x1 dnat' in rules
    # and nothing on its hooks that only endpoints and relays need
    assert "chain endpoints" not in rules and "chain link_" not in rules and "chain replies " not in rules
    assert "chain dispatch_out" not in rules and "chain replies_out" not in rules


def test_proxy_protocol_with_client_ip_preserved_relays_from_the_clients_address():
    rules = node_ruleset(config(proxy_protocol_v2=True, preserve_client_ip=True, relay_port=20000),
                         {"web": [t("10.0.1.10", A)]})
    # the relay binds to the client's IP; its connections are marked so that replies come home
    out = rules.split("chain replies_out {")[1].split("}")[0]
    assert 'ip daddr 10.0.1.5 tcp dport 80 ct state new ct mark set 0x2 comment "transparent relay"' in out
    assert "ct direction reply ct mark != 0 meta mark set ct mark" in rules.split("chain replies {")[1]
    plain = node_ruleset(config(proxy_protocol_v2=True, relay_port=20000), {"web": [t("10.0.1.10", A)]})
    assert "transparent relay" not in plain


def test_update_resets_every_chain_in_the_same_transaction():
    rules = node_ruleset(config(), {"web": [t("10.0.1.10", A)]}, update=True)
    head = rules.split("table ip nlb {")[0].splitlines()
    # every chain the node may have is declared (so one it now needs exists) and flushed
    for name in ("endpoints", "replies", "dispatch", "dispatch_out", "replies_out", "postrouting", "forward",
                 "input", LINK):
        assert f"flush chain ip nlb {name}" in head
    # those it does not need (no relay here) go
    assert [line for line in head if line.startswith("delete")] == ["delete chain ip nlb dispatch_out"]
    plain = node_ruleset(config(endpoints=()), {"web": [t("10.0.1.10", A)]}, update=True)
    assert [line for line in plain.splitlines() if line.startswith("delete")] == [
        f"delete chain ip nlb {c}" for c in ("endpoints", "replies", "dispatch_out", "replies_out")]
    assert "link_" not in plain


def test_listener_routes_use_each_listeners_own_cross_zone_setting():
    cfg = NodeConfig.from_dict({"load_balancer": "nlb", "availability_zone": A, "node_ip": "10.0.1.5",
                                "listeners": [dict(name="a", protocol="TCP", port=80, target_group="tg"),
                                              dict(name="b", protocol="TCP", port=81, target_group="tg",
                                                   cross_zone=True)]})
    routes = listener_routes(cfg, {"tg": [t("10.0.1.10", A), t("10.0.2.10", B)]})
    assert ips(routes["a"]) == ["10.0.1.10"] and ips(routes["b"]) == ["10.0.1.10", "10.0.2.10"]


@pytest.mark.skipif(shutil.which("nft") is None or shutil.which("unshare") is None, reason="needs nft")
def test_ruleset_and_its_update_load_in_nftables():
    cfg = config(protocol="TCP_UDP", proxy_protocol_v2=True, preserve_client_ip=True, relay_port=20000)
    first = node_ruleset(cfg, {"web": [t("10.0.1.10", A), t("10.0.1.11", A)]})
    update = node_ruleset(cfg, {"web": [t("10.0.1.10", A)]}, update=True)
    # a live attribute change: the relays go, and with them the chains only they needed, and come back
    fewer = node_ruleset(config(protocol="TCP_UDP", endpoints=()), {"web": [t("10.0.1.10", A)]}, update=True)
    script = (f"ip link add pl-consumer-a type veth peer name peer\n"  # iifname maps want the interface
              f"nft -c -f - <<'EOF'\n{first}EOF\nnft -f - <<'EOF'\n{first}EOF\nnft -f - <<'EOF'\n{update}EOF\n"
              f"nft -f - <<'EOF'\n{fewer}EOF\nnft list table ip nlb\nnft -f - <<'EOF'\n{update}EOF\n"
              "nft list table ip nlb\n")
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=20).returncode != 0:
        pytest.skip("no user namespaces here")
    # a rule the kernel refuses in a user namespace (EPERM) fails here, it does not skip
    result = subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    without, again = result.stdout.split("table ip nlb {")[1:]
    assert "chain replies_out" not in without and "chain replies_out" in again
