"""A bad lab file is refused with one LabFileError naming the file, the key and the reason."""
from __future__ import annotations

import os
import re
import signal

import pytest

from vpclab.model import LabFileError, load_lab, load_lab_text
from vpclab.model.labfile import MAX_FILE_BYTES, MAX_NESTING, read_lab_file
from vpclab.model.resources import SgRule

BASE = """
vpcs:
  main: {CidrBlock: 10.0.0.0/16}
  other: {CidrBlock: 10.1.0.0/16}
subnets:
  public-a: {VpcId: main, CidrBlock: 10.0.1.0/24}
  private-a: {VpcId: main, CidrBlock: 10.0.2.0/24}
  other-a: {VpcId: other, CidrBlock: 10.1.1.0/24}
internet_gateways:
  igw: {VpcId: main}
  igw-b: {VpcId: other}
"""
NO_IGW = """
vpcs:
  main: {CidrBlock: 10.0.0.0/16}
subnets:
  public-a: {VpcId: main, CidrBlock: 10.0.1.0/24}
"""


def refused(text: str, name: str | None = "t", source: str = "lab.yaml") -> LabFileError:
    with pytest.raises(LabFileError) as info:
        load_lab_text(text, source, name=name)
    return info.value


def routes(*lines: str, extra: str = "") -> str:
    """BASE plus a route table `rt` in VPC main with these route lines."""
    body = "".join(f"      - {line}\n" for line in lines)
    return BASE + extra + f"route_tables:\n  rt:\n    VpcId: main\n    Routes:\n{body}"


# -- the error itself


def test_error_is_one_line_of_file_key_path_and_reason():
    e = refused(BASE.replace("CidrBlock: 10.0.1.0/24", "CidrBlock: 10.0.1.0/33"))
    assert e.source == "lab.yaml"
    assert e.key_path == "subnets.public-a.CidrBlock"
    assert str(e) == f"lab.yaml: subnets.public-a.CidrBlock: {e.reason}"
    assert "\n" not in str(e)


def test_first_error_in_file_order_is_reported():
    e = refused(BASE + "instances:\n  a: {SubnetId: public-a, Bogus: 1}\n  b: {SubnetId: nope, Other: 2}\n")
    assert e.key_path == "instances.a.Bogus"


@pytest.mark.parametrize("hostile", ["web\x00", "web\x1b[2J\x1b[31m", "web\u202eexe.sh", "web\x9b1m", "web\udcff"])
def test_control_characters_in_a_name_are_escaped_in_the_error(hostile):
    e = refused(BASE + f"instances:\n  {hostile!r}: {{SubnetId: public-a}}\n".replace("'", '"'))
    escaped = repr(hostile)[1:-1]
    assert e.key_path == f"instances.{hostile}"  # the key itself, for programs
    assert f"instances.{escaped}: resource name '{escaped}' must be" in str(e)
    assert str(e).isprintable()


def test_control_characters_in_the_file_name_are_escaped_in_the_error():
    e = refused("vpcs: {}\n", source="lab\x1b]0;pwned\x07.yaml")
    assert str(e).startswith("lab\\x1b]0;pwned\\x07.yaml: vpcs: ")
    assert str(e).isprintable()


def test_an_error_without_control_characters_reads_as_before():
    e = LabFileError("lab.yaml", "vpcs.main", "line one\n  line\ttwo")
    assert str(e) == "lab.yaml: vpcs.main: line one line two"


def test_unreadable_file_is_a_lab_file_error(tmp_path):
    with pytest.raises(LabFileError) as info:
        load_lab(tmp_path / "missing.yaml")
    assert "cannot read" in str(info.value) and "missing.yaml" in str(info.value)


def not_loaded(path) -> LabFileError:
    """Loading `path` is refused at once: a blocked open or an endless read fails after 10 s."""

    def hung(signum, frame):
        raise TimeoutError(f"loading {path} did not return")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(LabFileError) as info:
            load_lab(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return info.value


@pytest.mark.parametrize("kind", ["a directory", "a character device", "a named pipe"])
def test_a_lab_file_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path, kind):
    path = {"a directory": tmp_path, "a character device": "/dev/null", "a named pipe": tmp_path / "pipe"}[kind]
    if kind == "a named pipe":
        os.mkfifo(path)  # no writer: a plain open() would wait forever
    e = not_loaded(path)
    assert (e.source, e.key_path) == (str(path), "")
    assert e.reason == f"cannot read the lab file: it is {kind}, not a regular file"


def test_a_lab_file_over_4_mib_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing to read but NULs
    e = not_loaded(path)
    assert e.reason == "cannot read the lab file: it is larger than 4 MiB, the most a lab file may be"


def test_a_lab_file_of_exactly_4_mib_is_read(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("vpcs: {}\n" + "#" * (MAX_FILE_BYTES - 10) + "\n")
    assert len(read_lab_file(path)) == MAX_FILE_BYTES


@pytest.mark.parametrize("opening, closing, step", [("[", "]", "[0]"), ("{k: ", "}", ".k"), ("- ", "", "[0]")])
def test_ten_thousand_nested_lists_or_mappings_are_refused_with_their_place(opening, closing, step):
    nested = opening * 10_000 + "x" + closing * 10_000 + "\n"
    if opening == "- ":
        nested = "\n  " + nested  # block lists, compact: "- - - x" on a line of its own
    e = refused(BASE + "route_tables: " + nested)
    assert e.key_path == "route_tables" + step * (MAX_NESTING - 1)  # the top-level mapping is level 1
    assert re.match(r"YAML at line \d+, column \d+: ", e.reason)
    assert e.reason.endswith(": lists and mappings nest deeper than the 64 levels a lab file may have")


def test_nesting_up_to_64_levels_is_read_as_yaml():
    e = refused(BASE + "route_tables: " + "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1) + "\n")
    assert (e.key_path, e.reason) == ("route_tables", "expected a mapping of route table names to properties, "
                                                      "got a list")


def test_an_alias_inside_what_it_names_is_refused():
    e = refused(BASE + "vpc_endpoints:\n  e: {ServiceName: s, VpcId: main, PolicyDocument: &p {Statement: [*p]}}\n")
    assert e.key_path == "vpc_endpoints.e.PolicyDocument.Statement[0]"
    assert e.reason == "YAML at line 13, column 68: the alias *p is inside the list or mapping it names"


def test_aliases_that_expand_to_a_billion_values_are_refused():
    laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
    )
    e = refused(laughs)
    assert e.key_path == "a5"
    assert e.reason.endswith("more than 1,000,000 values with its aliases expanded, the most a lab file may hold")


# -- shape


def test_yaml_syntax_error_gives_line():
    e = refused("vpcs:\n  main: {CidrBlock: 10.0.0.0/16\nsubnets: x\n")
    assert e.key_path == ""
    assert "invalid YAML at line" in e.reason


def test_duplicate_yaml_key_is_refused_with_its_line():
    e = refused("vpcs:\n  main: {CidrBlock: 10.0.0.0/16}\n  main: {CidrBlock: 10.1.0.0/16}\n")
    assert "duplicate key 'main'" in e.reason and "line 3" in e.reason


def test_empty_file_is_refused():
    assert "empty" in refused("").reason


def test_top_level_not_a_mapping_is_refused():
    e = refused("- vpcs\n- subnets\n")
    assert "expected a mapping of sections at the top level, got a list" in e.reason


def test_missing_vpcs_section_is_refused():
    assert refused("lab: {region: us-east-1}\n").key_path == "vpcs"


def test_unknown_section_suggests_near_match():
    e = refused(BASE + "subnet:\n  x: {}\n")
    assert (e.key_path, e.reason) == ("subnet", "unknown section 'subnet'; did you mean 'subnets'?")


def test_unknown_key_suggests_near_match():
    e = refused(BASE.replace("public-a: {VpcId: main, CidrBlock:", "public-a: {VpcId: main, CidrBlok:"))
    assert e.key_path == "subnets.public-a.CidrBlok"
    assert e.reason == "unknown key 'CidrBlok'; did you mean 'CidrBlock'?"


def test_unknown_key_without_near_match_has_no_suggestion():
    assert refused(BASE + "instances:\n  i: {SubnetId: public-a, Zzzz: 1}\n").reason == "unknown key 'Zzzz'"


def test_wrong_type_says_what_was_expected():
    e = refused(BASE + "instances:\n  i: {SubnetId: [public-a]}\n")
    assert (e.key_path, e.reason) == ("instances.i.SubnetId", "expected a string, got a list")


def test_wrong_boolean_type_is_refused():
    e = refused(BASE + "instances:\n  i: {SubnetId: public-a, SourceDestCheck: 3}\n")
    assert e.reason == "expected true or false, got the number 3"


def test_resource_properties_must_be_a_mapping():
    assert refused(BASE + "instances:\n  i: public-a\n").reason.startswith("expected a mapping")


def test_missing_required_key_names_it():
    e = refused("vpcs:\n  main: {EnableDnsSupport: true}\n")
    assert (e.key_path, e.reason) == ("vpcs.main.CidrBlock", "required key is missing")


def test_malformed_cidr_is_refused():
    e = refused("vpcs:\n  main: {CidrBlock: 10.0.0/16}\n")
    assert "not a CIDR block" in e.reason


def test_cidr_without_prefix_length_is_refused():
    assert "not a CIDR block" in refused("vpcs:\n  main: {CidrBlock: 10.0.0.0}\n").reason


def test_malformed_ip_is_refused():
    e = refused(BASE + "instances:\n  i: {SubnetId: public-a, PrivateIpAddress: 10.0.1.300}\n")
    assert (e.key_path, e.reason) == ("instances.i.PrivateIpAddress", "'10.0.1.300' is not an IPv4 address like 10.0.1.10")


def test_host_bits_set_is_refused_with_the_network_meant():
    e = refused(BASE.replace("10.0.1.0/24", "10.0.1.5/24"))
    assert e.reason == "10.0.1.5/24 has host bits set; the network is 10.0.1.0/24"


@pytest.mark.parametrize("cidr", ["10.0.0.0/15", "10.0.0.0/29"])
def test_vpc_cidr_size_outside_16_to_28_is_refused(cidr):
    assert "must be /16 to /28" in refused(f"vpcs:\n  main: {{CidrBlock: {cidr}}}\n").reason


def test_invalid_resource_name_is_refused():
    e = refused("vpcs:\n  'my vpc': {CidrBlock: 10.0.0.0/16}\n")
    assert e.key_path == "vpcs.my vpc" and "resource name" in e.reason


def test_duplicate_name_across_sections_is_refused():
    e = refused(BASE + "instances:\n  public-a: {SubnetId: public-a}\n")
    assert e.key_path == "instances.public-a"
    assert "already used by subnets.public-a" in e.reason


def test_name_local_is_reserved():
    assert "reserved" in refused(BASE + "instances:\n  local: {SubnetId: public-a}\n").reason


def test_name_of_an_implicit_resource_is_taken():
    e = refused(BASE + "security_groups:\n  main-default: {VpcId: main}\n")
    assert e.key_path == "security_groups.main-default"
    assert "default security group of VPC main" in e.reason


@pytest.mark.parametrize(
    "given, origin",
    [("Bad_Name", "given"), (None, "from the file name")],
)
def test_invalid_lab_name_is_refused_and_says_where_it_came_from(given, origin):
    e = refused("vpcs: {v: {CidrBlock: 10.0.0.0/16}}", name=given, source="My_Lab.yaml")
    assert e.key_path == "lab.name" and origin in e.reason


def test_account_must_be_12_digits():
    assert "12 digits" in refused("lab: {account: 1234}\n" + BASE).reason


def test_region_must_look_like_a_region():
    assert refused("lab: {region: mars}\n" + BASE).key_path == "lab.region"


# -- references


def test_unknown_reference_suggests_near_name():
    e = refused(BASE + "instances:\n  web-1: {SubnetId: pubilc-a}\n")
    assert (e.key_path, e.reason) == ("instances.web-1.SubnetId", "unknown subnet 'pubilc-a'; did you mean 'public-a'?")


def test_reference_to_a_resource_of_another_kind_says_so():
    e = refused(BASE + "instances:\n  web-1: {SubnetId: main}\n")
    assert e.reason == "'main' is a VPC, not a subnet"


def test_zone_of_another_region_is_refused():
    e = refused("vpcs: {v: {CidrBlock: 10.0.0.0/16}}\nsubnets: {s: {VpcId: v, CidrBlock: 10.0.0.0/24, AvailabilityZone: eu-west-1a}}\n")
    assert (e.key_path, e.reason) == ("subnets.s.AvailabilityZone", "zone eu-west-1a is not in the lab's region us-east-1")


def test_subnet_outside_vpc_names_file_key_and_reason():
    e = refused(BASE.replace("10.0.2.0/24", "10.9.2.0/24"))
    assert str(e) == "lab.yaml: subnets.private-a.CidrBlock: 10.9.2.0/24 is outside VPC main (10.0.0.0/16)"


def test_overlapping_subnets_are_refused():
    e = refused(BASE.replace("10.0.2.0/24", "10.0.1.128/25"))
    assert e.reason == "10.0.1.128/25 overlaps subnet public-a (10.0.1.0/24)"


def test_second_internet_gateway_in_a_vpc_is_refused():
    e = refused(BASE.replace("igw-b: {VpcId: other}", "igw-b: {VpcId: main}"))
    assert e.key_path == "internet_gateways.igw-b.VpcId" and "already has internet gateway igw" in e.reason


def test_vpc_overlapping_the_elastic_ip_pool_is_refused():
    assert "Elastic IP pool" in refused("vpcs: {v: {CidrBlock: 100.64.1.0/24}}\n").reason


def test_vpc_overlapping_the_internet_is_refused():
    e = refused("vpcs: {v: {CidrBlock: 100.64.0.0/24}}\n")
    assert (e.key_path, e.reason) == ("vpcs.v.CidrBlock", "100.64.0.0/24 overlaps the internet 100.64.0.0/24")


# -- addresses


@pytest.mark.parametrize(
    "ip, which",
    [
        ("10.0.1.0", "network address"),
        ("10.0.1.1", "VPC router"),
        ("10.0.1.2", "DNS server"),
        ("10.0.1.3", "future use"),
        ("10.0.1.255", "broadcast address"),
    ],
)
def test_reserved_address_says_which(ip, which):
    e = refused(BASE + f"instances:\n  web: {{SubnetId: public-a, PrivateIpAddress: {ip}}}\n")
    assert e.key_path == "instances.web.PrivateIpAddress"
    assert e.reason == f"{ip} is reserved in subnet public-a (10.0.1.0/24): {which}"


def test_address_outside_its_subnet_is_refused():
    e = refused(BASE + "instances:\n  web: {SubnetId: public-a, PrivateIpAddress: 10.0.2.10}\n")
    assert e.reason == "10.0.2.10 is outside subnet public-a (10.0.1.0/24)"


def test_address_used_twice_is_refused():
    e = refused(BASE + "nat_gateways:\n  nat: {SubnetId: public-a, PrivateIpAddress: 10.0.1.10}\n"
                "instances:\n  web: {SubnetId: public-a, PrivateIpAddress: 10.0.1.10}\n")  # fmt: skip
    assert (e.key_path, e.reason) == ("instances.web.PrivateIpAddress", "10.0.1.10 is already used by NAT gateway nat")


def test_full_subnet_is_refused():
    text = "vpcs: {v: {CidrBlock: 10.0.0.0/16}}\nsubnets: {s: {VpcId: v, CidrBlock: 10.0.0.0/28}}\ninstances:\n"
    text += "".join(f"  i{n}: {{SubnetId: s}}\n" for n in range(12))  # a /28 has 11 usable addresses
    e = refused(text)
    assert (e.key_path, e.reason) == ("instances.i11", "no free address left in subnet s (10.0.0.0/28)")


def test_public_ip_without_internet_gateway_is_refused():
    e = refused(NO_IGW + "instances:\n  web: {SubnetId: public-a, AssociatePublicIpAddress: true}\n")
    assert e.key_path == "instances.web.AssociatePublicIpAddress"
    assert "needs an internet gateway attached to VPC main" in e.reason


def test_nat_gateway_without_internet_gateway_is_refused():
    assert "needs an internet gateway" in refused(NO_IGW + "nat_gateways:\n  nat: {SubnetId: public-a}\n").reason


def test_public_ip_outside_the_elastic_ip_pool_is_refused():
    e = refused(BASE + "instances:\n  web: {SubnetId: public-a, PublicIpAddress: 100.64.0.10}\n")
    assert e.reason == "100.64.0.10 is outside the Elastic IP pool 100.64.1.0/24"


def test_public_ip_with_associate_false_is_contradictory():
    e = refused(BASE + "instances:\n  w: {SubnetId: public-a, AssociatePublicIpAddress: false, PublicIpAddress: 100.64.1.20}\n")
    assert e.key_path == "instances.w.AssociatePublicIpAddress"


def test_internet_host_on_the_internet_router_address_is_refused():
    e = refused(BASE + "internet:\n  hosts:\n    h: {Ip: 100.64.0.1}\n")
    assert (e.key_path, e.reason) == ("internet.hosts.h.Ip", "100.64.0.1 is reserved in the internet 100.64.0.0/24: internet router")


def test_internet_hosts_with_the_same_dns_name_are_refused():
    e = refused(BASE + "internet:\n  hosts:\n    a: {DnsName: x.test}\n    b: {DnsName: X.test}\n")
    assert e.key_path == "internet.hosts.b.DnsName"


# -- instances and security groups


def test_instance_security_group_of_another_vpc_is_refused():
    e = refused(BASE + "security_groups:\n  sg-b: {VpcId: other}\ninstances:\n  web: {SubnetId: public-a, SecurityGroupIds: [sg-b]}\n")
    assert (e.key_path, e.reason) == ("instances.web.SecurityGroupIds[0]", "security group sg-b is in VPC other, not in VPC main")


def test_instance_with_no_security_group_is_refused():
    assert "at least one" in refused(BASE + "instances:\n  web: {SubnetId: public-a, SecurityGroupIds: []}\n").reason


def test_unknown_role_suggests_near_match():
    e = refused(BASE + "instances:\n  web: {SubnetId: public-a, Role: apliance}\n")
    assert e.reason == "expected one of instance, appliance, got 'apliance'; did you mean 'appliance'?"


def sg_rule(rule: str, key: str = "SecurityGroupIngress") -> str:
    return BASE + f"security_groups:\n  g:\n    VpcId: main\n    {key}:\n      - {rule}\n"


def test_tcp_rule_without_ports_names_the_missing_port_key():
    e = refused(sg_rule("{IpProtocol: tcp, CidrIp: 0.0.0.0/0}"))
    assert (e.key_path, e.reason) == ("security_groups.g.SecurityGroupIngress[0].FromPort", "required key is missing for tcp")


def test_reversed_port_range_is_refused():
    e = refused(sg_rule("{IpProtocol: tcp, FromPort: 90, ToPort: 80, CidrIp: 0.0.0.0/0}"))
    assert (e.key_path, e.reason) == ("security_groups.g.SecurityGroupIngress[0]", "the port range 90-80 is reversed")


def test_port_out_of_range_is_refused():
    assert refused(sg_rule("{IpProtocol: udp, FromPort: 0, ToPort: 70000, CidrIp: 0.0.0.0/0}")).reason == "port 70000 is outside 0-65535"


def test_icmp_code_without_type_is_refused():
    assert "needs an ICMP type" in refused(sg_rule("{IpProtocol: icmp, FromPort: -1, ToPort: 0, CidrIp: 0.0.0.0/0}")).reason


def test_unknown_protocol_suggests_near_match():
    e = refused(sg_rule("{IpProtocol: tpc, FromPort: 1, ToPort: 2, CidrIp: 0.0.0.0/0}"))
    assert (e.key_path, e.reason) == (
        "security_groups.g.SecurityGroupIngress[0].IpProtocol",
        "unknown protocol 'tpc'; did you mean 'tcp'?",
    )


@pytest.mark.parametrize("peers", ["", ", CidrIp: 0.0.0.0/0, SourceSecurityGroupId: g"])
def test_rule_needs_exactly_one_peer(peers):
    e = refused(sg_rule("{IpProtocol: -1" + peers + "}"))
    assert e.reason == "a rule needs exactly one of CidrIp or SourceSecurityGroupId"


def test_egress_rule_takes_a_destination_group_not_a_source_group():
    e = refused(sg_rule("{IpProtocol: -1, SourceSecurityGroupId: g}", key="SecurityGroupEgress"))
    assert e.reason.startswith("unknown key 'SourceSecurityGroupId'")


def test_rule_referencing_a_group_of_another_vpc_is_refused():
    e = refused(sg_rule("{IpProtocol: -1, SourceSecurityGroupId: other-default}"))
    assert e.key_path == "security_groups.g.SecurityGroupIngress[0].SourceSecurityGroupId"
    assert e.reason == "security group other-default is in VPC other, not in VPC main"


def test_duplicate_rule_is_refused_even_with_another_description():
    e = refused(BASE + "security_groups:\n  g:\n    VpcId: main\n    SecurityGroupIngress:\n"
                "      - {IpProtocol: tcp, FromPort: 80, ToPort: 80, CidrIp: 0.0.0.0/0}\n"
                "      - {IpProtocol: 6, FromPort: 80, ToPort: 80, CidrIp: 0.0.0.0/0, Description: again}\n")  # fmt: skip
    assert (e.key_path, e.reason) == ("security_groups.g.SecurityGroupIngress[1]", "this rule duplicates SecurityGroupIngress[0]")


# A user may list thousands of rules, entries or targets: each duplicate check is one lookup per
# item, not a scan of the items before it. N = 1,000 keeps PyYAML's parse short; checked pairwise,
# as before, 2,000 rules took 6.8 s and 70,000 hours.
N = 1_000
MANY = "lab: {quotas: {Inbound or outbound rules per security group: 100000, Rules per network ACL: 100000}}\n"


def many_rules(extra: str = "") -> str:
    rules = "".join(f"      - {{IpProtocol: tcp, FromPort: {i}, ToPort: {i}, CidrIp: 10.0.0.0/8}}\n" for i in range(N))
    return BASE + MANY + "security_groups:\n  g:\n    VpcId: main\n    SecurityGroupIngress:\n" + rules + extra


def test_thousands_of_distinct_rules_load_and_a_duplicate_among_them_is_named(monkeypatch):
    comparisons = 0
    compare = SgRule.__eq__

    def counted(a, b):
        nonlocal comparisons
        comparisons += 1
        return compare(a, b)

    monkeypatch.setattr(SgRule, "__eq__", counted)
    lab = load_lab_text(many_rules(), "lab.yaml", name="t")
    assert [rule.from_port for rule in lab.security_groups["g"].ingress] == list(range(N))
    again = "      - {IpProtocol: 6, FromPort: 567, ToPort: 567, CidrIp: 10.0.0.0/8, Description: again}\n"
    e = refused(many_rules(again))
    assert (e.key_path, e.reason) == (f"security_groups.g.SecurityGroupIngress[{N}]", "this rule duplicates SecurityGroupIngress[567]")
    assert comparisons <= 2 * N  # pairwise: N * N


def test_thousands_of_nacl_entries_load_and_a_reused_rule_number_is_named():
    entries = [f"{{RuleNumber: {i}, Protocol: -1, RuleAction: allow, CidrBlock: 0.0.0.0/0, Egress: {i % 2 == 0}}}"
               for i in range(1, N + 1)]
    lab = load_lab_text(BASE + MANY + acl(*entries)[len(BASE):], "lab.yaml", name="t")
    assert len(lab.network_acls["n"].entries) == N
    e = refused(BASE + MANY + acl(*entries, "{RuleNumber: 567, Protocol: -1, RuleAction: deny, CidrBlock: 10.0.0.0/8}")[len(BASE):])
    assert (e.key_path, e.reason) == (f"network_acls.n.Entries[{N}].RuleNumber", "ingress rule 567 is already Entries[566]")


WIDE = """
vpcs:
  main: {CidrBlock: 10.0.0.0/16}
subnets:
  wide: {VpcId: main, CidrBlock: 10.0.0.0/20}
"""


def test_thousands_of_targets_register_and_a_target_registered_twice_is_named():
    targets = ", ".join(f"10.0.{4 + i // 250}.{4 + i % 250}" for i in range(N))
    group = "target_groups:\n  tg: {{Protocol: TCP, Port: 80, VpcId: main, TargetType: ip, Targets: [{}]}}\n"
    lab = load_lab_text(WIDE + group.format(targets), "lab.yaml", name="t")
    assert len(lab.target_groups["tg"].targets) == N
    e = refused(WIDE + group.format(targets + ", {Id: 10.0.5.10, Port: 8080}"))
    assert (e.key_path, e.reason) == (
        f"target_groups.tg.Targets[{N}]",
        "target 10.0.5.10 is already Targets[256]; registering one target on several ports is not supported yet",
    )


def test_thousands_of_records_and_values_load_and_a_repeated_one_is_named():
    values = ", ".join(f"10.0.{i // 250}.{i % 250}" for i in range(N))
    names = "".join(f"      - {{Name: h{i}.example.local, Type: A, ResourceRecords: [10.0.0.{i % 250}]}}\n" for i in range(N))
    zone = "hosted_zones:\n  z:\n    Name: example.local\n    VPCs: [{{VPCId: main}}]\n    RecordSets:\n{}"
    lab = load_lab_text(WIDE + zone.format(f"      - {{Name: many.example.local, Type: A, ResourceRecords: [{values}]}}\n" + names),
                        "lab.yaml", name="t")
    assert len(lab.hosted_zones["z"].records[0].values) == N and len(lab.hosted_zones["z"].records) == N + 1
    e = refused(WIDE + zone.format(f"      - {{Name: many.example.local, Type: A, ResourceRecords: [{values}, 10.0.2.7]}}\n"))
    assert (e.key_path, e.reason) == (f"hosted_zones.z.RecordSets[0].ResourceRecords[{N}]", "10.0.2.7 is already ResourceRecords[507]")
    e = refused(WIDE + zone.format(names + "      - {Name: h77.example.local, Type: CNAME, ResourceRecords: [x.example.local]}\n"))
    assert (e.key_path, e.reason) == (
        f"hosted_zones.z.RecordSets[{N}].Type",
        "h77.example.local already has a record set of type A, RecordSets[77], and a CNAME must be the only record set at its name",
    )


# -- network ACLs


def acl(*entries: str, extra: str = "") -> str:
    body = "".join(f"      - {entry}\n" for entry in entries)
    return BASE + f"network_acls:\n  n:\n    VpcId: main\n{extra}    Entries:\n{body}"


def test_nacl_rule_number_outside_1_to_32766_is_refused():
    e = refused(acl("{RuleNumber: 32767, Protocol: -1, RuleAction: allow, CidrBlock: 0.0.0.0/0}"))
    assert (e.key_path, e.reason) == ("network_acls.n.Entries[0].RuleNumber", "32767 is outside 1-32766")


def test_nacl_rule_number_used_twice_in_one_direction_is_refused():
    e = refused(acl(
        "{RuleNumber: 100, Protocol: -1, RuleAction: allow, CidrBlock: 0.0.0.0/0}",
        "{RuleNumber: 100, Protocol: -1, RuleAction: allow, CidrBlock: 0.0.0.0/0, Egress: true}",
        "{RuleNumber: 100, Protocol: -1, RuleAction: deny, CidrBlock: 10.0.0.0/8}",
    ))  # fmt: skip
    assert (e.key_path, e.reason) == ("network_acls.n.Entries[2].RuleNumber", "ingress rule 100 is already Entries[0]")


def test_nacl_tcp_entry_without_port_range_is_refused():
    e = refused(acl("{RuleNumber: 1, Protocol: tcp, RuleAction: allow, CidrBlock: 0.0.0.0/0}"))
    assert (e.key_path, e.reason) == ("network_acls.n.Entries[0].PortRange", "required key is missing for tcp")


def test_nacl_action_must_be_allow_or_deny():
    e = refused(acl("{RuleNumber: 1, Protocol: -1, RuleAction: permit, CidrBlock: 0.0.0.0/0}"))
    assert e.key_path == "network_acls.n.Entries[0].RuleAction"


def test_subnet_associated_with_two_acls_is_refused():
    text = acl("{RuleNumber: 1, Protocol: -1, RuleAction: allow, CidrBlock: 0.0.0.0/0}", extra="    SubnetAssociations: [public-a]\n")
    text += "  m: {VpcId: main, SubnetAssociations: [public-a]}\n"
    e = refused(text)
    assert (e.key_path, e.reason) == ("network_acls.m.SubnetAssociations[0]", "subnet public-a is already associated with network ACL n")


# -- route tables


def test_route_to_gateway_not_attached_to_that_vpc_is_refused():
    e = refused(routes("{DestinationCidrBlock: 0.0.0.0/0, GatewayId: igw-b}"))
    assert str(e) == (
        "lab.yaml: route_tables.rt.Routes[0].GatewayId: internet gateway igw-b is attached to VPC other, not to VPC main"
    )


def test_two_targets_in_one_route_are_refused():
    e = refused(routes("{DestinationCidrBlock: 0.0.0.0/0, GatewayId: igw, InstanceId: web}"))
    assert (e.key_path, e.reason) == (
        "route_tables.rt.Routes[0].InstanceId",
        "a route has exactly one target, and this one already has GatewayId",
    )


def test_route_without_target_is_refused():
    assert refused(routes("{DestinationCidrBlock: 0.0.0.0/0}")).reason.startswith("a route needs a target")


def test_route_to_an_unknown_transit_gateway_is_refused():
    e = refused(routes("{DestinationCidrBlock: 0.0.0.0/0, TransitGatewayId: x}"))
    assert (e.key_path, e.reason) == ("route_tables.rt.Routes[0].TransitGatewayId", "unknown transit gateway 'x'")


def test_route_to_unknown_vpc_endpoint_is_refused():
    e = refused(routes("{DestinationCidrBlock: 0.0.0.0/0, VpcEndpointId: x}"))
    assert (e.key_path, e.reason) == ("route_tables.rt.Routes[0].VpcEndpointId", "unknown VPC endpoint 'x'")


def test_route_destination_with_host_bits_is_refused():
    e = refused(routes("{DestinationCidrBlock: 0.0.0.1/0, GatewayId: igw}"))
    assert e.key_path == "route_tables.rt.Routes[0].DestinationCidrBlock" and "host bits" in e.reason


def test_duplicate_destination_in_a_table_is_refused():
    e = refused(routes("{DestinationCidrBlock: 0.0.0.0/0, GatewayId: igw}", "{DestinationCidrBlock: 0.0.0.0/0, GatewayId: igw}"))
    assert (e.key_path, e.reason) == ("route_tables.rt.Routes[1].DestinationCidrBlock", "0.0.0.0/0 is already routed by Routes[0]")


def test_vpc_cidr_route_to_anything_but_local_is_refused():
    e = refused(routes("{DestinationCidrBlock: 10.0.0.0/16, GatewayId: igw}"))
    assert e.key_path == "route_tables.rt.Routes[0]" and "local route" in e.reason


def test_local_target_for_another_destination_is_refused():
    assert "only the VPC CIDR" in refused(routes("{DestinationCidrBlock: 0.0.0.0/0, GatewayId: local}")).reason


def test_route_more_specific_than_local_must_be_exactly_a_subnet():
    extra = "instances:\n  fw: {SubnetId: public-a}\n"
    e = refused(routes("{DestinationCidrBlock: 10.0.2.0/25, InstanceId: fw}", extra=extra))
    assert "not exactly a subnet's CIDR" in e.reason


def test_route_more_specific_than_local_to_a_gateway_is_refused():
    e = refused(routes("{DestinationCidrBlock: 10.0.2.0/24, GatewayId: igw}"))
    assert "must target a NAT gateway, an instance, a network interface or a Gateway Load Balancer endpoint" in e.reason


def test_route_to_an_instance_of_another_vpc_is_refused():
    e = refused(routes("{DestinationCidrBlock: 0.0.0.0/0, InstanceId: fw}", extra="instances:\n  fw: {SubnetId: other-a}\n"))
    assert e.reason == "instance fw is in VPC other, not in VPC main"


def test_route_to_unknown_network_interface_id_is_refused():
    e = refused(routes("{DestinationCidrBlock: 0.0.0.0/0, NetworkInterfaceId: eni-0123}"))
    assert e.reason == "unknown network interface 'eni-0123'"


def test_edge_associated_table_cannot_route_to_a_gateway():
    text = routes("{DestinationCidrBlock: 0.0.0.0/0, GatewayId: igw}") + "    EdgeAssociations: [igw]\n"
    assert "can only route to local, an instance, a network interface or a Gateway Load Balancer endpoint" in (
        refused(text).reason
    )


def test_edge_associated_table_routes_only_the_vpc_or_a_subnet():
    text = routes("{DestinationCidrBlock: 192.0.2.0/24, InstanceId: fw}", extra="instances:\n  fw: {SubnetId: public-a}\n")
    e = refused(text + "    EdgeAssociations: [igw]\n")
    assert "routes only the VPC CIDR or a subnet's CIDR" in e.reason


def test_edge_association_with_gateway_of_another_vpc_is_refused():
    e = refused(BASE + "route_tables:\n  rt: {VpcId: main, EdgeAssociations: [igw-b]}\n")
    assert (e.key_path, e.reason) == (
        "route_tables.rt.EdgeAssociations[0]",
        "internet gateway igw-b is attached to VPC other, not to VPC main",
    )


def test_two_main_tables_in_a_vpc_are_refused():
    e = refused(BASE + "route_tables:\n  a: {VpcId: main, Main: true}\n  b: {VpcId: main, Main: true}\n")
    assert (e.key_path, e.reason) == ("route_tables.b.Main", "VPC main already has a main route table: a")


def test_subnet_associated_with_two_tables_is_refused():
    e = refused(BASE + "route_tables:\n  a: {VpcId: main, SubnetAssociations: [public-a]}\n"
                "  b: {VpcId: main, SubnetAssociations: [private-a, public-a]}\n")  # fmt: skip
    assert (e.key_path, e.reason) == ("route_tables.b.SubnetAssociations[1]", "subnet public-a is already associated with route table a")


def test_subnet_of_another_vpc_cannot_be_associated():
    e = refused(BASE + "route_tables:\n  a: {VpcId: main, SubnetAssociations: [other-a]}\n")
    assert e.reason == "subnet other-a is in VPC other, not in VPC main"
