"""The hairpin appliance kind compiled: iptables NAT in the appliance, no reference appliance."""
from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from vpclab.doctor.needs import lab_needs
from vpclab.model import load_lab_text
from vpclab.model.appliance import HAIRPIN, REFERENCE, ApplianceConfig, ApplianceConfigError
from vpclab.plan.compile import compile_lab
from vpclab.plan.appliance import hairpin_rules

# One VPC, a GWLB in two AZs; appliance-1 hairpins, appliance-2 is the reference appliance.
LAB = """
lab: {account: "111122223333"}
vpcs:
  sec: {CidrBlock: 10.0.0.0/16}
subnets:
  sec-a: {VpcId: sec, CidrBlock: 10.0.21.0/24, AvailabilityZone: a}
  sec-b: {VpcId: sec, CidrBlock: 10.0.22.0/24, AvailabilityZone: b}
instances:
  appliance-1: {SubnetId: sec-a, Role: appliance, PrivateIpAddress: 10.0.21.10, Appliance: {kind: hairpin}}
  appliance-2: {SubnetId: sec-b, Role: appliance, PrivateIpAddress: 10.0.22.10}
load_balancers:
  gwlb:
    Type: gateway
    Subnets: [sec-a, sec-b]
target_groups:
  appliances:
    Protocol: GENEVE
    Port: 6081
    VpcId: sec
    HealthCheckProtocol: HTTP
    HealthCheckPort: 8080
    Targets: [appliance-1, appliance-2]
listeners:
  gwlb-listener:
    LoadBalancerArn: gwlb
    DefaultActions: [{Type: forward, TargetGroupArn: appliances}]
"""


def compiled():
    lab = load_lab_text(LAB, "lab.yaml", name="t")
    return lab, compile_lab(lab)


def test_kind_defaults_to_the_reference_appliance():
    assert ApplianceConfig.from_dict(None).kind == REFERENCE
    assert ApplianceConfig.from_dict({"kind": "reference", "drop_all": True}).drop_all
    assert ApplianceConfig.from_dict({"kind": "hairpin"}) == ApplianceConfig(kind=HAIRPIN)


@pytest.mark.parametrize(("data", "where"), [
    ({"kind": "nft"}, "appliance.kind"),
    ({"kind": None}, "appliance.kind"),
    ({"kind": "hairpin", "inside": ["10.0.0.0/8"]}, "appliance.inside"),
])
def test_bad_kinds_name_the_field(data, where):
    with pytest.raises(ApplianceConfigError) as info:
        ApplianceConfig.from_dict(data)
    assert info.value.where == where


def test_hairpin_rules_send_geneve_back_to_the_node_that_sent_it():
    rules = hairpin_rules(IPv4Address("10.0.21.10"), [IPv4Address("10.0.21.4"), IPv4Address("10.0.22.4")])
    assert rules.splitlines() == [
        "*nat", ":PREROUTING ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]",
        "-A PREROUTING -i eth0 -s 10.0.21.4/32 -d 10.0.21.10/32 -p udp -m udp --dport 6081 "
        "-j DNAT --to-destination 10.0.21.4:6081",
        "-A PREROUTING -i eth0 -s 10.0.22.4/32 -d 10.0.21.10/32 -p udp -m udp --dport 6081 "
        "-j DNAT --to-destination 10.0.22.4:6081",
        "-A POSTROUTING -o eth0 -s 10.0.21.4/32 -d 10.0.21.4/32 -p udp -m udp --dport 6081 -j MASQUERADE",
        "-A POSTROUTING -o eth0 -s 10.0.22.4/32 -d 10.0.22.4/32 -p udp -m udp --dport 6081 -j MASQUERADE",
        "COMMIT",
    ]


def test_a_hairpin_appliance_gets_nat_forwarding_and_a_health_listener_but_no_appliance_process():
    lab, wiring = compiled()
    nodes = [n.private_ip for n in lab.load_balancers["gwlb"].nodes]
    namespaces = {ns.name: ns for ns in wiring.namespaces}
    hairpin, reference = namespaces["appliance-1"], namespaces["appliance-2"]
    assert hairpin.iptables == hairpin_rules(IPv4Address("10.0.21.10"), nodes)  # cross-zone: every node
    assert ("ipv4/ip_forward", "1") in hairpin.sysctls
    assert reference.iptables == "" and ("ipv4/ip_forward", "1") not in reference.sysctls
    kinds = {(svc.ns, svc.kind): svc for svc in wiring.services}
    assert ("appliance-1", "appliance") not in kinds and ("appliance-2", "appliance") in kinds
    assert kinds["appliance-1", "test_page"].addresses == ("0.0.0.0:8080",)  # the health check's port
    assert dict(kinds["appliance-2", "appliance"].params)["health_port"] == 8080


def test_only_a_lab_with_a_hairpin_appliance_needs_iptables_nat():
    lab, _ = compiled()
    assert "iptables:nat" in lab_needs(lab)
    reference = load_lab_text(LAB.replace(", Appliance: {kind: hairpin}", ""), "lab.yaml", name="t")
    assert "iptables:nat" not in lab_needs(reference)
