"""NLB target groups of type `alb` (reference §5.2): TCP only, one ALB on one of its listener
ports, HTTP(S) health checks, attributes fixed, the client's address preserved; an NLB node
sends to the ALB's node IPs of its AZ."""
from __future__ import annotations

from pathlib import Path

import pytest

from vpclab.model import LabFileError, load_lab_text
from vpclab.model.changes import replace_nodes
from vpclab.model.elbv2 import node_addresses

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "static-ip-alb.yaml").read_text()
GROUP = "target_groups.alb-target"
ALB_GROUP = """  alb-target:
    Protocol: TCP
    Port: 443
    VpcId: main
    TargetType: alb
    HealthCheckProtocol: HTTPS
    HealthCheckIntervalSeconds: 5
    HealthCheckTimeoutSeconds: 2
    HealthyThresholdCount: 2
    Targets: [web-alb]
"""


def load(text: str = EXAMPLE):
    return load_lab_text(text, "lab.yaml", name="t")


def with_group(new: str) -> str:
    assert EXAMPLE.count(ALB_GROUP) == 1
    return EXAMPLE.replace(ALB_GROUP, new)


def refused_at(text: str, key_path: str) -> str:
    with pytest.raises(LabFileError) as info:
        load(text)
    assert info.value.key_path == key_path, (info.value.key_path, info.value.reason)
    return info.value.reason


def test_the_alb_is_the_target_and_the_client_ip_is_preserved():
    lab = load()
    group, alb = lab.target_groups["alb-target"], lab.load_balancers["web-alb"]
    assert [t.id for t in group.targets] == [alb.arn]
    assert group.attributes["preserve_client_ip.enabled"] == "true"
    check = group.health_check_config()
    assert (check.protocol, check.port) == ("HTTPS", "traffic-port")
    assert node_addresses(group.targets[0], group, lab.load_balancers) == [("10.0.11.4", "us-east-1a"),
                                                                           ("10.0.12.4", "us-east-1b")]


def test_the_nlb_follows_the_albs_nodes_when_they_are_replaced():
    lab = replace_nodes(load(), "web-alb")
    group = lab.target_groups["alb-target"]
    assert [ip for ip, _ in node_addresses(group.targets[0], group, lab.load_balancers)] == ["10.0.11.5", "10.0.12.5"]
    assert str(group.targets[0].ip) == "10.0.11.5"  # where its health checks go


@pytest.mark.parametrize("old, new, key, words", [
    ("    Protocol: TCP\n    Port: 443\n    VpcId: main\n    TargetType: alb",
     "    Protocol: TLS\n    Port: 443\n    VpcId: main\n    TargetType: alb", "Protocol", "TLS"),
    ("    Protocol: TCP\n    Port: 443\n    VpcId: main\n    TargetType: alb",
     "    Protocol: UDP\n    Port: 443\n    VpcId: main\n    TargetType: alb", "TargetType", "is TCP"),
    ("    Port: 443\n    VpcId: main\n    TargetType: alb", "    Port: 444\n    VpcId: main\n    TargetType: alb",
     "Port", "listens on 443, not 444"),
    ("    Targets: [web-alb]\n", "    Targets: [web-alb, web-alb]\n", "Targets[1]", "one target"),
    ("    Targets: [web-alb]\n", "    Targets: [static-nlb]\n", "Targets[0]", "network load balancer"),
    ("    Targets: [web-alb]\n", "    Targets: [web-1]\n", "Targets[0]", "Application Load Balancer's name"),
    ("    HealthCheckProtocol: HTTPS\n", "    HealthCheckProtocol: TCP\n", None, "HTTP or HTTPS"),
    ("    Targets: [web-alb]\n", "    Targets: [web-alb]\n    TargetGroupAttributes: {preserve_client_ip.enabled: false}\n",
     "TargetGroupAttributes", "fixed"),
])
def test_awss_constraints_are_refused_at_their_key(old, new, key, words):
    assert ALB_GROUP.count(old) == 1, old
    text = with_group(ALB_GROUP.replace(old, new))
    with pytest.raises(LabFileError) as info:
        load(text)
    assert words in info.value.reason, info.value.reason
    if key is not None:
        assert info.value.key_path == f"{GROUP}.{key}", (info.value.key_path, info.value.reason)


def with_more_nlbs(count: int) -> str:
    """The example with `count` more internal NLBs, each with its own alb group on web-alb."""
    text = EXAMPLE
    for i in range(2, 2 + count):
        text = text.replace("load_balancers:\n", f"load_balancers:\n  nlb-{i}: {{Type: network, Scheme: internal, "
                                                 f"Subnets: [public-a]}}\n", 1)
        text = text.replace("target_groups:\n", "target_groups:\n" + ALB_GROUP.replace("alb-target:", f"alb-{i}:"), 1)
        text = text.replace("listeners:\n", f"listeners:\n  nlb-{i}-https: {{LoadBalancerArn: nlb-{i}, Protocol: TCP, "
                                            f"Port: 443, DefaultActions: [{{Type: forward, TargetGroupArn: alb-{i}}}]}}\n", 1)
    return text


def test_an_alb_serves_two_nlbs():
    lab = load(with_more_nlbs(1))
    assert lab.target_groups["alb-2"].targets[0].id == lab.load_balancers["web-alb"].arn


def test_a_third_nlb_in_front_of_one_alb_is_refused_at_its_listener():
    # the added listeners come first in the file (nlb-3's, then nlb-2's): the example's own is the third
    reason = refused_at(with_more_nlbs(2), "listeners.nlb-alb-target.DefaultActions")
    assert "at most 2 Network Load Balancers: web-alb already serves nlb-3, nlb-2" in reason, reason
