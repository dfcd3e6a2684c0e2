"""Route 53 private hosted zones in the lab file: loaded, resolved and refused with file, key and reason."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from vpclab.model import HostedZone, LabFileError, RecordSet, load_lab, load_lab_text
from vpclab.model.resources import txt_text

REPO = Path(__file__).resolve().parents[2]

BASE = """
vpcs:
  app: {CidrBlock: 10.0.0.0/16, EnableDnsHostnames: true}
  other: {CidrBlock: 10.1.0.0/16, EnableDnsHostnames: true}
subnets:
  app-a: {VpcId: app, CidrBlock: 10.0.1.0/24}
instances:
  web-1: {SubnetId: app-a, PrivateIpAddress: 10.0.1.10}
"""


def zone(*records: str, name: str = "example.local", vpcs: str = "[app]", zone_name: str = "example-local",
         extra: str = "") -> str:
    """BASE plus one hosted zone with these record set lines."""
    body = "".join(f"      - {r}\n" for r in records)
    sets = f"    RecordSets:\n{body}" if records else ""
    return BASE + f"hosted_zones:\n  {zone_name}:\n    Name: {name}\n    VPCs: {vpcs}\n{sets}{extra}"


def loaded(text: str):
    return load_lab_text(text, "lab.yaml", name="t")


def refused(text: str) -> LabFileError:
    with pytest.raises(LabFileError) as info:
        loaded(text)
    return info.value


WEB = "{Name: web.example.local, Type: A, TTL: 60, ResourceRecords: [10.0.1.10]}"


# -- loading


def test_hosted_zone_loads_with_domain_vpcs_and_records():
    lab = loaded(zone(WEB, "{Name: WWW.Example.Local., Type: cname, ResourceRecords: [web.example.local.]}",
                      '{Name: txt.example.local, Type: TXT, ResourceRecords: [\'"hello"\']}',
                      name="Example.Local."))
    z = lab.hosted_zones["example-local"]
    assert isinstance(z, HostedZone)
    assert (z.name, z.domain, z.vpcs) == ("example-local", "example.local", ("app",))
    assert z.records == (
        RecordSet("web.example.local", "A", 60, ("10.0.1.10",)),
        RecordSet("www.example.local", "CNAME", 300, ("web.example.local",)),  # TTL defaults to 300
        RecordSet("txt.example.local", "TXT", 300, ('"hello"',)),
    )
    assert lab.hosted_zones_of("app") == (z,) and lab.hosted_zones_of("other") == ()
    assert lab.notes == ()


def test_zone_id_is_z_and_uppercase_alphanumerics_stable_whatever_the_lab_name():
    a = load_lab_text(zone(WEB), "a.yaml", name="one").hosted_zones["example-local"].id
    b = load_lab_text(zone(WEB), "b.yaml", name="two").hosted_zones["example-local"].id
    assert a == b
    assert re.fullmatch(r"Z[0-9A-Z]{13,21}", a)
    assert loaded(zone(WEB, zone_name="other-zone")).hosted_zones["other-zone"].id != a


def test_cloudformation_vpc_association_spelling_loads():
    lab = loaded(zone(WEB, vpcs="[{VPCId: app, VPCRegion: us-east-1}]"))
    assert lab.hosted_zones["example-local"].vpcs == ("app",)


def test_vpc_may_be_named_by_its_id():
    vpc_id = loaded(BASE).vpcs["other"].id
    assert loaded(zone(WEB, vpcs=f"[app, {vpc_id}]")).hosted_zones["example-local"].vpcs == ("app", "other")


def test_txt_text_joins_quoted_strings_and_unescapes():
    assert txt_text('"hello"') == "hello"
    assert txt_text('"a b" "c\\"d"') == 'a bc"d'
    assert txt_text("plain") == "plain"


# -- aliases


def test_alias_to_an_instance_hostname_resolves_to_its_private_ip():
    lab = loaded(zone("{Name: api.example.local, Type: A, AliasTarget: {DNSName: ip-10-0-1-10.ec2.internal}}"))
    assert lab.hosted_zones["example-local"].records == (
        RecordSet("api.example.local", "A", 60, ("10.0.1.10",), alias_target="ip-10-0-1-10.ec2.internal"),
    )


def test_alias_at_the_apex_follows_aliases_and_takes_the_target_ttl():
    lab = loaded(zone("{Name: example.local, Type: A, AliasTarget: {DNSName: api.example.local}}",
                      "{Name: api.example.local, Type: A, AliasTarget: {DNSName: web.example.local}}",
                      WEB))
    apex = lab.hosted_zones["example-local"].records[0]
    assert (apex.name, apex.type, apex.ttl, apex.values) == ("example.local", "A", 60, ("10.0.1.10",))


def test_alias_to_a_record_in_another_zone_of_the_lab():
    text = zone("{Name: api.example.local, Type: A, AliasTarget: {DNSName: db.corp.internal}}") + """
  corp:
    Name: corp.internal
    VPCs: [other]
    RecordSets:
      - {Name: db.corp.internal, Type: A, TTL: 30, ResourceRecords: [10.1.1.5, 10.1.1.6]}
"""
    record = loaded(text).hosted_zones["example-local"].records[0]
    assert (record.ttl, record.values) == (30, ("10.1.1.5", "10.1.1.6"))


def test_alias_to_an_unknown_name_says_what_an_alias_may_point_to():
    e = refused(zone("{Name: api.example.local, Type: A, AliasTarget: {DNSName: ip-10-0-1-11.ec2.internal}}"))
    assert e.key_path == "hosted_zones.example-local.RecordSets[0].AliasTarget.DNSName"
    assert "not a name the lab knows" in e.reason and "instance's private hostname" in e.reason
    assert "did you mean 'ip-10-0-1-10.ec2.internal'?" in e.reason


def test_alias_to_a_name_without_a_records_is_refused():
    e = refused(zone("{Name: api.example.local, Type: A, AliasTarget: {DNSName: www.example.local}}",
                     "{Name: www.example.local, Type: CNAME, ResourceRecords: [web.example.local]}"))
    assert e.key_path == "hosted_zones.example-local.RecordSets[0].AliasTarget.DNSName"
    assert "no A record at www.example.local (it has CNAME)" in e.reason


def test_alias_loop_is_refused():
    e = refused(zone("{Name: a.example.local, Type: A, AliasTarget: {DNSName: b.example.local}}",
                     "{Name: b.example.local, Type: A, AliasTarget: {DNSName: a.example.local}}"))
    assert e.key_path == "hosted_zones.example-local.RecordSets[0].AliasTarget.DNSName"
    assert "loop: a.example.local -> b.example.local -> a.example.local" in e.reason


def test_alias_to_a_gateway_load_balancer_is_refused_it_has_no_addresses():
    text = (REPO / "examples" / "gwlb-distributed.yaml").read_text()
    lab = load_lab_text(text, "gwlb.yaml", name="t")
    lb = next(iter(lab.load_balancers.values()))
    vpc = lb.vpc
    extra = f"""
hosted_zones:
  z:
    Name: example.local
    VPCs: [{vpc}]
    RecordSets:
      - {{Name: fw.example.local, Type: A, AliasTarget: {{DNSName: {lb.dns_name}}}}}
"""
    with pytest.raises(LabFileError) as info:
        load_lab_text(text + extra, "gwlb.yaml", name="t")
    assert info.value.key_path == "hosted_zones.z.RecordSets[0].AliasTarget.DNSName"
    assert f"Gateway Load Balancer {lb.name}" in info.value.reason and "no addresses" in info.value.reason


@pytest.mark.parametrize("extra, key, words", [
    ("TTL: 60", "TTL", "takes its TTL from its target"),
    ("ResourceRecords: [10.0.1.1]", "ResourceRecords", "has no ResourceRecords"),
])
def test_alias_takes_neither_ttl_nor_values(extra, key, words):
    e = refused(zone(f"{{Name: api.example.local, Type: A, {extra}, AliasTarget: {{DNSName: web.example.local}}}}",
                     WEB))
    assert (e.key_path, words in e.reason) == (f"hosted_zones.example-local.RecordSets[0].{key}", True)


def test_ambiguous_alias_target_needs_hosted_zone_id_which_chooses_the_zone():
    two = """
  corp-app:
    Name: corp.internal
    VPCs: [app]
    RecordSets: [{Name: db.corp.internal, Type: A, ResourceRecords: [10.0.1.5]}]
  corp-other:
    Name: corp.internal
    VPCs: [other]
    RecordSets: [{Name: db.corp.internal, Type: A, ResourceRecords: [10.1.1.5]}]
"""
    e = refused(zone("{Name: api.example.local, Type: A, AliasTarget: {DNSName: db.corp.internal}}") + two)
    assert "give AliasTarget.HostedZoneId" in e.reason
    text = zone("{Name: api.example.local, Type: A, AliasTarget: {DNSName: db.corp.internal, "
                "HostedZoneId: corp-other}}") + two
    assert loaded(text).hosted_zones["example-local"].records[0].values == ("10.1.1.5",)


# -- refusals


def test_record_outside_zone_names_file_key_and_reason():
    e = refused(zone("{Name: web.example.com, Type: A, ResourceRecords: [10.0.1.10]}"))
    assert (e.source, e.key_path) == ("lab.yaml", "hosted_zones.example-local.RecordSets[0].Name")
    assert e.reason == "web.example.com is not in zone example.local"
    assert str(e) == f"lab.yaml: hosted_zones.example-local.RecordSets[0].Name: {e.reason}"


def test_relative_record_name_hints_at_the_full_name():
    e = refused(zone("{Name: web, Type: A, ResourceRecords: [10.0.1.10]}"))
    assert "write the full name, like web.example.local" in e.reason


def test_other_route53_record_types_are_not_supported_yet():
    e = refused(zone("{Name: example.local, Type: MX, ResourceRecords: ['10 mail.example.local']}"))
    assert e.key_path == "hosted_zones.example-local.RecordSets[0].Type"
    assert "MX records are not supported yet" in e.reason


def test_unknown_record_type_suggests_a_close_one():
    e = refused(zone("{Name: web.example.local, Type: AAA, ResourceRecords: [10.0.1.10]}"))
    assert "unknown record type 'AAA'" in e.reason and "did you mean" in e.reason


@pytest.mark.parametrize("rtype, value, words", [
    ("A", "10.0.1", "not an IPv4 address"),
    ("A", "2001:db8::1", "not an IPv4 address"),
    ("AAAA", "10.0.1.10", "not an IPv6 address"),
    ("TXT", '"unterminated', "unterminated quoted string"),
])
def test_record_values_must_fit_their_type(rtype, value, words):
    e = refused(zone(f"{{Name: v.example.local, Type: {rtype}, ResourceRecords: ['{value}']}}"))
    assert e.key_path == "hosted_zones.example-local.RecordSets[0].ResourceRecords[0]"
    assert words in e.reason


def test_record_set_needs_values_or_an_alias():
    e = refused(zone("{Name: web.example.local, Type: A}"))
    assert e.key_path == "hosted_zones.example-local.RecordSets[0].ResourceRecords"


def test_cname_must_be_alone_at_its_name_whichever_comes_first():
    cname = "{Name: web.example.local, Type: CNAME, ResourceRecords: [other.example.local]}"
    for records in ((WEB, cname), (cname, WEB)):
        e = refused(zone(*records))
        assert e.key_path == "hosted_zones.example-local.RecordSets[1].Type"
        assert "a CNAME must be the only record set at its name" in e.reason


def test_cname_has_one_value_and_is_not_at_the_apex():
    e = refused(zone("{Name: example.local, Type: CNAME, ResourceRecords: [web.example.local]}"))
    assert e.key_path == "hosted_zones.example-local.RecordSets[0].Type" and "use an alias" in e.reason
    e = refused(zone("{Name: w.example.local, Type: CNAME, ResourceRecords: [a.example.local, b.example.local]}"))
    assert "a CNAME has exactly one value" in e.reason


def test_one_record_set_per_name_and_type():
    e = refused(zone(WEB, "{Name: web.example.local, Type: A, ResourceRecords: [10.0.1.11]}"))
    assert e.key_path == "hosted_zones.example-local.RecordSets[1].Type"
    assert "already has a record set of type A, RecordSets[0]" in e.reason


def test_unknown_vpc_suggests_did_you_mean():
    e = refused(zone(WEB, vpcs="[ap]"))
    assert e.key_path == "hosted_zones.example-local.VPCs[0]"
    assert e.reason == "unknown VPC 'ap'; did you mean 'app'?"


def test_private_zone_needs_a_vpc_public_zones_are_not_supported_yet():
    e = refused(BASE + "hosted_zones:\n  z:\n    Name: example.local\n")
    assert e.key_path == "hosted_zones.z.VPCs" and "public hosted zones are not supported yet" in e.reason
    assert refused(zone(WEB, vpcs="[]")).key_path == "hosted_zones.example-local.VPCs"


def test_vpc_cannot_be_associated_with_two_zones_of_the_same_name():
    e = refused(zone(WEB) + "  again:\n    Name: example.local\n    VPCs: [other, app]\n")
    assert e.key_path == "hosted_zones.again.VPCs[1]"
    assert "ConflictingDomainExists" in e.reason and "example-local" in e.reason


def test_instance_hostname_domain_and_reverse_zones_are_refused():
    assert "private hostnames" in refused(zone(name="ec2.internal")).reason
    assert "not supported yet" in refused(zone(name="1.0.10.in-addr.arpa")).reason


def test_unknown_key_in_a_record_set_suggests_the_right_one():
    e = refused(zone("{Name: web.example.local, Type: A, ResourceRecord: [10.0.1.10]}"))
    assert e.key_path == "hosted_zones.example-local.RecordSets[0].ResourceRecord"
    assert "did you mean 'ResourceRecords'?" in e.reason


def test_routing_policies_are_not_supported_yet():
    e = refused(zone("{Name: web.example.local, Type: A, SetIdentifier: a, Weight: 1, ResourceRecords: [10.0.1.10]}"))
    assert e.key_path == "hosted_zones.example-local.RecordSets[0].SetIdentifier" and "not supported yet" in e.reason


def test_hosted_zone_names_share_the_lab_namespace():
    e = refused(zone(WEB, zone_name="web-1"))
    assert e.key_path == "hosted_zones.web-1" and "already used by instances.web-1" in e.reason


# -- §7: both DNS attributes


def test_private_zone_on_a_vpc_without_dns_hostnames_loads_with_a_note():
    text = zone(WEB).replace("other: {CidrBlock: 10.1.0.0/16, EnableDnsHostnames: true}",
                             "other: {CidrBlock: 10.1.0.0/16}")
    lab = loaded(text.replace("VPCs: [app]", "VPCs: [app, other]"))
    assert lab.hosted_zones["example-local"].vpcs == ("app", "other")  # valid: AWS allows the association
    (note,) = lab.notes
    assert note.startswith("hosted_zones.example-local.VPCs[1]: VPC other has EnableDnsHostnames false")
    assert "needs both EnableDnsSupport and EnableDnsHostnames" in note


def test_example_route53_lab_loads():
    lab = load_lab(REPO / "examples" / "route53-private-zone.yaml")
    assert {z.domain for z in lab.hosted_zones.values()} == {"example.local", "sub.example.local"}
