"""`vpclab replace-nodes` and `scale-nodes`: an internal ALB's nodes get new IPs, or more or
fewer of them (model), which the router routes and checks alongside the old ones, the node keeps
as secondary addresses, HAProxy binds, DNS gives (the retired ones not), and the fabric adds and
removes live (plan, fabric)."""
from __future__ import annotations

from pathlib import Path

import pytest

from vpclab.engines.alb.config import bind_line, render
from vpclab.fabric.apply import _split_addresses
from vpclab.model import ChangeError, load_lab_text
from vpclab.model.changes import replace_nodes, scale_nodes
from vpclab.model.elbv2 import node_addresses
from vpclab.plan.compile import compile_lab
from vpclab.plan.elbv2 import alb_node_config
from vpclab.plan.route53 import aws_dns_names

ROOT = Path(__file__).resolve().parents[2]


def example(name: str):
    return load_lab_text((ROOT / "examples" / name).read_text(), name, name="t")


def ips(lab, lb="web-alb"):
    return [(str(n.private_ip), [str(ip) for ip in n.retired_ips]) for n in lab.load_balancers[lb].nodes]


def test_each_node_takes_the_next_free_address_and_keeps_the_old_one_until_the_next_time():
    lab = example("static-ip-alb.yaml")
    assert ips(lab) == [("10.0.11.4", []), ("10.0.12.4", [])]
    once = replace_nodes(lab, "web-alb")
    assert ips(once) == [("10.0.11.5", ["10.0.11.4"]), ("10.0.12.5", ["10.0.12.4"])]
    twice = replace_nodes(once, lab.load_balancers["web-alb"].arn)
    # the address retired for good is not handed straight back
    assert ips(twice) == [("10.0.11.6", ["10.0.11.5"]), ("10.0.12.6", ["10.0.12.5"])]


@pytest.mark.parametrize("lb, code", [("static-nlb", "ValidationError"), ("nothing", "LoadBalancerNotFound")])
def test_only_an_albs_nodes_are_replaced(lb, code):
    with pytest.raises(ChangeError) as info:
        replace_nodes(example("static-ip-alb.yaml"), lb)
    assert info.value.code == code


def test_internet_facing_albs_are_refused():
    with pytest.raises(ChangeError, match="internal ALBs only"):
        replace_nodes(example("alb.yaml"), "web-alb")


def test_dns_gives_the_new_addresses_alone():
    lab = replace_nodes(example("static-ip-alb.yaml"), "web-alb")
    names = dict(aws_dns_names(lab))
    assert [ip for ip, _lb, _az in names[lab.load_balancers["web-alb"].dns_name]] == ["10.0.11.5", "10.0.12.5"]


def test_the_node_keeps_the_old_address_and_haproxy_binds_both():
    lab = replace_nodes(example("static-ip-alb.yaml"), "web-alb")
    ns = compile_lab(lab).namespace("alb:web-alb:us-east-1a")
    assert "addr add 10.0.11.5/24 dev eth0" in ns.ip_batch and "addr add 10.0.11.4/24 dev eth0" in ns.ip_batch
    assert ("ipv4/conf/default/promote_secondaries", "1") in ns.sysctls
    node = alb_node_config(lab, "web-alb", "us-east-1a")
    listener = node["listeners"][0]
    assert bind_line(node, listener, "x.pem").startswith("    bind 10.0.11.5:443,10.0.11.4:443 ssl crt x.pem")


def test_the_router_routes_checks_and_groups_both_addresses():
    lab = replace_nodes(example("static-ip-alb.yaml"), "web-alb")
    router = compile_lab(lab).namespace("router:main")
    routes = [line for line in router.ip_batch if line.startswith("route add 10.0.11.")]
    assert any(line.startswith("route add 10.0.11.4/32 dev a-") for line in routes)
    assert any(line.startswith("route add 10.0.11.5/32 dev a-") for line in routes)
    assert "10.0.11.4" in router.nft and "ip daddr != { 10.0.11.5, 10.0.11.4 } drop" in router.nft
    sg_set = next(line for line in router.nft.splitlines() if line.strip().startswith(
        f"set {lab.security_groups['alb-sg'].id.replace('-', '_')}"))
    assert all(ip in sg_set for ip in ("10.0.11.4", "10.0.11.5", "10.0.12.4", "10.0.12.5"))


def test_the_fabric_reconciles_addresses_apart_from_the_rest():
    rest, addresses = _split_addresses(["link set eth0 up", "addr add 10.0.11.5/24 dev eth0",
                                        "route add default via 10.0.11.1 dev eth0", "addr add 10.0.11.4/24 dev eth0"])
    assert rest == ["link set eth0 up", "route add default via 10.0.11.1 dev eth0"]
    assert addresses == ["addr add 10.0.11.5/24 dev eth0", "addr add 10.0.11.4/24 dev eth0"]


def binds(lab) -> str:
    """The addresses HAProxy binds in AZ a."""
    node = alb_node_config(lab, "web-alb", "us-east-1a")
    return bind_line(node, node["listeners"][0], "x.pem").split()[1]


def scaled(lab, lb="web-alb"):
    return [([str(ip) for ip in n.ips], [str(ip) for ip in n.retired_ips]) for n in lab.load_balancers[lb].nodes]


def test_scaling_out_adds_addresses_that_dns_gives_and_the_node_serves():
    lab = example("static-ip-alb.yaml")
    out = scale_nodes(lab, "web-alb", 3)
    assert scaled(out) == [(["10.0.11.4", "10.0.11.5", "10.0.11.6"], []), (["10.0.12.4", "10.0.12.5", "10.0.12.6"], [])]
    names = dict(aws_dns_names(out))
    assert [ip for ip, _lb, _az in names[lab.load_balancers["web-alb"].dns_name]] == [
        "10.0.11.4", "10.0.11.5", "10.0.11.6", "10.0.12.4", "10.0.12.5", "10.0.12.6"]
    assert binds(out) == "10.0.11.4:443,10.0.11.5:443,10.0.11.6:443"
    assert "addr add 10.0.11.6/24 dev eth0" in compile_lab(out).namespace("alb:web-alb:us-east-1a").ip_batch
    router = compile_lab(out).namespace("router:main")
    assert any(line.startswith("route add 10.0.11.6/32 dev a-") for line in router.ip_batch)
    assert "ip daddr != { 10.0.11.4, 10.0.11.5, 10.0.11.6 } drop" in router.nft
    # an alb target group sends to every node the ALB has
    group = out.target_groups["alb-target"]
    assert [ip for ip, _az in node_addresses(group.targets[0], group, out.load_balancers)] == [
        "10.0.11.4", "10.0.11.5", "10.0.11.6", "10.0.12.4", "10.0.12.5", "10.0.12.6"]


def test_scaling_in_retires_the_newest_addresses_which_serve_on_out_of_dns():
    out = scale_nodes(scale_nodes(example("static-ip-alb.yaml"), "web-alb", 3), "web-alb", 1)
    assert scaled(out) == [(["10.0.11.4"], ["10.0.11.5", "10.0.11.6"]), (["10.0.12.4"], ["10.0.12.5", "10.0.12.6"])]
    assert [ip for ip, _lb, _az in dict(aws_dns_names(out))[out.load_balancers["web-alb"].dns_name]] == [
        "10.0.11.4", "10.0.12.4"]
    assert binds(out) == "10.0.11.4:443,10.0.11.5:443,10.0.11.6:443"
    # scaling out again takes fresh addresses (retired ones never come straight back) and keeps them serving
    again = scale_nodes(out, "web-alb", 2)
    assert scaled(again)[0] == (["10.0.11.4", "10.0.11.7"], ["10.0.11.5", "10.0.11.6"])


def test_replacing_a_scaled_alb_replaces_every_address():
    out = replace_nodes(scale_nodes(example("static-ip-alb.yaml"), "web-alb", 2), "web-alb")
    assert scaled(out) == [(["10.0.11.6", "10.0.11.7"], ["10.0.11.4", "10.0.11.5"]),
                           (["10.0.12.6", "10.0.12.7"], ["10.0.12.4", "10.0.12.5"])]
    assert str(out.target_groups["alb-target"].targets[0].ip) == "10.0.11.6"  # where its checks go


@pytest.mark.parametrize("lb, count, code, words", [
    ("web-alb", 0, "ValidationError", "1 to 8"), ("web-alb", 9, "ValidationError", "1 to 8"),
    ("static-nlb", 2, "ValidationError", "never change"), ("nothing", 2, "LoadBalancerNotFound", "not found")])
def test_scaling_is_refused_out_of_range_and_for_other_load_balancers(lb, count, code, words):
    with pytest.raises(ChangeError) as info:
        scale_nodes(example("static-ip-alb.yaml"), lb, count)
    assert info.value.code == code and words in str(info.value), str(info.value)


def test_haproxy_connects_to_targets_from_the_nodes_dns_address():
    # the kernel's primary address stays the first one added, which `replace-nodes` retires and
    # the next change removes, while HAProxy still holds pooled target connections from it
    once = replace_nodes(example("static-ip-alb.yaml"), "web-alb")
    config = render(alb_node_config(once, "web-alb", "us-east-1a"), runtime_socket="/x.sock", certificates={
        "alb-https": "x.pem"})
    defaults = config.split("\ndefaults\n", 1)[1].split("\n\n", 1)[0]
    assert "    source 10.0.11.5\n" in defaults + "\n"
