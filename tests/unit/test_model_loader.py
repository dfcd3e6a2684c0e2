"""Loading good lab files: defaults, implicit resources, IDs and addresses."""
from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from vpclab.model import Lab, LabFileError, Route, SgRule, load_lab, load_lab_text

REPO = Path(__file__).resolve().parents[2]

BASE = """
vpcs:
  main: {CidrBlock: 10.0.0.0/16}
subnets:
  public-a: {VpcId: main, CidrBlock: 10.0.1.0/24}
  private-a: {VpcId: main, CidrBlock: 10.0.2.0/24, AvailabilityZone: b}
internet_gateways:
  igw: {VpcId: main}
"""


def load(text: str, name: str = "t") -> Lab:
    return load_lab_text(text, "lab.yaml", name=name)


def test_basic_example_loads_with_every_resource():
    lab = load_lab(REPO / "examples" / "basic-vpc.yaml")
    assert lab.name == "basic-vpc"
    assert set(lab.subnets) == {"public-a", "private-a"}
    assert lab.route_table_of_subnet("private-a").routes[-1] == Route(IPv4Network("0.0.0.0/0"), "nat", "nat-a")
    assert lab.instances["web-1"].private_ip == IPv4Address("10.0.1.10")
    assert lab.instances["web-1"].public_ip is not None
    assert lab.security_groups["app-sg"].ingress[0].group == "web-sg"
    assert set(lab.internet_hosts) == {"client", "server"}


def test_complete_example_in_docs_loads():
    text = (REPO / "docs" / "lab-file.md").read_text()
    example = text.split("## A complete example")[1].split("```yaml\n")[1].split("```")[0]
    lab = load_lab_text(example, "docs/lab-file.md")
    assert lab.name == "two-tier"
    assert lab.network_acl_of_subnet("private-a").name == "private-acl"


def test_defaults_of_lab_vpc_and_subnet():
    lab = load(BASE)
    assert (lab.region, lab.account) == ("us-east-1", "111122223333")
    vpc = lab.vpcs["main"]
    assert (vpc.enable_dns_support, vpc.enable_dns_hostnames, vpc.account) == (True, False, "111122223333")
    assert lab.subnets["public-a"].az == "us-east-1a"
    assert lab.subnets["private-a"].az == "us-east-1b"


def test_zone_letter_maps_to_lab_region_and_full_zone_name_is_kept():
    lab = load(
        "lab: {region: eu-west-1}\n"
        "vpcs: {v: {CidrBlock: 10.0.0.0/16}}\n"
        "subnets:\n  s1: {VpcId: v, CidrBlock: 10.0.1.0/24, AvailabilityZone: c}\n"
        "  s2: {VpcId: v, CidrBlock: 10.0.2.0/24, AvailabilityZone: eu-west-1b}\n"
    )
    assert lab.subnets["s1"].az == "eu-west-1c"
    assert lab.subnets["s2"].az == "eu-west-1b"


def test_lab_name_comes_from_argument_then_lab_key_then_file_stem():
    text = "lab: {name: from-key}\nvpcs: {v: {CidrBlock: 10.0.0.0/16}}\n"
    assert load_lab_text(text, "dir/my-lab.yaml", name="given").name == "given"
    assert load_lab_text(text, "dir/my-lab.yaml").name == "from-key"
    assert load_lab_text("vpcs: {v: {CidrBlock: 10.0.0.0/16}}", "dir/my-lab.yaml").name == "my-lab"


def test_account_given_as_yaml_number_is_read_as_digits():
    lab = load("lab: {account: 444455556666}\n" + BASE)
    assert lab.account == "444455556666"
    assert lab.vpcs["main"].account == "444455556666"


def test_every_vpc_gets_main_table_default_group_and_default_acl():
    lab = load(BASE)
    main = lab.route_tables["main-main"]
    assert main.main and main.routes == (Route(IPv4Network("10.0.0.0/16"), "local", "local"),)
    assert lab.route_table_of_subnet("public-a") is main
    group = lab.security_groups["main-default"]
    assert group.description == "default VPC security group"
    assert group.ingress == (SgRule("-1", group="main-default"),)
    assert group.egress == (SgRule("-1", cidr=IPv4Network("0.0.0.0/0")),)
    acl = lab.network_acl_of_subnet("public-a")
    assert acl.name == "main-default-acl" and acl.default
    assert [(e.rule_number, e.protocol, e.action, e.egress) for e in acl.entries] == [
        (100, "-1", "allow", False),
        (100, "-1", "allow", True),
    ]


def test_main_table_in_file_replaces_the_implicit_one():
    lab = load(BASE + "route_tables:\n  mine: {VpcId: main, Main: true}\n")
    assert "main-main" not in lab.route_tables
    assert lab.route_table_of_subnet("public-a").name == "mine"


def test_local_route_comes_first_in_every_table():
    lab = load(BASE + "route_tables:\n  public:\n    VpcId: main\n    Routes:\n"
               "      - {DestinationCidrBlock: 0.0.0.0/0, GatewayId: igw}\n"
               "      - {DestinationCidrBlock: 10.0.0.0/16, GatewayId: local}\n")  # fmt: skip
    assert lab.route_tables["public"].routes == (
        Route(IPv4Network("10.0.0.0/16"), "local", "local"),
        Route(IPv4Network("0.0.0.0/0"), "igw", "igw"),
    )


def test_group_without_egress_key_gets_all_out_and_empty_egress_list_means_none():
    lab = load(BASE + "security_groups:\n  a: {VpcId: main}\n  b: {VpcId: main, SecurityGroupEgress: []}\n")
    assert lab.security_groups["a"].egress == (SgRule("-1", cidr=IPv4Network("0.0.0.0/0")),)
    assert lab.security_groups["a"].ingress == ()
    assert lab.security_groups["b"].egress == ()


def test_rule_protocol_numbers_normalise_to_names_and_all_traffic_drops_ports():
    lab = load(BASE + "security_groups:\n  g:\n    VpcId: main\n    SecurityGroupIngress:\n"
               "      - {IpProtocol: 6, FromPort: '443', ToPort: 443, CidrIp: 10.0.0.0/8}\n"
               "      - {IpProtocol: -1, FromPort: -1, ToPort: -1, CidrIp: 192.0.2.0/24}\n"
               "      - {IpProtocol: icmp, CidrIp: 192.0.2.0/24}\n"
               "      - {IpProtocol: 50, CidrIp: 192.0.2.0/24}\n")  # fmt: skip
    rules = lab.security_groups["g"].ingress
    assert (rules[0].protocol, rules[0].from_port, rules[0].to_port) == ("tcp", 443, 443)
    assert (rules[1].protocol, rules[1].from_port, rules[1].to_port) == ("-1", None, None)
    assert (rules[2].from_port, rules[2].to_port) == (-1, -1)
    assert rules[3].protocol == "50"


def test_group_may_reference_itself_and_later_groups_by_name_or_id():
    first = load(BASE + "security_groups:\n  a: {VpcId: main}\n")
    a_id = first.security_groups["a"].id
    lab = load(BASE + "security_groups:\n"
               "  b:\n    VpcId: main\n    SecurityGroupIngress:\n"
               "      - {IpProtocol: tcp, FromPort: 1, ToPort: 2, SourceSecurityGroupId: b}\n"
               f"      - {{IpProtocol: tcp, FromPort: 1, ToPort: 2, SourceSecurityGroupId: {a_id}}}\n"
               "  a: {VpcId: main}\n")  # fmt: skip
    assert [r.group for r in lab.security_groups["b"].ingress] == ["b", "a"]


def test_network_acl_entries_are_sorted_by_direction_and_rule_number():
    lab = load(BASE + "network_acls:\n  n:\n    VpcId: main\n    SubnetAssociations: [public-a]\n    Entries:\n"
               "      - {RuleNumber: 200, Protocol: udp, RuleAction: deny, CidrBlock: 0.0.0.0/0, PortRange: {From: 53, To: 53}}\n"
               "      - {RuleNumber: 100, Protocol: -1, RuleAction: ALLOW, Egress: true, CidrBlock: 0.0.0.0/0}\n"
               "      - {RuleNumber: 100, Protocol: icmp, RuleAction: allow, CidrBlock: 0.0.0.0/0, IcmpTypeCode: {Type: 8, Code: 0}}\n")  # fmt: skip
    acl = lab.network_acls["n"]
    assert [(e.egress, e.rule_number) for e in acl.entries] == [(False, 100), (False, 200), (True, 100)]
    assert (acl.entries[0].icmp_type, acl.entries[0].icmp_code) == (8, 0)
    assert (acl.entries[1].port_from, acl.entries[1].port_to, acl.entries[1].action) == (53, 53, "deny")
    assert acl.entries[2].action == "allow"
    assert not acl.default and lab.network_acl_of_subnet("private-a").default


def test_instance_defaults():
    lab = load(BASE + "instances:\n  i1: {SubnetId: public-a}\n  box: {SubnetId: public-a, Role: appliance, Run: echo hi}\n")
    i1, box = lab.instances["i1"], lab.instances["box"]
    assert i1.security_groups == ("main-default",)
    assert (i1.public_ip, i1.source_dest_check, i1.role, i1.run, i1.default_services) == (None, True, "instance", (), True)
    assert (box.role, box.run, box.default_services) == ("appliance", ("echo hi",), False)


def test_test_page_message_is_kept_and_needs_the_test_page():
    lab = load(BASE + "instances:\n  web-1: {SubnetId: public-a, TestPageMessage: Hello from subnet 1}\n")
    assert lab.instances["web-1"].test_page_message == "Hello from subnet 1"
    assert load(BASE + "instances:\n  web-1: {SubnetId: public-a}\n").instances["web-1"].test_page_message is None
    try:
        load(BASE + "instances:\n  web-1: {SubnetId: public-a, TestPageMessage: hi, DefaultServices: false}\n")
    except LabFileError as e:
        assert e.key_path == "instances.web-1.TestPageMessage" and "DefaultServices: true" in e.reason
    else:
        raise AssertionError("not refused")


def test_hostname_follows_private_ip_and_region():
    lab = load(BASE + "instances:\n  i1: {SubnetId: public-a, PrivateIpAddress: 10.0.1.10}\n")
    assert lab.instances["i1"].hostname == "ip-10-0-1-10.ec2.internal"
    other = load("lab: {region: eu-west-1}\n" + BASE + "instances:\n  i1: {SubnetId: public-a}\n")
    assert other.instances["i1"].hostname == "ip-10-0-1-4.eu-west-1.compute.internal"


def test_explicit_addresses_are_taken_before_others_are_allocated_lowest_first_in_file_order():
    lab = load(BASE + "instances:\n"
               "  first: {SubnetId: public-a}\n"
               "  pinned: {SubnetId: public-a, PrivateIpAddress: 10.0.1.4}\n"
               "  second: {SubnetId: public-a}\n"
               "nat_gateways:\n  nat: {SubnetId: public-a}\n")  # fmt: skip
    ips = {name: str(i.private_ip) for name, i in lab.instances.items()}
    assert ips == {"first": "10.0.1.5", "pinned": "10.0.1.4", "second": "10.0.1.6"}
    assert str(lab.nat_gateways["nat"].private_ip) == "10.0.1.7"  # nat_gateways come later in this file


def test_public_ips_come_from_the_elastic_ip_pool_from_10_after_explicit_ones():
    lab = load(BASE + "nat_gateways:\n  nat: {SubnetId: public-a}\n"
               "instances:\n  web: {SubnetId: public-a, AssociatePublicIpAddress: true}\n"
               "  fixed: {SubnetId: public-a, PublicIpAddress: 100.64.1.10}\n")  # fmt: skip
    assert str(lab.instances["fixed"].public_ip) == "100.64.1.10"
    assert str(lab.nat_gateways["nat"].public_ip) == "100.64.1.11"
    assert str(lab.instances["web"].public_ip) == "100.64.1.12"


def test_internet_hosts_are_allocated_from_dot_10_with_default_dns_names():
    lab = load(BASE + "internet:\n  hosts:\n    client: {}\n    server: {Ip: 100.64.0.10}\n    Web: {DnsName: www.example.test}\n")
    hosts = lab.internet_hosts
    assert (str(hosts["server"].ip), str(hosts["client"].ip), str(hosts["Web"].ip)) == (
        "100.64.0.10",
        "100.64.0.11",
        "100.64.0.12",
    )
    assert hosts["client"].dns_name == "client.internet.test"
    assert hosts["Web"].dns_name == "www.example.test"


def test_internet_cidr_can_be_chosen():
    lab = load(BASE + "internet:\n  CidrBlock: 192.0.2.0/24\n  hosts: {h: {}}\n")
    assert str(lab.internet_hosts["h"].ip) == "192.0.2.10"


def test_ids_are_aws_shaped_and_do_not_depend_on_the_lab_name():
    a, b = load(BASE, name="one"), load(BASE, name="two")
    assert a.vpcs["main"].id == b.vpcs["main"].id
    assert a.subnets["public-a"].id == b.subnets["public-a"].id
    assert re.fullmatch(r"vpc-0[0-9a-f]{16}", a.vpcs["main"].id)
    assert re.fullmatch(r"igw-0[0-9a-f]{16}", a.internet_gateways["igw"].id)


def test_instance_and_nat_gateway_get_distinct_interface_ids():
    lab = load(BASE + "nat_gateways:\n  nat: {SubnetId: public-a}\ninstances:\n  web: {SubnetId: public-a}\n")
    web, nat = lab.instances["web"], lab.nat_gateways["nat"]
    assert web.id.startswith("i-") and web.eni_id.startswith("eni-") and web.id[2:] != web.eni_id[4:]
    assert nat.id.startswith("nat-") and nat.allocation_id.startswith("eipalloc-") and nat.eni_id != web.eni_id


def test_references_accept_generated_ids():
    subnet_id = load(BASE).subnets["public-a"].id
    lab = load(BASE + f"instances:\n  web: {{SubnetId: {subnet_id}}}\n")
    assert lab.instances["web"].subnet == "public-a"


def test_middlebox_route_to_a_subnet_cidr_through_an_appliance_is_allowed():
    lab = load(BASE + "instances:\n  fw: {SubnetId: public-a, SourceDestCheck: false}\n"
               "route_tables:\n  t:\n    VpcId: main\n    Routes:\n"
               "      - {DestinationCidrBlock: 10.0.2.0/24, InstanceId: fw}\n")  # fmt: skip
    assert lab.route_tables["t"].routes[1] == Route(IPv4Network("10.0.2.0/24"), "instance", "fw")


def test_route_to_network_interface_accepts_eni_id_or_instance_name():
    eni = load(BASE + "instances:\n  fw: {SubnetId: public-a}\n").instances["fw"].eni_id
    lab = load(BASE + "instances:\n  fw: {SubnetId: public-a}\n"
               "route_tables:\n  t:\n    VpcId: main\n    Routes:\n"
               f"      - {{DestinationCidrBlock: 0.0.0.0/0, NetworkInterfaceId: {eni}}}\n"
               "      - {DestinationCidrBlock: 192.0.2.0/24, NetworkInterfaceId: fw}\n")  # fmt: skip
    assert [(r.target_kind, r.target) for r in lab.route_tables["t"].routes[1:]] == [("eni", "fw"), ("eni", "fw")]


def test_edge_associated_table_may_send_a_subnet_and_the_vpc_through_an_appliance():
    lab = load(BASE + "instances:\n  fw: {SubnetId: public-a}\n"
               "route_tables:\n  gw:\n    VpcId: main\n    EdgeAssociations: [igw]\n    Routes:\n"
               "      - {DestinationCidrBlock: 10.0.2.0/24, NetworkInterfaceId: fw}\n"
               "      - {DestinationCidrBlock: 10.0.0.0/16, InstanceId: fw}\n")  # fmt: skip
    table = lab.route_tables["gw"]
    assert table.edge_associations == ("igw",)
    assert table.routes[0] == Route(IPv4Network("10.0.0.0/16"), "instance", "fw")  # replaces local's target
    assert table.routes[1] == Route(IPv4Network("10.0.2.0/24"), "eni", "fw")


def test_vpc_account_overrides_lab_account_and_changes_its_ids():
    lab = load("vpcs:\n  a: {CidrBlock: 10.0.0.0/16}\n  b: {CidrBlock: 10.0.0.0/16, Account: '444455556666'}\n")
    assert lab.vpcs["b"].account == "444455556666"
    assert lab.vpcs["a"].id != lab.vpcs["b"].id


def test_yaml_anchors_and_merge_keys_work():
    lab = load("vpcs:\n  main: {CidrBlock: 10.0.0.0/16}\n"
               "subnets:\n  a: &sub {VpcId: main, CidrBlock: 10.0.1.0/24}\n"
               "  b: {<<: *sub, CidrBlock: 10.0.2.0/24}\n")  # fmt: skip
    assert lab.subnets["b"].cidr == IPv4Network("10.0.2.0/24")
