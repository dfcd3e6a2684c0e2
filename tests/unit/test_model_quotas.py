"""AWS's default Amazon VPC quotas, enforced with AWS's quota names; `lab.quotas` raises one
as a quota increase does, and never lowers one."""
from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from test_model_gwlb import GWLB

from vpclab.model import (
    ChangeError,
    LabFileError,
    SgRule,
    authorize_security_group_egress,
    authorize_security_group_ingress,
    load_lab_text,
)
from vpclab.model.quotas import QUOTAS

VPC = "vpcs:\n  main: {CidrBlock: 10.0.0.0/16}\n"
SUBNET = "subnets:\n  a: {VpcId: main, CidrBlock: 10.0.0.0/24}\n"


def loaded(text: str, quotas: str = ""):
    if quotas:
        text = f"lab: {{quotas: {{{quotas}}}}}\n" + text if "\nlab:" not in "\n" + text else text.replace(
            "lab: {", f"lab: {{quotas: {{{quotas}}}, ", 1)
    return load_lab_text(text, "lab.yaml", name="t")


def refused(text: str, quotas: str = "") -> LabFileError:
    with pytest.raises(LabFileError) as info:
        loaded(text, quotas)
    return info.value


def listed(key: str, items: list[str]) -> str:
    return f"    {key}:\n" + "".join(f"      - {item}\n" for item in items)


def rules(n: int, key: str = "SecurityGroupIngress") -> str:
    items = [f"{{IpProtocol: tcp, FromPort: {p}, ToPort: {p}, CidrIp: 10.0.0.0/8}}" for p in range(1, n + 1)]
    return VPC + "security_groups:\n  web:\n    VpcId: main\n" + listed(key, items)


def routes(n: int) -> str:
    items = [f"{{DestinationCidrBlock: 172.16.{i}.0/24, GatewayId: igw}}" for i in range(n)]
    return VPC + "internet_gateways:\n  igw: {VpcId: main}\nroute_tables:\n  rt:\n    VpcId: main\n" + listed("Routes", items)


def entries(n: int, egress: bool = False) -> str:
    items = [f"{{RuleNumber: {i}, Protocol: -1, RuleAction: allow, CidrBlock: 0.0.0.0/0, Egress: {egress}}}"
             for i in range(1, n + 1)]
    return VPC + "network_acls:\n  acl:\n    VpcId: main\n" + listed("Entries", items)


def groups(n: int) -> str:
    names = [f"sg{i}" for i in range(n)]
    return (VPC + SUBNET + "security_groups:\n" + "".join(f"  {g}: {{VpcId: main}}\n" for g in names)
            + f"instances:\n  web: {{SubnetId: a, SecurityGroupIds: [{', '.join(names)}]}}\n")


def vpcs(n: int) -> str:
    return "vpcs:\n" + "".join(f"  v{i}: {{CidrBlock: 10.{i}.0.0/16}}\n" for i in range(n))


def subnets(n: int) -> str:
    return VPC + "subnets:\n" + "".join(f"  s{i}: {{VpcId: main, CidrBlock: 10.0.{i}.0/28}}\n" for i in range(n))


def nat_gateways(n: int) -> str:
    return (VPC + SUBNET + "internet_gateways:\n  igw: {VpcId: main}\nnat_gateways:\n"
            + "".join(f"  nat{i}: {{SubnetId: a}}\n" for i in range(n)))


def endpoints(n: int) -> str:
    one = GWLB[GWLB.index("  gwlbe-a:"):]
    return GWLB + "".join(one.replace("gwlbe-a:", f"gwlbe-{i}:") for i in range(1, n))


# (quota, a lab with n of what it limits, AWS's default, the key path of the first one over it, what it says)
CASES = [
    ("Inbound or outbound rules per security group", rules, 60, "security_groups.web.SecurityGroupIngress[60]",
     "security group web has 61 inbound rules"),
    ("Inbound or outbound rules per security group", lambda n: rules(n, "SecurityGroupEgress"), 60,
     "security_groups.web.SecurityGroupEgress[60]", "security group web has 61 outbound rules"),
    ("Routes per route table", routes, 50, "route_tables.rt.Routes[50]", "route table rt has 51 routes besides the local route"),
    ("Rules per network ACL", entries, 20, "network_acls.acl.Entries[20]", "network ACL acl has 21 inbound rules"),
    ("Rules per network ACL", lambda n: entries(n, egress=True), 20, "network_acls.acl.Entries[20]",
     "network ACL acl has 21 outbound rules"),
    ("Security groups per network interface", groups, 5, "instances.web.SecurityGroupIds[5]",
     "instance web's network interface has 6 security groups"),
    ("VPCs per Region", vpcs, 5, "vpcs.v5", "account 111122223333 would have 6 VPCs in us-east-1"),
    ("Subnets per VPC", subnets, 200, "subnets.s200", "VPC main would have 201 subnets"),
    ("NAT gateways per Availability Zone", nat_gateways, 5, "nat_gateways.nat5",
     "account 111122223333 would have 6 NAT gateways in us-east-1a"),
    ("Interface and Gateway Load Balancer endpoints per VPC", endpoints, 50, "vpc_endpoints.gwlbe-50",
     "VPC app would have 51 interface and Gateway Load Balancer endpoints"),
]


@pytest.mark.parametrize("quota, lab, default, key_path, what", CASES)
def test_awss_default_quota_holds_up_to_it_and_refuses_one_more_naming_the_quota(quota, lab, default, key_path, what):
    loaded(lab(default))
    e = refused(lab(default + 1))
    assert (e.source, e.key_path) == ("lab.yaml", key_path)
    assert e.reason == (f"{what}, over AWS's quota '{quota}' of {default}; raise it under lab.quotas, as a quota "
                        "increase does")


@pytest.mark.parametrize("quota, lab, default, key_path, what", CASES)
def test_lab_quotas_raises_a_quota_as_a_quota_increase_does(quota, lab, default, key_path, what):
    loaded(lab(default + 1), f"{quota}: {default + 1}")
    e = refused(lab(default + 2), f"{quota}: {default + 1}")
    assert e.reason.endswith(f"over AWS's quota '{quota}' of {default + 1} as the lab raised it; raise it under "
                             "lab.quotas, as a quota increase does")


def test_every_quota_is_one_of_aws_s_with_its_default():
    assert {name: quota.default for name, quota in QUOTAS.items()} == {case[0]: case[2] for case in CASES}


def test_the_default_and_main_resources_vpclab_creates_do_not_count_against_a_quota():
    loaded(vpcs(5))  # each with its default security group, main route table and default network ACL


def test_a_quota_cannot_be_lowered():
    e = refused(VPC, "Routes per route table: 10")
    assert (e.key_path, e.reason) == (
        "lab.quotas.Routes per route table", "10 is below AWS's default of 50: a quota increase only raises a quota")


def test_an_unknown_quota_name_suggests_aws_s_name():
    e = refused(VPC, "Routes per route tables: 100")
    assert (e.key_path, e.reason) == (
        "lab.quotas.Routes per route tables", "unknown quota 'Routes per route tables'; did you mean 'Routes per route table'?")


@pytest.mark.parametrize("value", ["many", 1.5, True, None])
def test_a_quota_value_is_a_whole_number(value):
    e = refused(VPC, f"Routes per route table: {value!r}".replace("'", ""))
    assert e.key_path == "lab.quotas.Routes per route table" and e.reason.startswith("expected a whole number")


def test_quotas_is_a_mapping_of_quota_names():
    e = refused("lab: {quotas: [Routes per route table]}\n" + VPC)
    assert (e.key_path, e.reason) == ("lab.quotas", "expected a mapping of AWS quota names to values, got a list")


@pytest.mark.parametrize("authorize", [authorize_security_group_ingress, authorize_security_group_egress])
def test_authorizing_a_rule_over_the_quota_is_refused_with_aws_s_error(authorize):
    key = "SecurityGroupIngress" if authorize is authorize_security_group_ingress else "SecurityGroupEgress"
    lab = loaded(rules(59, key))
    lab = authorize(lab, "web", SgRule("tcp", 8080, 8080, IPv4Network("0.0.0.0/0")))
    with pytest.raises(ChangeError) as info:
        authorize(lab, "web", SgRule("tcp", 8081, 8081, IPv4Network("0.0.0.0/0")))
    assert (info.value.code, info.value.message) == (
        "RulesPerSecurityGroupLimitExceeded", "The maximum number of rules per security group has been reached.")
    raised = loaded(rules(60, key), "Inbound or outbound rules per security group: 61")
    authorize(raised, "web", SgRule("tcp", 8081, 8081, IPv4Network("0.0.0.0/0")))
