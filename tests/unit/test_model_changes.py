"""Live security group changes: pure, and refused with AWS's error codes."""
from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from vpclab.model import (
    ChangeError,
    SgRule,
    authorize_security_group_egress,
    authorize_security_group_ingress,
    load_lab_text,
    revoke_security_group_egress,
    revoke_security_group_ingress,
    sg_rule_from_args,
)

LAB = load_lab_text(
    """
vpcs:
  main: {CidrBlock: 10.0.0.0/16}
  other: {CidrBlock: 10.1.0.0/16}
security_groups:
  web:
    VpcId: main
    SecurityGroupIngress:
      - {IpProtocol: tcp, FromPort: 22, ToPort: 22, CidrIp: 10.0.0.0/8}
  app: {VpcId: main}
  far: {VpcId: other}
""",
    "lab.yaml",
    name="t",
)
HTTP_FROM_ANYWHERE = SgRule("tcp", 80, 80, IPv4Network("0.0.0.0/0"))


def code_of(call, *args) -> str:
    with pytest.raises(ChangeError) as info:
        call(*args)
    return info.value.code


def test_authorize_ingress_returns_a_new_lab_with_the_rule_appended():
    lab = authorize_security_group_ingress(LAB, "web", HTTP_FROM_ANYWHERE)
    assert lab.security_groups["web"].ingress[-1] == HTTP_FROM_ANYWHERE
    assert len(LAB.security_groups["web"].ingress) == 1  # the old lab is untouched
    assert lab.security_groups["app"] is LAB.security_groups["app"]


def test_authorize_accepts_the_group_id():
    lab = authorize_security_group_ingress(LAB, LAB.security_groups["web"].id, HTTP_FROM_ANYWHERE)
    assert HTTP_FROM_ANYWHERE in lab.security_groups["web"].ingress


def test_duplicate_authorize_is_invalid_permission_duplicate_whatever_the_description():
    lab = authorize_security_group_ingress(LAB, "web", HTTP_FROM_ANYWHERE)
    again = SgRule("6", 80, 80, IPv4Network("0.0.0.0/0"), description="other words")
    with pytest.raises(ChangeError) as info:
        authorize_security_group_ingress(lab, "web", again)
    assert info.value.code == "InvalidPermission.Duplicate"
    assert str(info.value).startswith("InvalidPermission.Duplicate: ")
    assert "peer: 0.0.0.0/0, TCP, from port: 80, to port: 80, ALLOW" in info.value.message


def test_revoke_ingress_removes_the_rule():
    lab = revoke_security_group_ingress(LAB, "web", SgRule("tcp", 22, 22, IPv4Network("10.0.0.0/8")))
    assert lab.security_groups["web"].ingress == ()


def test_revoke_of_a_missing_rule_is_invalid_permission_not_found():
    assert code_of(revoke_security_group_ingress, LAB, "web", HTTP_FROM_ANYWHERE) == "InvalidPermission.NotFound"


def test_unknown_group_is_invalid_group_not_found():
    assert code_of(authorize_security_group_ingress, LAB, "nope", HTTP_FROM_ANYWHERE) == "InvalidGroup.NotFound"


def test_rule_naming_a_group_by_id_stores_its_name():
    rule = SgRule("tcp", 8080, 8080, group=LAB.security_groups["web"].id)
    lab = authorize_security_group_ingress(LAB, "app", rule)
    assert lab.security_groups["app"].ingress == (SgRule("tcp", 8080, 8080, group="web"),)


def test_rule_naming_a_group_of_another_vpc_is_refused():
    rule = SgRule("-1", group="far")
    assert code_of(authorize_security_group_ingress, LAB, "app", rule) == "InvalidGroup.NotFound"


def test_egress_authorize_and_revoke():
    rule = SgRule("udp", 53, 53, IPv4Network("10.0.0.2/32"))
    lab = authorize_security_group_egress(LAB, "app", rule)
    assert lab.security_groups["app"].egress[-1] == rule
    lab = revoke_security_group_egress(lab, "app", rule)
    assert lab.security_groups["app"].egress == LAB.security_groups["app"].egress
    all_out = SgRule("-1", cidr=IPv4Network("0.0.0.0/0"))
    assert revoke_security_group_egress(LAB, "app", all_out).security_groups["app"].egress == ()


@pytest.mark.parametrize(
    "args, expected",
    [
        (dict(protocol="tcp", port="80", cidr="0.0.0.0/0"), SgRule("tcp", 80, 80, IPv4Network("0.0.0.0/0"))),
        (dict(protocol="udp", port="1000-2000", cidr="10.0.0.0/8"), SgRule("udp", 1000, 2000, IPv4Network("10.0.0.0/8"))),
        (dict(protocol="tcp", port="-1", cidr="10.0.0.0/8"), SgRule("tcp", 0, 65535, IPv4Network("10.0.0.0/8"))),
        (dict(protocol="6", from_port="22", to_port=22, source_group="web"), SgRule("tcp", 22, 22, group="web")),
        (dict(protocol="all", cidr="0.0.0.0/0"), SgRule("-1", cidr=IPv4Network("0.0.0.0/0"))),
        (dict(protocol="-1", port="80", cidr="0.0.0.0/0"), SgRule("-1", cidr=IPv4Network("0.0.0.0/0"))),
        (dict(protocol="icmp", cidr="0.0.0.0/0"), SgRule("icmp", -1, -1, IPv4Network("0.0.0.0/0"))),
        (dict(protocol="icmp", port="8", cidr="0.0.0.0/0"), SgRule("icmp", 8, -1, IPv4Network("0.0.0.0/0"))),
        (dict(protocol="icmp", port="3-4", cidr="0.0.0.0/0"), SgRule("icmp", 3, 4, IPv4Network("0.0.0.0/0"))),
    ],
)
def test_sg_rule_from_args_reads_cli_style_arguments(args, expected):
    assert sg_rule_from_args(**args) == expected


@pytest.mark.parametrize(
    "args, code",
    [
        (dict(protocol="tcp", cidr="0.0.0.0/0"), "MissingParameter"),
        (dict(protocol="tcp", port="eighty", cidr="0.0.0.0/0"), "InvalidParameterValue"),
        (dict(protocol="tcp", port="2000-1000", cidr="0.0.0.0/0"), "InvalidParameterValue"),
        (dict(protocol="tcp", port="70000", cidr="0.0.0.0/0"), "InvalidParameterValue"),
        (dict(protocol="tcp", port="80", from_port=80, cidr="0.0.0.0/0"), "InvalidParameterCombination"),
        (dict(protocol="tpc", port="80", cidr="0.0.0.0/0"), "InvalidParameterValue"),
        (dict(protocol="tcp", port="80"), "MissingParameter"),
        (dict(protocol="tcp", port="80", cidr="0.0.0.0/0", source_group="web"), "InvalidParameterCombination"),
        (dict(protocol="tcp", port="80", cidr="10.0.0.1/8"), "InvalidParameterValue"),
    ],
)
def test_sg_rule_from_args_refuses_bad_arguments(args, code):
    assert code_of(lambda: sg_rule_from_args(**args)) == code
