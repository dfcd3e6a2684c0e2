"""`vpclab replace-nodes`: an internal ALB's nodes get new IPs (model), which the router routes
and checks alongside the old ones, the node keeps as secondary addresses, HAProxy binds, DNS
gives alone, and the fabric adds and removes live (plan, fabric)."""
from __future__ import annotations

from pathlib import Path

import pytest

from vpclab.engines.alb.config import bind_line
from vpclab.fabric.apply import _split_addresses
from vpclab.model import ChangeError, load_lab_text
from vpclab.model.changes import replace_nodes
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
