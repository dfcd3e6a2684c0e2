"""Loading PrivateLink labs: endpoint services in front of Network Load Balancers, interface
endpoints (ENIs, security groups, DNS names), aliases to them, live acceptance, status."""
from __future__ import annotations

import re
from ipaddress import IPv4Address

import pytest

from test_model_gwlb import GWLB
from test_model_nlb import edit as nlb_edit
from test_model_nlb import load, refused_at
from vpclab.model import ChangeError, accept_vpc_endpoint_connections, load_lab_text, reject_vpc_endpoint_connections

# A provider account's internal NLB in two AZs, offered as an endpoint service; a consumer VPC
# with the very same CIDR, in the lab's account, reaches it through an interface endpoint.
PRIVATELINK = """
lab: {account: "111122223333"}
vpcs:
  provider: {CidrBlock: 10.0.0.0/16, Account: "444455556666"}
  consumer: {CidrBlock: 10.0.0.0/16, EnableDnsHostnames: true}
subnets:
  provider-a: {VpcId: provider, CidrBlock: 10.0.1.0/24, AvailabilityZone: a}
  provider-b: {VpcId: provider, CidrBlock: 10.0.2.0/24, AvailabilityZone: b}
  consumer-a: {VpcId: consumer, CidrBlock: 10.0.1.0/24, AvailabilityZone: a}
  consumer-b: {VpcId: consumer, CidrBlock: 10.0.2.0/24, AvailabilityZone: b}
  consumer-c: {VpcId: consumer, CidrBlock: 10.0.3.0/24, AvailabilityZone: c}
  consumer-a2: {VpcId: consumer, CidrBlock: 10.0.4.0/24, AvailabilityZone: a}
security_groups:
  endpoint-sg: {VpcId: consumer}
  provider-sg: {VpcId: provider}
instances:
  web-1: {SubnetId: provider-a}
  web-2: {SubnetId: provider-b}
  client: {SubnetId: consumer-a}
load_balancers:
  nlb:
    Type: network
    Scheme: internal
    Subnets: [provider-a, provider-b]
target_groups:
  web: {Protocol: TCP, Port: 80, VpcId: provider, Targets: [web-1, web-2]}
listeners:
  http:
    LoadBalancerArn: nlb
    Protocol: TCP
    Port: 80
    DefaultActions: [{Type: forward, TargetGroupArn: web}]
vpc_endpoint_services:
  svc:
    NetworkLoadBalancerArns: [nlb]
    AllowedPrincipals: ["arn:aws:iam::111122223333:root"]
vpc_endpoints:
  vpce:
    VpcEndpointType: Interface
    ServiceName: svc
    VpcId: consumer
    SubnetIds: [consumer-a, consumer-b]
    SecurityGroupIds: [endpoint-sg]
"""


def edit(old: str, new: str, text: str = PRIVATELINK) -> str:
    return nlb_edit(old, new, text)


LAB = load(PRIVATELINK)


# -- endpoint services


def test_network_load_balancer_service_is_an_interface_service_of_the_providers_account():
    service = LAB.vpc_endpoint_services["svc"]
    assert re.fullmatch(r"vpce-svc-0[0-9a-f]{16}", service.id)
    assert service.service_name == f"com.amazonaws.vpce.us-east-1.{service.id}"
    assert (service.type, service.load_balancers, service.account, service.acceptance_required) == (
        "Interface", ("nlb",), "444455556666", True
    )
    assert LAB.endpoint_service_of("nlb") == service


def test_service_needs_network_or_gateway_load_balancers():
    text = edit("    NetworkLoadBalancerArns: [nlb]\n", "")
    reason = refused_at(text, "vpc_endpoint_services.svc.NetworkLoadBalancerArns")
    assert reason.startswith("required key is missing: an endpoint service needs NetworkLoadBalancerArns")
    text = edit("NetworkLoadBalancerArns: [nlb]", "NetworkLoadBalancerArns: []")
    assert refused_at(text, "vpc_endpoint_services.svc.NetworkLoadBalancerArns") == (
        "an endpoint service needs at least one Network Load Balancer"
    )


def test_network_load_balancer_in_gateway_load_balancer_arns_is_refused():
    text = edit("NetworkLoadBalancerArns: [nlb]", "GatewayLoadBalancerArns: [nlb]")
    reason = refused_at(text, "vpc_endpoint_services.svc.GatewayLoadBalancerArns[0]")
    assert reason == "load balancer nlb is a network load balancer, not a gateway one"


def test_unknown_network_load_balancer_is_refused_with_a_suggestion():
    text = edit("NetworkLoadBalancerArns: [nlb]", "NetworkLoadBalancerArns: [nbl]")
    assert "did you mean 'nlb'" in refused_at(text, "vpc_endpoint_services.svc.NetworkLoadBalancerArns[0]")


def test_service_may_name_its_load_balancer_by_arn():
    text = edit("NetworkLoadBalancerArns: [nlb]", f"NetworkLoadBalancerArns: ['{LAB.load_balancers['nlb'].arn}']")
    assert load(text).vpc_endpoint_services["svc"].load_balancers == ("nlb",)


def test_network_load_balancer_serves_one_service():
    text = edit("vpc_endpoints:\n", "  svc2: {NetworkLoadBalancerArns: [nlb]}\nvpc_endpoints:\n")
    reason = refused_at(text, "vpc_endpoint_services.svc2.NetworkLoadBalancerArns[0]")
    assert reason == "load balancer nlb already serves endpoint service svc"


# -- interface endpoints


def test_interface_endpoint_has_one_eni_per_subnet_with_addresses_from_its_subnets():
    endpoint = LAB.vpc_endpoints["vpce"]
    assert (endpoint.type, endpoint.vpc, endpoint.service, endpoint.account) == ("Interface", "consumer", "svc", "111122223333")
    assert [(e.subnet, e.az, e.ip) for e in endpoint.enis] == [
        ("consumer-a", "us-east-1a", IPv4Address("10.0.1.5")),  # the client, earlier in the file, took .4
        ("consumer-b", "us-east-1b", IPv4Address("10.0.2.4")),
    ]
    assert all(re.fullmatch(r"eni-0[0-9a-f]{16}", e.id) for e in endpoint.enis)
    assert len({e.id for e in endpoint.enis}) == 2
    assert re.fullmatch(r"vpce-0[0-9a-f]{16}", endpoint.id)


def test_consumer_and_provider_may_have_identical_cidrs():
    assert LAB.vpcs["consumer"].cidr == LAB.vpcs["provider"].cidr
    assert LAB.vpc_endpoints["vpce"].enis[0].ip == LAB.load_balancers["nlb"].nodes[0].private_ip  # each in its own VPC


def test_interface_endpoint_dns_entries_are_regional_then_zonal():
    endpoint = LAB.vpc_endpoints["vpce"]
    service = LAB.vpc_endpoint_services["svc"]
    assert endpoint.dns_entries == (
        f"{endpoint.id}.{service.id}.us-east-1.vpce.amazonaws.com",
        f"{endpoint.id}-us-east-1a.{service.id}.us-east-1.vpce.amazonaws.com",
        f"{endpoint.id}-us-east-1b.{service.id}.us-east-1.vpce.amazonaws.com",
    )


def test_interface_endpoint_enis_bind_to_the_load_balancer_of_their_az():
    assert {LAB.load_balancer_of_endpoint("vpce", eni.az).name for eni in LAB.vpc_endpoints["vpce"].enis} == {"nlb"}


def test_interface_endpoint_security_groups_default_to_the_vpcs_default_group():
    assert LAB.vpc_endpoints["vpce"].security_groups == ("endpoint-sg",)
    text = edit("    SecurityGroupIds: [endpoint-sg]\n", "")
    assert load(text).vpc_endpoints["vpce"].security_groups == ("consumer-default",)


def test_interface_endpoint_security_groups_by_id():
    group_id = LAB.security_groups["endpoint-sg"].id
    text = edit("SecurityGroupIds: [endpoint-sg]", f"SecurityGroupIds: [{group_id}, consumer-default]")
    assert load(text).vpc_endpoints["vpce"].security_groups == ("endpoint-sg", "consumer-default")


@pytest.mark.parametrize(
    ("groups", "key", "reason"),
    [
        ("[provider-sg]", "SecurityGroupIds[0]", "security group provider-sg is in VPC provider, not in VPC consumer"),
        ("[endpoint-sg, endpoint-sg]", "SecurityGroupIds[1]", "security group endpoint-sg is listed twice"),
        ("[]", "SecurityGroupIds",
         "an interface endpoint needs at least one security group; leave SecurityGroupIds out for consumer-default"),
        ("[endpoint-gs]", "SecurityGroupIds[0]", "unknown security group 'endpoint-gs'; did you mean 'endpoint-sg'?"),
    ],
)  # fmt: skip
def test_interface_endpoint_security_groups_are_checked(groups, key, reason):
    text = edit("SecurityGroupIds: [endpoint-sg]", f"SecurityGroupIds: {groups}")
    assert refused_at(text, f"vpc_endpoints.vpce.{key}") == reason


def test_interface_endpoint_needs_a_subnet_and_at_most_one_per_az():
    assert "at least one subnet" in refused_at(edit("SubnetIds: [consumer-a, consumer-b]", "SubnetIds: []"),
                                               "vpc_endpoints.vpce.SubnetIds")  # fmt: skip
    text = edit("SubnetIds: [consumer-a, consumer-b]", "SubnetIds: [consumer-a, consumer-a2]")
    reason = refused_at(text, "vpc_endpoints.vpce.SubnetIds[1]")
    assert reason == (
        "subnet consumer-a2 is in us-east-1a, where the interface endpoint already has subnet consumer-a; "
        "an interface endpoint takes one subnet per AZ"
    )


def test_interface_endpoint_subnet_must_be_where_the_service_has_a_node():
    text = edit("SubnetIds: [consumer-a, consumer-b]", "SubnetIds: [consumer-a, consumer-c]")
    assert refused_at(text, "vpc_endpoints.vpce.SubnetIds[1]") == (
        "subnet consumer-c is in us-east-1c, but endpoint service svc is only in us-east-1a, us-east-1b "
        "(where its load balancers have nodes)"
    )


def test_interface_endpoint_subnet_must_be_in_its_vpc():
    text = edit("SubnetIds: [consumer-a, consumer-b]", "SubnetIds: [provider-a]")
    assert refused_at(text, "vpc_endpoints.vpce.SubnetIds[0]") == "subnet provider-a is in VPC provider, not in VPC consumer"


def with_endpoint(lines: str) -> str:
    return edit("    SecurityGroupIds: [endpoint-sg]\n", f"    SecurityGroupIds: [endpoint-sg]\n{lines}")


def test_subnet_configurations_choose_an_enis_address():
    lab = load(with_endpoint("    SubnetConfigurations: [{SubnetId: consumer-b, Ipv4: 10.0.2.50}]\n"))
    assert [e.ip for e in lab.vpc_endpoints["vpce"].enis] == [IPv4Address("10.0.1.5"), IPv4Address("10.0.2.50")]


@pytest.mark.parametrize(
    ("config", "key", "fragment"),
    [
        ("{SubnetId: consumer-c, Ipv4: 10.0.3.50}", "SubnetConfigurations[0].SubnetId",
         "subnet consumer-c is not one of the endpoint's SubnetIds"),
        ("{SubnetId: consumer-a, Ipv4: 10.0.1.3}", "SubnetConfigurations[0].Ipv4", "reserved"),
        ("{SubnetId: consumer-a, Ipv4: 10.0.2.9}", "SubnetConfigurations[0].Ipv4", "outside subnet consumer-a"),
        ("{SubnetId: consumer-a, Ipv6: '2001:db8::1'}", "SubnetConfigurations[0].Ipv6", "not supported yet"),
    ],
)  # fmt: skip
def test_subnet_configurations_are_checked(config, key, fragment):
    reason = refused_at(with_endpoint(f"    SubnetConfigurations: [{config}]\n"), f"vpc_endpoints.vpce.{key}")
    assert fragment in reason


def test_subnet_configuration_address_is_taken_before_allocation_and_only_once():
    lab = load(with_endpoint("    SubnetConfigurations: [{SubnetId: consumer-a, Ipv4: 10.0.1.4}]\n"))
    assert (lab.vpc_endpoints["vpce"].enis[0].ip, lab.instances["client"].private_ip) == (
        IPv4Address("10.0.1.4"), IPv4Address("10.0.1.5")
    )
    text = edit("  client: {SubnetId: consumer-a}", "  client: {SubnetId: consumer-a, PrivateIpAddress: 10.0.1.4}",
                with_endpoint("    SubnetConfigurations: [{SubnetId: consumer-a, Ipv4: 10.0.1.4}]\n"))  # fmt: skip
    reason = refused_at(text, "vpc_endpoints.vpce.SubnetConfigurations[0].Ipv4")
    assert reason == "10.0.1.4 is already used by instance client"


def test_subnet_configured_twice_is_refused():
    text = with_endpoint("    SubnetConfigurations: [{SubnetId: consumer-a}, {SubnetId: consumer-a}]\n")
    assert refused_at(text, "vpc_endpoints.vpce.SubnetConfigurations[1].SubnetId") == "subnet consumer-a is configured twice"


def test_private_dns_off_is_accepted_and_on_is_not_supported_yet():
    assert "vpce" in load(with_endpoint("    PrivateDnsEnabled: false\n")).vpc_endpoints
    reason = refused_at(with_endpoint("    PrivateDnsEnabled: true\n"), "vpc_endpoints.vpce.PrivateDnsEnabled")
    assert reason.startswith("private DNS names for interface endpoints are not supported yet")


def test_endpoint_policy_is_not_supported_yet():
    reason = refused_at(with_endpoint("    PolicyDocument: {Statement: []}\n"), "vpc_endpoints.vpce.PolicyDocument")
    assert reason == "endpoint policies are not supported yet"


def test_endpoint_type_must_match_the_services():
    text = edit("VpcEndpointType: Interface", "VpcEndpointType: GatewayLoadBalancer")
    text = edit("    SecurityGroupIds: [endpoint-sg]\n", "", edit("SubnetIds: [consumer-a, consumer-b]", "SubnetIds: [consumer-a]", text))
    assert refused_at(text, "vpc_endpoints.vpce.ServiceName") == "endpoint service svc is of type Interface, not GatewayLoadBalancer"


def test_interface_endpoint_to_a_gateway_load_balancer_service_is_refused():
    text = edit("VpcEndpointType: GatewayLoadBalancer", "VpcEndpointType: Interface", GWLB)
    reason = refused_at(text, "vpc_endpoints.gwlbe-a.ServiceName")
    assert reason == "endpoint service inspection is of type GatewayLoadBalancer, not Interface"


def test_gateway_load_balancer_endpoint_takes_no_subnet_configurations():
    text = edit("    SubnetIds: [gwlbe-subnet-a]\n", "    SubnetIds: [gwlbe-subnet-a]\n"
                "    SubnetConfigurations: [{SubnetId: gwlbe-subnet-a, Ipv4: 10.1.1.50}]\n", GWLB)  # fmt: skip
    assert "no subnet configurations" in refused_at(text, "vpc_endpoints.gwlbe-a.SubnetConfigurations")


def test_missing_endpoint_type_suggests_interface():
    reason = refused_at(edit("    VpcEndpointType: Interface\n", ""), "vpc_endpoints.vpce.VpcEndpointType")
    assert "defaults to Gateway" in reason and "VpcEndpointType: Interface" in reason


def test_interface_endpoint_of_an_account_not_allowed_is_refused():
    text = edit('AllowedPrincipals: ["arn:aws:iam::111122223333:root"]', 'AllowedPrincipals: ["arn:aws:iam::999999999999:root"]')
    reason = refused_at(text, "vpc_endpoints.vpce.ServiceName")
    assert reason.startswith("account 111122223333 (VPC consumer's) is not an allowed principal of endpoint service svc")


def test_interface_endpoint_may_be_in_the_providers_own_account_and_vpc_when_allowed():
    text = PRIVATELINK + ("  own:\n    VpcEndpointType: Interface\n    ServiceName: svc\n    VpcId: provider\n"
                          "    SubnetIds: [provider-a]\n")  # fmt: skip
    text = edit('AllowedPrincipals: ["arn:aws:iam::111122223333:root"]', 'AllowedPrincipals: ["*"]', text)
    endpoint = load(text).vpc_endpoints["own"]
    assert (endpoint.account, endpoint.security_groups) == ("444455556666", ("provider-default",))


def test_routes_cannot_target_an_interface_endpoint():
    text = PRIVATELINK + "route_tables:\n  r:\n    VpcId: consumer\n    Routes:\n      - {DestinationCidrBlock: 0.0.0.0/0, VpcEndpointId: vpce}\n"
    reason = refused_at(text, "route_tables.r.Routes[0].VpcEndpointId")
    assert reason == "VPC endpoint vpce is Interface; routes take GatewayLoadBalancer endpoints"


# -- acceptance


def test_interface_endpoint_waits_for_acceptance_by_default_and_is_available_when_not_required():
    assert LAB.vpc_endpoints["vpce"].state == "pendingAcceptance"
    text = edit("    NetworkLoadBalancerArns: [nlb]\n", "    NetworkLoadBalancerArns: [nlb]\n    AcceptanceRequired: false\n")
    assert load(text).vpc_endpoints["vpce"].state == "available"


def test_provider_accepts_and_rejects_interface_endpoints():
    accepted = accept_vpc_endpoint_connections(LAB, LAB.vpc_endpoints["vpce"].id)
    assert accepted.vpc_endpoints["vpce"].state == "available"
    rejected = reject_vpc_endpoint_connections(accepted, "vpce")
    assert rejected.vpc_endpoints["vpce"].state == "rejected"
    with pytest.raises(ChangeError) as info:
        accept_vpc_endpoint_connections(rejected, "vpce")
    assert info.value.code == "InvalidState"


# -- Route 53 aliases to an interface endpoint


def zone(dns_name: str, text: str = PRIVATELINK) -> str:
    return text + ("hosted_zones:\n  z:\n    Name: example.local\n    VPCs: [consumer]\n    RecordSets:\n"
                   f"      - {{Name: web.example.local, Type: A, AliasTarget: {{DNSName: {dns_name}}}}}\n")  # fmt: skip


def alias(dns_name: str, text: str = PRIVATELINK):
    (record,) = load(zone(dns_name, text)).hosted_zones["z"].records
    return record


def test_alias_to_the_regional_name_answers_every_eni():
    regional = LAB.vpc_endpoints["vpce"].dns_entries[0]
    record = alias(regional)
    assert (record.values, record.ttl, record.alias_target) == (("10.0.1.5", "10.0.2.4"), 60, regional)


def test_alias_to_a_zonal_name_answers_that_azs_eni():
    assert alias(LAB.vpc_endpoints["vpce"].dns_entries[2]).values == ("10.0.2.4",)


def test_alias_by_the_endpoints_lab_name_means_its_regional_name():
    record = alias("vpce")
    assert (record.alias_target, record.values) == (LAB.vpc_endpoints["vpce"].dns_entries[0], ("10.0.1.5", "10.0.2.4"))


def test_lab_name_is_case_insensitive_like_dns():
    text = PRIVATELINK.replace("vpce:\n    VpcEndpointType", "Provider-Endpoint:\n    VpcEndpointType")
    assert alias("provider-endpoint", text).alias_target.startswith("vpce-0")


def test_a_record_in_a_zone_wins_over_a_lab_name():
    text = zone("vpce") + "  z2:\n    Name: vpce\n    VPCs: [consumer]\n    RecordSets:\n      - {Name: vpce, Type: A, ResourceRecords: [10.9.9.9]}\n"
    (record,) = load(text).hosted_zones["z"].records
    assert (record.values, record.alias_target) == (("10.9.9.9",), "vpce")


def test_alias_to_a_gateway_load_balancer_endpoint_or_its_load_balancer_by_lab_name_is_refused():
    gwlb = edit("  app: {CidrBlock: 10.1.0.0/16, Account: \"222233334444\"}", "  app: {CidrBlock: 10.1.0.0/16}", GWLB)
    gwlb = edit('["arn:aws:iam::222233334444:root"]', '["*"]', gwlb)
    text = gwlb + "hosted_zones:\n  z:\n    Name: example.local\n    VPCs: [app]\n    RecordSets:\n      - {Name: a.example.local, Type: A, AliasTarget: {DNSName: %s}}\n"
    reason = refused_at(text % "gwlbe-a", "hosted_zones.z.RecordSets[0].AliasTarget.DNSName")
    assert reason.startswith("gwlbe-a is a Gateway Load Balancer endpoint, which has no DNS name or addresses to alias")
    reason = refused_at(text % "gwlb", "hosted_zones.z.RecordSets[0].AliasTarget.DNSName")
    assert "is Gateway Load Balancer gwlb's name" in reason and "no addresses" in reason


# -- status


def test_status_shows_nlb_nodes_listeners_and_interface_endpoints():
    from vpclab.daemon.status import lab_status

    status = lab_status(LAB)
    (lb,) = status["load_balancers"]
    assert (lb["type"], lb["scheme"], lb["dns_name"]) == ("network", "internal", LAB.load_balancers["nlb"].dns_name)
    node = lb["nodes"][1]
    assert (node["az"], node["subnet"], node["private_ip"], node["public_ip"]) == ("us-east-1b", "provider-b", "10.0.2.5", None)
    assert node["zonal_dns_name"] == LAB.load_balancers["nlb"].zonal_dns_name("us-east-1b")
    assert node["eni_id"] == LAB.load_balancers["nlb"].nodes[1].eni_id
    assert [(li["name"], li["protocol"], li["port"], li["target_group"]) for li in lb["listeners"]] == [("http", "TCP", 80, "web")]
    (group,) = status["target_groups"]
    assert (group["protocol"], group["port"], group["attributes"]["preserve_client_ip.enabled"]) == ("TCP", 80, "true")
    (endpoint,) = status["vpc_endpoints"]
    vpce = LAB.vpc_endpoints["vpce"]
    assert (endpoint["type"], endpoint["state"]) == ("Interface", "pendingAcceptance")
    assert endpoint["security_groups"] == [LAB.security_groups["endpoint-sg"].id]
    assert endpoint["dns_names"] == list(vpce.dns_entries)
    assert endpoint["dns_entries"] == [
        {"dns_name": vpce.dns_entries[0], "az": None},
        {"dns_name": vpce.dns_entries[1], "az": "us-east-1a"},
        {"dns_name": vpce.dns_entries[2], "az": "us-east-1b"},
    ]
    assert endpoint["enis"][0] == {"id": vpce.enis[0].id, "subnet": "consumer-a", "az": "us-east-1a", "ip": "10.0.1.5"}


def test_status_of_a_gwlb_lab_keeps_its_shape():
    from vpclab.daemon.status import lab_status

    status = lab_status(load_lab_text(GWLB, "lab.yaml", name="t"))
    (lb,) = status["load_balancers"]
    assert lb["nodes"][0]["zonal_dns_name"] is None
    assert [(li["protocol"], li["port"]) for li in lb["listeners"]] == [(None, None)]
    (endpoint,) = status["vpc_endpoints"]
    assert (endpoint["dns_names"], endpoint["dns_entries"], endpoint["security_groups"]) == ([], [], [])
