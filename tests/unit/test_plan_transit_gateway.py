"""The transit gateway's namespace, read by the policy-routing evaluator: for every ingress
link, flow hash bucket and destination, the kernel does what plan.transit_gateway.forward says
(route table by ingress attachment, LPM, blackholes, AZ affinity, appliance mode)."""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from plan_routing import PolicyRouter
from vpclab.cli.render import render_status
from vpclab.daemon.status import lab_status
from vpclab.model import load_lab
from vpclab.model.transit_gateway import create_transit_gateway_route, modify_transit_gateway_vpc_attachment
from vpclab.plan import transit_gateway as plan
from vpclab.plan.compile import compile_lab

ROOT = Path(__file__).resolve().parents[2]
DESTINATIONS = ("10.1.1.4", "10.2.2.4", "10.10.1.9", "10.20.1.5", "8.8.8.8", "10.2.9.1")


def labs():
    lab = load_lab(ROOT / "examples" / "gwlb-centralized-tgw.yaml")
    yield "example", lab
    yield "appliance mode off", modify_transit_gateway_vpc_attachment(lab, "security-attach", "disable")
    yield "blackhole", create_transit_gateway_route(lab, "inspected", "10.2.9.0/24", blackhole=True)
    unassociated = replace(lab.transit_gateway_route_tables["spoke"], associations=("app1-attach", "app2-attach"))
    yield "unassociated egress", replace(lab, transit_gateway_route_tables={
        **lab.transit_gateway_route_tables, "spoke": unassociated})


@pytest.mark.parametrize("name, lab", list(labs()))
def test_the_kernel_forwards_as_the_model_says(name, lab):
    router = PolicyRouter.from_batch(compile_lab(lab).namespace("tgw:tgw").ip_batch)
    links = plan.link_names(lab)
    by_link = {ifname: key for key, ifname in links.items()}
    for (attachment, az), ifname in links.items():
        for bucket in (1, 2):
            for dst in DESTINATIONS:
                decision = router.route(ifname, dst, mark=bucket)
                expected = plan.forward(lab, attachment, az, IPv4Address(dst), bucket)
                if expected is None:
                    assert decision.action == "drop", (name, ifname, bucket, dst, decision)
                    continue
                assert decision.action == "forward", (name, ifname, bucket, dst, decision)
                assert by_link[decision.dev] == expected, (name, ifname, bucket, dst)
                out = lab.transit_gateway_attachments[expected[0]].eni_in(expected[1])
                assert decision.via == lab.subnets[out.subnet].router_ip


def test_appliance_mode_picks_the_same_security_az_for_both_directions_of_a_flow():
    lab = load_lab(ROOT / "examples" / "gwlb-centralized-tgw.yaml")
    for bucket in (1, 2):
        # a request entering in AZ a and its reply entering in AZ c, one conntrack mark
        there = plan.forward(lab, "app1-attach", "ap-northeast-1a", IPv4Address("10.2.2.4"), bucket)
        back = plan.forward(lab, "app2-attach", "ap-northeast-1c", IPv4Address("10.1.1.4"), bucket)
        assert there == back and there[0] == "security-attach"
    off = modify_transit_gateway_vpc_attachment(lab, "security-attach", "disable")
    there = plan.forward(off, "app1-attach", "ap-northeast-1a", IPv4Address("10.2.2.4"), 1)
    back = plan.forward(off, "app2-attach", "ap-northeast-1c", IPv4Address("10.1.1.4"), 1)
    assert there != back  # each direction stays in its own AZ: two appliances


def test_status_and_its_rendering_show_attachments_route_tables_and_routes():
    lab = load_lab(ROOT / "examples" / "gwlb-centralized-tgw.yaml")
    status = lab_status(lab)
    (tgw,) = status["transit_gateways"]
    assert [a["name"] for a in tgw["attachments"]] == ["app1-attach", "app2-attach", "security-attach",
                                                       "egress-attach"]
    inspected = next(t for t in tgw["route_tables"] if t["name"] == "inspected")
    assert inspected["routes"][1] == {
        "DestinationCidrBlock": "10.1.0.0/16", "Type": "propagated", "State": "active",
        "TransitGatewayAttachments": [{"ResourceId": lab.vpcs["app1"].id, "ResourceType": "vpc",
                                       "TransitGatewayAttachmentId": lab.transit_gateway_attachments["app1-attach"].id}]}
    text = render_status(status)
    assert "security-attach" in text and "enable" in text and "inspected" in text
    assert lab.vpc_endpoint_services["inspection"].service_name in text
