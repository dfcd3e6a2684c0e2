"""Loading Gateway Load Balancer labs: IDs, ARNs, addresses, attributes, endpoints and routes."""
from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network

from vpclab.model import Lab, Route, load_lab_text
from vpclab.model.health_check import HealthCheckConfig

# Provider VPC `sec` (two AZs, the GWLB and two appliances) and consumer VPC `app`,
# in another account, with one GWLB endpoint.
GWLB = """
lab: {account: "111122223333"}
vpcs:
  sec: {CidrBlock: 10.0.0.0/16}
  app: {CidrBlock: 10.1.0.0/16, Account: "222233334444"}
subnets:
  sec-a: {VpcId: sec, CidrBlock: 10.0.21.0/24, AvailabilityZone: a}
  sec-b: {VpcId: sec, CidrBlock: 10.0.22.0/24, AvailabilityZone: b}
  gwlbe-subnet-a: {VpcId: app, CidrBlock: 10.1.1.0/24, AvailabilityZone: a}
  web-a: {VpcId: app, CidrBlock: 10.1.11.0/24, AvailabilityZone: a}
internet_gateways:
  app-igw: {VpcId: app}
instances:
  appliance-1: {SubnetId: sec-a, Role: appliance}
  appliance-2: {SubnetId: sec-b, Role: appliance}
  web-1: {SubnetId: web-a}
load_balancers:
  gwlb:
    Type: gateway
    Subnets: [sec-a, sec-b]
target_groups:
  appliances:
    Protocol: GENEVE
    Port: 6081
    VpcId: sec
    Targets: [appliance-1, appliance-2]
listeners:
  gwlb-listener:
    LoadBalancerArn: gwlb
    DefaultActions: [{Type: forward, TargetGroupArn: appliances}]
vpc_endpoint_services:
  inspection:
    GatewayLoadBalancerArns: [gwlb]
    AllowedPrincipals: ["arn:aws:iam::222233334444:root"]
vpc_endpoints:
  gwlbe-a:
    VpcEndpointType: GatewayLoadBalancer
    ServiceName: inspection
    VpcId: app
    SubnetIds: [gwlbe-subnet-a]
"""


def load(text: str = GWLB) -> Lab:
    return load_lab_text(text, "lab.yaml", name="t")


def edit(old: str, new: str, text: str = GWLB) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# -- load balancer


def test_gateway_load_balancer_has_one_internal_node_per_subnet():
    lb = load().load_balancers["gwlb"]
    assert (lb.type, lb.scheme, lb.vpc) == ("gateway", "internal", "sec")
    assert [(n.subnet, n.az) for n in lb.nodes] == [("sec-a", "us-east-1a"), ("sec-b", "us-east-1b")]
    assert lb.node_in("us-east-1b").subnet == "sec-b" and lb.node_in("us-east-1c") is None
    assert all(re.fullmatch(r"eni-0[0-9a-f]{16}", n.eni_id) for n in lb.nodes)
    assert all(n.public_ip is None for n in lb.nodes)


def test_load_balancer_arn_and_dns_name_are_aws_shaped_and_stable():
    lb = load().load_balancers["gwlb"]
    match = re.fullmatch(
        r"arn:aws:elasticloadbalancing:us-east-1:111122223333:loadbalancer/gwy/gwlb/([0-9a-f]{16})", lb.arn
    )
    assert match
    assert lb.dns_name == f"gwlb-{match[1]}.elb.us-east-1.amazonaws.com"
    assert load().load_balancers["gwlb"].arn == lb.arn
    assert load_lab_text(GWLB, "other.yaml", name="other").load_balancers["gwlb"].arn == lb.arn


def test_target_group_and_listener_arns():
    lab = load()
    lb_hex = lab.load_balancers["gwlb"].arn.rsplit("/", 1)[1]
    assert re.fullmatch(
        r"arn:aws:elasticloadbalancing:us-east-1:111122223333:targetgroup/appliances/[0-9a-f]{16}",
        lab.target_groups["appliances"].arn,
    )
    assert re.fullmatch(
        rf"arn:aws:elasticloadbalancing:us-east-1:111122223333:listener/gwy/gwlb/{lb_hex}/[0-9a-f]{{16}}",
        lab.listeners["gwlb-listener"].arn,
    )


def test_node_addresses_come_from_the_subnet_pool_without_collisions():
    lab = load()
    lb = lab.load_balancers["gwlb"]
    ips = [n.private_ip for n in lb.nodes] + [i.private_ip for i in lab.instances.values()]
    assert len(set(ips)) == len(ips)
    # instances come first in the file, so they take the first free addresses
    assert lab.instances["appliance-1"].private_ip == IPv4Address("10.0.21.4")
    assert lb.nodes[0].private_ip == IPv4Address("10.0.21.5")


def test_subnet_mappings_fix_node_addresses():
    text = edit("    Subnets: [sec-a, sec-b]\n", "    SubnetMappings:\n"
                "      - {SubnetId: sec-a, PrivateIPv4Address: 10.0.21.4}\n      - {SubnetId: sec-b}\n")  # fmt: skip
    lab = load(text)
    assert lab.load_balancers["gwlb"].nodes[0].private_ip == IPv4Address("10.0.21.4")
    assert lab.instances["appliance-1"].private_ip == IPv4Address("10.0.21.5")  # explicit addresses go first


def test_load_balancer_attributes_are_all_there_as_strings_with_aws_defaults():
    assert load().load_balancers["gwlb"].attributes == {
        "deletion_protection.enabled": "false",
        "load_balancing.cross_zone.enabled": "false",
    }


def test_attributes_may_be_given_as_cloudformation_key_value_list():
    text = edit("    Subnets: [sec-a, sec-b]\n", "    Subnets: [sec-a, sec-b]\n    LoadBalancerAttributes:\n"
                "      - {Key: load_balancing.cross_zone.enabled, Value: 'true'}\n")  # fmt: skip
    assert load(text).load_balancers["gwlb"].attributes["load_balancing.cross_zone.enabled"] == "true"


def test_explicit_gateway_scheme_internal_is_accepted():
    text = edit("    Type: gateway\n", "    Type: gateway\n    Scheme: internal\n")
    assert load(text).load_balancers["gwlb"].scheme == "internal"


# -- target groups


def test_target_group_defaults():
    group = load().target_groups["appliances"]
    assert (group.protocol, group.port, group.vpc, group.target_type) == ("GENEVE", 6081, "sec", "instance")
    assert group.health_check == {}
    assert group.attributes == {
        "deregistration_delay.timeout_seconds": "300",
        "stickiness.enabled": "false",
        "stickiness.type": "source_ip_dest_ip_proto",
        "target_failover.on_deregistration": "no_rebalance",
        "target_failover.on_unhealthy": "no_rebalance",
        "vpclab.drop_stale_cookie.enabled": "true",
    }
    config = group.health_check_config()
    assert (config.protocol, config.port, config.interval_seconds, config.healthy_threshold) == ("TCP", 80, 10, 5)


def test_instance_targets_carry_instance_id_ip_port_and_az():
    lab = load()
    first, second = lab.target_groups["appliances"].targets
    appliance = lab.instances["appliance-1"]
    assert (first.id, first.ip, first.port, first.az, first.instance) == (
        appliance.id, appliance.private_ip, 6081, "us-east-1a", "appliance-1"
    )
    assert second.az == "us-east-1b"


def test_instance_target_may_be_named_by_id_or_as_a_mapping():
    lab = load()
    instance_id = lab.instances["appliance-2"].id
    text = edit("    Targets: [appliance-1, appliance-2]\n", f"    Targets: [{{Id: appliance-1, Port: 6081}}, {instance_id}]\n")
    assert [t.instance for t in load(text).target_groups["appliances"].targets] == ["appliance-1", "appliance-2"]


def test_ip_targets_take_their_subnets_az_and_name_the_instance_behind_them():
    text = edit("    Targets: [appliance-1, appliance-2]\n",
                "    TargetType: ip\n    Targets: [{Id: 10.0.21.4}, 10.0.22.99]\n")  # fmt: skip
    targets = load(text).target_groups["appliances"].targets
    assert [(t.id, t.az, t.instance) for t in targets] == [
        ("10.0.21.4", "us-east-1a", "appliance-1"),
        ("10.0.22.99", "us-east-1b", None),
    ]


def test_health_check_keys_are_kept_normalised_and_validated():
    text = edit("    VpcId: sec\n", "    VpcId: sec\n    HealthCheckProtocol: http\n    HealthCheckPort: '8080'\n"
                "    HealthCheckIntervalSeconds: '5'\n    Matcher: {HttpCode: 200}\n")  # fmt: skip
    group = load(text).target_groups["appliances"]
    assert group.health_check == {
        "HealthCheckProtocol": "HTTP", "HealthCheckPort": 8080, "HealthCheckIntervalSeconds": 5,
        "Matcher": {"HttpCode": "200"},
    }  # fmt: skip
    assert group.health_check_config() == HealthCheckConfig.for_target_group(
        "gateway", "GENEVE", HealthCheckProtocol="HTTP", HealthCheckPort=8080, HealthCheckIntervalSeconds=5,
        Matcher={"HttpCode": "200"},
    )  # fmt: skip


def test_target_group_attributes_are_validated_and_stored_as_strings():
    text = edit("    VpcId: sec\n", "    VpcId: sec\n    TargetGroupAttributes:\n"
                "      deregistration_delay.timeout_seconds: 10\n      stickiness.enabled: true\n"
                "      stickiness.type: source_ip_dest_ip\n      target_failover.on_deregistration: rebalance\n"
                "      target_failover.on_unhealthy: rebalance\n      vpclab.drop_stale_cookie.enabled: 'false'\n")  # fmt: skip
    attributes = load(text).target_groups["appliances"].attributes
    assert attributes["deregistration_delay.timeout_seconds"] == "10"
    assert attributes["stickiness.enabled"] == "true"
    assert attributes["stickiness.type"] == "source_ip_dest_ip"
    assert attributes["target_failover.on_unhealthy"] == "rebalance"
    assert attributes["vpclab.drop_stale_cookie.enabled"] == "false"


def test_target_group_without_listener_is_allowed():
    text = edit("target_groups:\n", "target_groups:\n  spare: {Protocol: GENEVE, Port: 6081, VpcId: sec}\n")
    assert load(text).target_groups["spare"].targets == ()


# -- listener


def test_listener_defaults():
    listener = load().listeners["gwlb-listener"]
    assert (listener.load_balancer, listener.target_group, listener.protocol, listener.port) == (
        "gwlb", "appliances", None, None
    )
    assert listener.attributes == {"tcp.idle_timeout.seconds": "350",
                                   "send_tcp_reset.on_idle_timeout.enabled": "false"}
    assert load().listener_of("gwlb") == listener


def test_listener_may_name_load_balancer_and_target_group_by_arn():
    lab = load()
    text = edit("    LoadBalancerArn: gwlb\n", f"    LoadBalancerArn: {lab.load_balancers['gwlb'].arn}\n")
    text = edit("TargetGroupArn: appliances}", f"TargetGroupArn: '{lab.target_groups['appliances'].arn}'}}", text)
    assert load(text).listeners["gwlb-listener"].target_group == "appliances"


def test_listener_idle_timeout():
    text = edit("    LoadBalancerArn: gwlb\n", "    LoadBalancerArn: gwlb\n    ListenerAttributes:\n"
                "      tcp.idle_timeout.seconds: 6000\n")  # fmt: skip
    assert load(text).listeners["gwlb-listener"].attributes["tcp.idle_timeout.seconds"] == "6000"


# -- endpoint service and endpoints


def test_endpoint_service_id_name_type_and_account():
    lab = load()
    service = lab.vpc_endpoint_services["inspection"]
    assert re.fullmatch(r"vpce-svc-0[0-9a-f]{16}", service.id)
    assert service.service_name == f"com.amazonaws.vpce.us-east-1.{service.id}"
    assert (service.type, service.load_balancers, service.account) == ("GatewayLoadBalancer", ("gwlb",), "111122223333")
    assert service.acceptance_required is True  # AWS's default
    assert lab.endpoint_service_of("gwlb") == service


def test_gwlb_endpoint_id_fits_geneve_option():
    endpoint = load().vpc_endpoints["gwlbe-a"]
    assert re.fullmatch(r"vpce-0[0-9a-f]{16}", endpoint.id)
    assert len(endpoint.id) == len("vpce-") + 17
    value = int(endpoint.id[5:], 16)
    assert value < 2**64
    assert value.to_bytes(8, "big").hex() == endpoint.id[6:]  # GENEVE option 1, big-endian


def test_acceptance_required_endpoint_starts_pending():
    assert load().vpc_endpoints["gwlbe-a"].state == "pendingAcceptance"


def test_endpoint_of_auto_accepting_service_starts_available():
    text = edit("    GatewayLoadBalancerArns: [gwlb]\n", "    GatewayLoadBalancerArns: [gwlb]\n    AcceptanceRequired: false\n")
    assert load(text).vpc_endpoints["gwlbe-a"].state == "available"


def test_endpoint_account_is_its_vpcs_and_its_eni_is_in_its_subnet():
    endpoint = load().vpc_endpoints["gwlbe-a"]
    assert (endpoint.type, endpoint.vpc, endpoint.service, endpoint.account) == (
        "GatewayLoadBalancer", "app", "inspection", "222233334444"
    )
    (eni,) = endpoint.enis
    assert (eni.subnet, eni.az, eni.ip) == ("gwlbe-subnet-a", "us-east-1a", IPv4Address("10.1.1.4"))
    assert re.fullmatch(r"eni-0[0-9a-f]{16}", eni.id)


def test_endpoint_binds_to_the_services_load_balancer_in_its_az():
    assert load().load_balancer_of_endpoint("gwlbe-a").name == "gwlb"


def test_endpoint_may_name_its_service_by_service_name():
    service_name = load().vpc_endpoint_services["inspection"].service_name
    text = edit("    ServiceName: inspection\n", f"    ServiceName: {service_name}\n")
    assert load(text).vpc_endpoints["gwlbe-a"].service == "inspection"


def test_endpoint_eni_and_instances_share_the_subnet_pool():
    text = edit("  web-1: {SubnetId: web-a}\n", "  web-1: {SubnetId: web-a}\n  web-2: {SubnetId: gwlbe-subnet-a}\n")
    lab = load(text)
    assert lab.instances["web-2"].private_ip == IPv4Address("10.1.1.4")  # instances come first in the file
    assert lab.vpc_endpoints["gwlbe-a"].enis[0].ip == IPv4Address("10.1.1.5")


def test_star_principal_allows_every_account():
    text = edit('    AllowedPrincipals: ["arn:aws:iam::222233334444:root"]\n', '    AllowedPrincipals: ["*"]\n')
    assert load(text).vpc_endpoints["gwlbe-a"].account == "222233334444"


def test_role_and_user_principals_count_as_their_account():
    for principal in ("arn:aws:iam::222233334444:role/consumer", "arn:aws:iam::222233334444:user/alice"):
        text = edit("arn:aws:iam::222233334444:root", principal)
        assert "gwlbe-a" in load(text).vpc_endpoints


# -- routes


ROUTES = """route_tables:
  edge:
    VpcId: app
    EdgeAssociations: [app-igw]
    Routes:
      - {DestinationCidrBlock: 10.1.11.0/24, VpcEndpointId: gwlbe-a}
  web:
    VpcId: app
    SubnetAssociations: [web-a]
    Routes:
      - {DestinationCidrBlock: 0.0.0.0/0, VpcEndpointId: gwlbe-a}
  endpoints:
    VpcId: app
    SubnetAssociations: [gwlbe-subnet-a]
    Routes:
      - {DestinationCidrBlock: 0.0.0.0/0, GatewayId: app-igw}
"""


def test_route_to_gwlb_endpoint_in_edge_table_is_allowed():
    lab = load(GWLB + ROUTES)
    edge = lab.route_tables["edge"]
    assert edge.edge_associations == ("app-igw",)
    assert edge.routes[-1] == Route(IPv4Network("10.1.11.0/24"), "vpce", "gwlbe-a")


def test_default_route_to_gwlb_endpoint_by_name_or_id():
    lab = load(GWLB + ROUTES)
    assert lab.route_table_of_subnet("web-a").routes[-1] == Route(IPv4Network("0.0.0.0/0"), "vpce", "gwlbe-a")
    endpoint_id = lab.vpc_endpoints["gwlbe-a"].id
    lab = load(GWLB + ROUTES.replace("0.0.0.0/0, VpcEndpointId: gwlbe-a", f"0.0.0.0/0, VpcEndpointId: {endpoint_id}"))
    assert lab.route_table_of_subnet("web-a").routes[-1].target == "gwlbe-a"


def test_middlebox_route_to_a_subnet_through_a_gwlb_endpoint_is_allowed():
    text = GWLB + ROUTES + "  web-2:\n    VpcId: app\n    Routes:\n      - {DestinationCidrBlock: 10.1.11.0/24, VpcEndpointId: gwlbe-a}\n"
    assert load(text).route_tables["web-2"].routes[-1].target_kind == "vpce"


def test_edge_table_may_send_the_whole_vpc_to_a_gwlb_endpoint():
    text = GWLB + ROUTES.replace("10.1.11.0/24, VpcEndpointId: gwlbe-a}\n  web:", "10.1.0.0/16, VpcEndpointId: gwlbe-a}\n  web:")
    assert load(text).route_tables["edge"].routes == (Route(IPv4Network("10.1.0.0/16"), "vpce", "gwlbe-a"),)


# -- appliances


def test_appliance_role_defaults_to_no_default_services_and_no_config():
    appliance = load().instances["appliance-1"]
    assert (appliance.role, appliance.default_services, appliance.appliance, appliance.run) == (
        "appliance", False, None, ()
    )


def test_appliance_config_is_validated_and_kept():
    text = edit("  appliance-1: {SubnetId: sec-a, Role: appliance}\n",
                "  appliance-1:\n    SubnetId: sec-a\n    Role: appliance\n    Appliance:\n      inside: [10.0.0.0/8]\n"
                "      rules:\n        - {action: deny, direction: inbound, protocol: tcp, port: 22}\n")  # fmt: skip
    assert load(text).instances["appliance-1"].appliance == {
        "inside": ["10.0.0.0/8"],
        "rules": [{"action": "deny", "direction": "inbound", "protocol": "tcp", "port": 22}],
    }


def test_instance_fields_are_still_in_place():
    web = load().instances["web-1"]
    assert (web.role, web.default_services, web.hostname) == ("instance", True, "ip-10-1-11-4.ec2.internal")
