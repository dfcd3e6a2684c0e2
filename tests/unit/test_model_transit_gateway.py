"""Transit gateways in the model: loading, validation (file, key path, reason), effective
routes (static over propagated, overlap, blackhole), the plan's forwarding choice and live changes."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from vpclab.model import load_lab, load_lab_text
from vpclab.model.errors import ChangeError, LabFileError
from vpclab.model.transit_gateway import (
    create_transit_gateway_route,
    delete_transit_gateway_route,
    disable_transit_gateway_route_table_propagation,
    effective_routes,
    enable_transit_gateway_route_table_propagation,
    modify_transit_gateway_vpc_attachment,
)
from vpclab.plan import transit_gateway as plan
from vpclab.plan.compile import compile_lab

ROOT = Path(__file__).resolve().parents[2]

LAB = """
vpcs:
  a: {CidrBlock: 10.1.0.0/16}
  b: {CidrBlock: 10.2.0.0/16}
  c: {CidrBlock: 10.1.128.0/17}
subnets:
  a-tgw-a: {VpcId: a, AvailabilityZone: a, CidrBlock: 10.1.0.0/28}
  a-tgw-b: {VpcId: a, AvailabilityZone: b, CidrBlock: 10.1.0.16/28}
  a-app-c: {VpcId: a, AvailabilityZone: c, CidrBlock: 10.1.1.0/24}
  b-tgw-a: {VpcId: b, AvailabilityZone: a, CidrBlock: 10.2.0.0/28}
  b-tgw-b: {VpcId: b, AvailabilityZone: b, CidrBlock: 10.2.0.16/28}
  c-tgw-a: {VpcId: c, AvailabilityZone: a, CidrBlock: 10.1.128.0/28}
transit_gateways:
  tgw: {}
transit_gateway_attachments:
  a-att: {TransitGatewayId: tgw, VpcId: a, SubnetIds: [a-tgw-a, a-tgw-b]}
  b-att: {TransitGatewayId: tgw, VpcId: b, SubnetIds: [b-tgw-a, b-tgw-b], Options: {ApplianceModeSupport: enable}}
  c-att: {TransitGatewayId: tgw, VpcId: c, SubnetIds: [c-tgw-a]}
route_tables:
  a-rt:
    VpcId: a
    Main: true
    Routes:
      - {DestinationCidrBlock: 0.0.0.0/0, TransitGatewayId: tgw}
"""


def refused(text: str) -> LabFileError:
    with pytest.raises(LabFileError) as info:
        load_lab_text(text, "lab.yaml", name="t")
    return info.value


def test_defaults_associate_and_propagate_every_attachment_with_the_default_table():
    lab = load_lab_text(LAB, "lab.yaml", name="t")
    tgw = lab.transit_gateways["tgw"]
    assert tgw.id.startswith("tgw-0") and len(tgw.id) == 21 and tgw.amazon_side_asn == 64512
    assert lab.transit_gateway_attachments["a-att"].id.startswith("tgw-attach-0")
    rt = lab.transit_gateway_route_tables["tgw-default"]
    assert rt.id.startswith("tgw-rtb-0") and rt.default
    assert rt.associations == rt.propagations == ("a-att", "b-att", "c-att")
    # c's 10.1.128.0/17 overlaps a's 10.1.0.0/16, already propagated: not propagated
    assert [(str(r.destination), r.attachment, r.type) for r in effective_routes(lab, "tgw-default")] == [
        ("10.1.0.0/16", "a-att", "propagated"), ("10.2.0.0/16", "b-att", "propagated")]
    enis = lab.transit_gateway_attachments["a-att"].enis
    assert [(e.subnet, str(e.ip)) for e in enis] == [("a-tgw-a", "10.1.0.4"), ("a-tgw-b", "10.1.0.20")]


def test_static_beats_propagated_and_blackhole_drops():
    text = LAB + """transit_gateway_route_tables:
  rt:
    TransitGatewayId: tgw
    Associations: [a-att]
    Propagations: [b-att]
    Routes:
      - {DestinationCidrBlock: 10.2.0.0/16, TransitGatewayAttachmentId: c-att}
      - {DestinationCidrBlock: 10.2.5.0/24, Blackhole: true}
"""
    lab = load_lab_text(text, "lab.yaml", name="t")
    routes = {str(r.destination): (r.attachment, r.type, r.state) for r in effective_routes(lab, "rt")}
    assert routes == {"10.2.0.0/16": ("c-att", "static", "active"), "10.2.5.0/24": (None, "static", "blackhole")}
    assert plan.forward(lab, "a-att", "us-east-1a", IPv4Address("10.2.1.1")) == ("c-att", "us-east-1a")
    assert plan.forward(lab, "a-att", "us-east-1a", IPv4Address("10.2.5.1")) is None  # blackhole
    assert plan.forward(lab, "a-att", "us-east-1a", IPv4Address("8.8.8.8")) is None  # no route
    # the explicit association takes a-att off the default table; b and c stay there
    assert lab.transit_gateway_route_tables["tgw-default"].associations == ("b-att", "c-att")


def test_egress_stays_in_the_ingress_az_unless_appliance_mode_hashes_it():
    lab = load_lab_text(LAB, "lab.yaml", name="t")
    a, b, c = (lab.transit_gateway_attachments[n] for n in ("a-att", "b-att", "c-att"))
    assert [plan.egress_az(a, "us-east-1b", bucket) for bucket in (1, 2)] == ["us-east-1b"] * 2
    # appliance mode: the bucket picks, whatever the ingress AZ, so both directions agree
    for ingress in ("us-east-1a", "us-east-1b"):
        assert [plan.egress_az(b, ingress, bucket) for bucket in (1, 2)] == ["us-east-1a", "us-east-1b"]
    assert plan.egress_az(c, "us-east-1b", 2) == "us-east-1a"  # no subnet in b: its only AZ
    off = modify_transit_gateway_vpc_attachment(lab, "b-att", "disable").transit_gateway_attachments["b-att"]
    assert [plan.egress_az(off, "us-east-1b", bucket) for bucket in (1, 2)] == ["us-east-1b"] * 2


def test_vpc_route_to_the_gateway_leaves_by_the_eni_of_its_az_and_drops_where_there_is_none():
    lab = load_lab_text(LAB, "lab.yaml", name="t")
    batch = compile_lab(lab).namespace("router:a").ip_batch
    routes = [line for line in batch if line.startswith("route add") and "0.0.0.0/0" in line]
    assert any("via 10.1.0.4 dev t-a-att-a onlink" in line for line in routes)
    assert any("via 10.1.0.20 dev t-a-att-b onlink" in line for line in routes)
    assert any(line.startswith("route add blackhole 0.0.0.0/0") for line in routes)  # AZ c: no attachment


def test_gateway_namespace_mtu_rules_and_flow_hash():
    lab = load_lab_text(LAB, "lab.yaml", name="t")
    ns = compile_lab(lab).namespace("tgw:tgw")
    assert "link set a-att-a mtu 8500" in ns.ip_batch
    assert "rule add pref 30000 blackhole" in ns.ip_batch
    assert "ct state new meta l4proto { tcp, udp } ct mark set jhash" in ns.nft
    assert "tcp option maxseg size set rt mtu" in ns.nft


@pytest.mark.parametrize("extra, path, words", [
    ("""transit_gateway_attachments:
  x: {TransitGatewayId: tgw, VpcId: a, SubnetIds: [a-tgw-a, a-app-a2]}
""", "transit_gateway_attachments.x.SubnetIds[1]", "takes one subnet per AZ"),
    ("""transit_gateway_attachments:
  x: {TransitGatewayId: tgw, VpcId: a, SubnetIds: [a-tgw-a]}
  y: {TransitGatewayId: tgw, VpcId: a, SubnetIds: [a-tgw-b]}
""", "transit_gateway_attachments.y.VpcId", "already attached"),
    ("""transit_gateway_attachments:
  x: {TransitGatewayId: tgw, VpcId: a, SubnetIds: [a-tgw-a]}
  y: {TransitGatewayId: tgw, VpcId: b, SubnetIds: [b-tgw-a]}
transit_gateway_route_tables:
  r1: {TransitGatewayId: tgw, Associations: [x]}
  r2: {TransitGatewayId: tgw, Associations: [y, x]}
""", "transit_gateway_route_tables.r2.Associations[1]", "already associated with route table r1"),
    ("""transit_gateway_attachments:
  x: {TransitGatewayId: tgw, VpcId: a, SubnetIds: [a-tgw-a]}
route_tables:
  rt:
    VpcId: b
    Routes: [{DestinationCidrBlock: 0.0.0.0/0, TransitGatewayId: tgw}]
""", "route_tables.rt.Routes[0].TransitGatewayId", "VPC b is not attached to transit gateway tgw"),
    ("""transit_gateway_route_tables:
  r1:
    TransitGatewayId: tgw
    Routes: [{DestinationCidrBlock: 0.0.0.0/0}]
""", "transit_gateway_route_tables.r1.Routes[0]", "TransitGatewayAttachmentId, or Blackhole"),
    ("""transit_gateway_attachments:
  x: {TransitGatewayId: tgw, VpcId: a, SubnetIds: [a-tgw-a], Options: {ApplianceModeSupport: sometimes}}
""", "transit_gateway_attachments.x.Options.ApplianceModeSupport", "expected one of enable, disable"),
])
def test_refusals_name_file_key_path_and_reason(extra, path, words):
    base = """
vpcs:
  a: {CidrBlock: 10.1.0.0/16}
  b: {CidrBlock: 10.2.0.0/16}
subnets:
  a-tgw-a: {VpcId: a, AvailabilityZone: a, CidrBlock: 10.1.0.0/28}
  a-app-a2: {VpcId: a, AvailabilityZone: a, CidrBlock: 10.1.1.0/24}
  a-tgw-b: {VpcId: a, AvailabilityZone: b, CidrBlock: 10.1.0.16/28}
  b-tgw-a: {VpcId: b, AvailabilityZone: a, CidrBlock: 10.2.0.0/28}
transit_gateways:
  tgw: {DefaultRouteTableAssociation: disable}
"""
    e = refused(base + extra)
    assert e.source == "lab.yaml" and e.key_path == path and words in e.reason, str(e)


def test_live_changes_are_pure_and_refused_as_aws_refuses_them():
    lab = load_lab_text(LAB, "lab.yaml", name="t")
    rt = lab.transit_gateway_route_tables["tgw-default"]
    added = create_transit_gateway_route(lab, rt.id, "10.9.0.0/16", blackhole=True)
    assert effective_routes(added, rt.name)[-1].state == "blackhole"
    with pytest.raises(ChangeError) as info:
        create_transit_gateway_route(added, rt.name, "10.9.0.0/16", "a-att")
    assert info.value.code == "RouteAlreadyExists"
    assert delete_transit_gateway_route(added, rt.name, "10.9.0.0/16") == lab
    with pytest.raises(ChangeError):
        delete_transit_gateway_route(lab, rt.name, "10.9.0.0/16")
    off = disable_transit_gateway_route_table_propagation(lab, rt.name, "a-att")
    # a's CIDR gone, c's overlapping one is now the first propagated: it appears
    assert IPv4Network("10.1.128.0/17") in {r.destination for r in effective_routes(off, rt.name)}
    back = enable_transit_gateway_route_table_propagation(off, rt.name, "a-att")
    # now c's is the CIDR already propagated: a's overlapping one is held back until c's is withdrawn
    assert [str(r.destination) for r in effective_routes(back, rt.name)] == ["10.1.128.0/17", "10.2.0.0/16"]
    again = enable_transit_gateway_route_table_propagation(
        disable_transit_gateway_route_table_propagation(back, rt.name, "c-att"), rt.name, "c-att")
    assert effective_routes(again, rt.name) == effective_routes(lab, rt.name)
    with pytest.raises(ChangeError):
        enable_transit_gateway_route_table_propagation(back, rt.name, "a-att")
    with pytest.raises(ChangeError):
        modify_transit_gateway_vpc_attachment(lab, "a-att", "maybe")


def test_the_example_loads_with_two_route_tables_and_appliance_mode_on_the_security_attachment():
    lab = load_lab(ROOT / "examples" / "gwlb-centralized-tgw.yaml")
    assert set(lab.transit_gateway_route_tables) == {"spoke", "inspected"}
    assert lab.transit_gateway_attachments["security-attach"].appliance_mode_support


def test_alb_ip_targets_outside_the_vpc_need_availability_zone_all_and_a_private_address():
    lab = load_lab(ROOT / "examples" / "gwlb-ingress-egress.yaml")
    targets = lab.target_groups["nlb-nodes"].targets
    assert [(t.id, t.az) for t in targets] == [("10.20.1.100", "all"), ("10.20.2.100", "all")]
    text = (ROOT / "examples" / "gwlb-ingress-egress.yaml").read_text()
    e = refused(text.replace("{Id: 10.20.1.100, AvailabilityZone: all}", "{Id: 10.20.1.100}"))
    assert e.key_path == "target_groups.nlb-nodes.Targets[0].Id" and "needs AvailabilityZone: all" in e.reason
    e = refused(text.replace("{Id: 10.20.1.100, AvailabilityZone: all}", "{Id: 8.8.8.8, AvailabilityZone: all}"))
    assert e.key_path == "target_groups.nlb-nodes.Targets[0].Id" and "not a private address" in e.reason


def test_an_nlb_node_with_cross_zone_off_picks_targets_of_zone_all():
    from vpclab.engines.nlb.ruleset import HEALTHY, TargetView, routable_targets, zone_in_service
    targets = [TargetView("10.9.0.1", "10.9.0.1", 80, "all", HEALTHY),
               TargetView("i-1", "10.0.2.5", 80, "us-east-1b", HEALTHY)]
    assert [t.id for t in routable_targets(targets, "us-east-1a", cross_zone=False)] == ["10.9.0.1"]
    assert zone_in_service(targets, "us-east-1a", cross_zone=False)
