"""The plan hands each VPC's resolver the private hosted zones it answers, as plain data,
and the daemon turns them into zones the resolver serves."""
from __future__ import annotations

from vpclab.daemon.main import dns_zones
from vpclab.engines.dns import resolver as dns_engine
from vpclab.model import load_lab_text
from vpclab.plan.compile import compile_lab

LAB = """
vpcs:
  app: {CidrBlock: 10.0.0.0/16, EnableDnsHostnames: true}
  other: {CidrBlock: 10.1.0.0/16, EnableDnsHostnames: true}
  no-hostnames: {CidrBlock: 10.2.0.0/16}
  no-support: {CidrBlock: 10.3.0.0/16, EnableDnsSupport: false, EnableDnsHostnames: true}
subnets:
  app-a: {VpcId: app, CidrBlock: 10.0.1.0/24}
instances:
  web-1: {SubnetId: app-a, PrivateIpAddress: 10.0.1.10}
hosted_zones:
  example-local:
    Name: example.local
    VPCs: [app, no-hostnames, no-support]
    RecordSets:
      - {Name: web.example.local, Type: A, TTL: 60, ResourceRecords: [10.0.1.10]}
      - {Name: www.example.local, Type: CNAME, ResourceRecords: [web.example.local]}
      - {Name: txt.example.local, Type: TXT, ResourceRecords: ['"hello" "world"']}
      - {Name: example.local, Type: A, AliasTarget: {DNSName: ip-10-0-1-10.ec2.internal}}
  sub:
    Name: sub.example.local
    VPCs: [app]
    RecordSets:
      - {Name: api.sub.example.local, Type: A, ResourceRecords: [10.0.1.20]}
"""


def dns_services(text: str = LAB) -> dict:
    wiring = compile_lab(load_lab_text(text, "lab.yaml", name="t"))
    return {s.ns.split(":", 1)[1]: s for s in wiring.services if s.kind == "dns" and s.ns.startswith("router:")}


def test_private_zone_reaches_only_associated_vpcs():
    services = dns_services()
    assert [domain for domain, _ in services["app"].param("private_zones")] == ["example.local", "sub.example.local"]
    assert services["other"].param("private_zones") is None


def test_private_zone_needs_both_dns_attributes():
    services = dns_services()
    assert services["no-hostnames"].param("private_zones") is None  # associated, but hostnames off
    assert "no-support" not in services  # no resolver at all


def test_zones_are_plain_data_with_aliases_as_a_records_and_txt_as_text():
    (domain, records), _ = dns_services()["app"].param("private_zones")
    assert domain == "example.local"
    assert records == (
        ("web.example.local", "A", 60, ("10.0.1.10",), ""),
        ("www.example.local", "CNAME", 300, ("web.example.local",), ""),
        ("txt.example.local", "TXT", 300, ("helloworld",), ""),
        ("example.local", "A", 60, ("10.0.1.10",), "ip-10-0-1-10.ec2.internal"),
    )


def test_lab_without_hosted_zones_plans_dns_as_before():
    text = LAB.split("hosted_zones:")[0]
    assert all(s.param("private_zones") is None for s in dns_services(text).values())


def resolver_for(vpc: str) -> dns_engine.Resolver:
    return dns_engine.Resolver(dns_zones(dns_services()[vpc]))


def test_daemon_zones_answer_records_cname_alias_and_nxdomain_in_zone():
    resolver = resolver_for("app")
    assert resolver.resolve("web.example.local", "A") == ("NOERROR", (("web.example.local.", "A", "10.0.1.10", 60),))
    rcode, answers = resolver.resolve("www.example.local", "A")
    assert (rcode, [a.rtype for a in answers]) == ("NOERROR", ["CNAME", "A"])
    assert resolver.resolve("example.local", "A")[1][0].value == "10.0.1.10"
    assert resolver.resolve("txt.example.local", "TXT")[1][0].value == "helloworld"
    lookup = resolver.lookup("nothing.example.local", "A")
    assert (lookup.rcode, lookup.authoritative, lookup.authority[0].rtype) == ("NXDOMAIN", True, "SOA")


def test_daemon_zones_most_specific_zone_wins():
    resolver = resolver_for("app")
    assert resolver.resolve("api.sub.example.local", "A")[1][0].value == "10.0.1.20"
    assert resolver.resolve("web.sub.example.local", "A")[0] == "NXDOMAIN"


def test_daemon_zones_of_a_vpc_not_associated_do_not_answer_the_zone():
    assert resolver_for("other").resolve("web.example.local", "A") == ("NXDOMAIN", ())
    assert resolver_for("no-hostnames").resolve("web.example.local", "A") == ("NXDOMAIN", ())


NLB_ALIAS = """
vpcs:
  app: {CidrBlock: 10.0.0.0/16, EnableDnsHostnames: true}
subnets:
  a: {VpcId: app, AvailabilityZone: a, CidrBlock: 10.0.1.0/24}
  b: {VpcId: app, AvailabilityZone: b, CidrBlock: 10.0.2.0/24}
load_balancers:
  web: {Type: network, Scheme: internal, SubnetMappings: [{SubnetId: a, PrivateIPv4Address: 10.0.1.5},
                                                          {SubnetId: b, PrivateIPv4Address: 10.0.2.5}]}
hosted_zones:
  example:
    Name: example.local
    VPCs: [app]
    RecordSets:
      - {Name: web.example.local, Type: A, AliasTarget: {DNSName: web}}
"""


def test_alias_to_a_load_balancer_answers_as_the_load_balancer_does_now():
    service = dns_services(NLB_ALIAS)["app"]
    lab = load_lab_text(NLB_ALIAS, "lab.yaml", name="t")
    regional = lab.load_balancers["web"].dns_name
    static = dns_engine.Resolver(dns_zones(service))
    assert sorted(a.value for a in static.resolve("web.example.local", "A")[1]) == ["10.0.1.5", "10.0.2.5"]
    # AZ a has no healthy target: the daemon's names drop it, and the alias follows
    live = dns_engine.Resolver(dns_zones(service, {regional: ["10.0.2.5"]}))
    assert [a.value for a in live.resolve("web.example.local", "A")[1]] == ["10.0.2.5"]
