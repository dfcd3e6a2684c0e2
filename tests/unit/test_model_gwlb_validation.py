"""Bad Gateway Load Balancer labs are refused with one LabFileError naming the key and the reason."""
from __future__ import annotations

import pytest

from test_model_gwlb import GWLB, ROUTES, edit
from vpclab.model import LabFileError, load_lab_text


def refused(text: str) -> LabFileError:
    with pytest.raises(LabFileError) as info:
        load_lab_text(text, "lab.yaml", name="t")
    assert "\n" not in str(info.value)
    return info.value


def refused_at(text: str, key_path: str) -> str:
    e = refused(text)
    assert e.key_path == key_path, (e.key_path, e.reason)
    return e.reason


# -- load balancers


def test_missing_type_is_cloudformations_application_internet_facing_by_default():
    reason = refused_at(edit("    Type: gateway\n", ""), "load_balancers.gwlb.Scheme")
    assert "an internet-facing load balancer (the default Scheme" in reason


def test_a_gateway_listener_cannot_serve_an_application_load_balancer():
    text = edit("    Type: gateway\n", "    Type: application\n    Scheme: internal\n")
    reason = refused_at(text, "listeners.gwlb-listener.Protocol")
    assert reason.startswith("required key is missing: an Application Load Balancer listener has a Protocol")


def test_internet_facing_gateway_load_balancer_is_refused():
    text = edit("    Type: gateway\n", "    Type: gateway\n    Scheme: internet-facing\n")
    assert refused_at(text, "load_balancers.gwlb.Scheme") == "a Gateway Load Balancer is always internal"


def test_two_subnets_in_one_az_are_refused():
    text = edit("  sec-b: {VpcId: sec, CidrBlock: 10.0.22.0/24, AvailabilityZone: b}",
                "  sec-b: {VpcId: sec, CidrBlock: 10.0.22.0/24, AvailabilityZone: a}")  # fmt: skip
    reason = refused_at(text, "load_balancers.gwlb.Subnets[1]")
    assert "one subnet per AZ" in reason and "sec-a" in reason


def test_subnets_in_two_vpcs_are_refused():
    reason = refused_at(edit("Subnets: [sec-a, sec-b]", "Subnets: [sec-a, web-a]"), "load_balancers.gwlb.Subnets[1]")
    assert reason == "subnet web-a is in VPC app, not in VPC sec"


def test_load_balancer_needs_subnets():
    assert "needs Subnets" in refused_at(edit("    Subnets: [sec-a, sec-b]\n", ""), "load_balancers.gwlb.Subnets")
    assert "at least one" in refused_at(edit("Subnets: [sec-a, sec-b]", "Subnets: []"), "load_balancers.gwlb.Subnets")


def test_subnets_and_subnet_mappings_together_are_refused():
    text = edit("    Subnets: [sec-a, sec-b]\n", "    Subnets: [sec-a, sec-b]\n    SubnetMappings: [{SubnetId: sec-a}]\n")
    assert "not both" in refused_at(text, "load_balancers.gwlb.SubnetMappings")


def test_subnet_mapping_address_must_be_free_and_not_reserved():
    text = edit("    Subnets: [sec-a, sec-b]\n", "    SubnetMappings: [{SubnetId: sec-a, PrivateIPv4Address: 10.0.21.1}]\n")
    assert "reserved" in refused_at(text, "load_balancers.gwlb.SubnetMappings[0].PrivateIPv4Address")
    text = edit("  appliance-1: {SubnetId: sec-a, Role: appliance}",
                "  appliance-1: {SubnetId: sec-a, Role: appliance, PrivateIpAddress: 10.0.21.30}")  # fmt: skip
    text = edit("    Subnets: [sec-a, sec-b]\n", "    SubnetMappings: [{SubnetId: sec-a, PrivateIPv4Address: 10.0.21.30}]\n", text)
    reason = refused_at(text, "load_balancers.gwlb.SubnetMappings[0].PrivateIPv4Address")
    assert reason == "10.0.21.30 is already used by instance appliance-1"


def test_elastic_ips_in_subnet_mappings_are_not_supported_yet():
    text = edit("    Subnets: [sec-a, sec-b]\n", "    SubnetMappings: [{SubnetId: sec-a, AllocationId: eipalloc-1}]\n")
    assert "not supported yet" in refused_at(text, "load_balancers.gwlb.SubnetMappings[0].AllocationId")


def test_load_balancer_name_must_suit_an_arn_and_dns_name():
    text = GWLB.replace("gwlb", "gwlb_1")
    assert "1-32 letters, digits or '-'" in refused_at(text, "load_balancers.gwlb_1")


def test_gateway_load_balancer_without_listener_is_refused():
    text = GWLB.split("listeners:")[0] + "vpc_endpoint_services:" + GWLB.split("vpc_endpoint_services:")[1]
    reason = refused_at(text, "load_balancers.gwlb")
    assert reason.startswith("a Gateway Load Balancer needs exactly one listener, and gwlb has none")


def test_second_listener_on_a_gateway_load_balancer_is_refused():
    text = edit("listeners:\n", "listeners:\n  first:\n    LoadBalancerArn: gwlb\n"
                "    DefaultActions: [{Type: forward, TargetGroupArn: appliances}]\n")  # fmt: skip
    reason = refused_at(text, "listeners.gwlb-listener.LoadBalancerArn")
    assert reason == "load balancer gwlb already has listener first; a Gateway Load Balancer has exactly one"


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("load_balancing.cross_zone.enabled", "maybe", "expected true or false, got 'maybe'"),
        ("load_balancing.crosszone.enabled", "true",
         "unknown load balancer attribute 'load_balancing.crosszone.enabled'; "
         "did you mean 'load_balancing.cross_zone.enabled'?"),
    ],
)  # fmt: skip
def test_load_balancer_attributes_are_checked(key, value, reason):
    text = edit("    Subnets: [sec-a, sec-b]\n", f"    Subnets: [sec-a, sec-b]\n    LoadBalancerAttributes:\n      {key}: {value}\n")
    assert refused_at(text, f"load_balancers.gwlb.LoadBalancerAttributes.{key}") == reason


def test_attribute_list_pins_errors_to_the_value():
    text = edit("    Subnets: [sec-a, sec-b]\n", "    Subnets: [sec-a, sec-b]\n    LoadBalancerAttributes:\n"
                "      - {Key: load_balancing.cross_zone.enabled, Value: 'yes'}\n")  # fmt: skip
    refused_at(text, "load_balancers.gwlb.LoadBalancerAttributes[0].Value")


# -- target groups


def with_group(lines: str) -> str:
    return edit("    VpcId: sec\n    Targets:", f"    VpcId: sec\n{lines}    Targets:")


def test_gwlb_target_group_is_geneve_on_6081():
    assert "not supported yet" in refused_at(edit("Protocol: GENEVE", "Protocol: TLS"), "target_groups.appliances.Protocol")
    assert "did you mean 'GENEVE'" in refused_at(edit("Protocol: GENEVE", "Protocol: GENEV"), "target_groups.appliances.Protocol")
    reason = refused_at(edit("Port: 6081", "Port: 6082"), "target_groups.appliances.Port")
    assert reason == "a GENEVE target group's port is 6081, got 6082"


def test_target_of_another_vpc_is_refused():
    reason = refused_at(edit("Targets: [appliance-1, appliance-2]", "Targets: [appliance-1, web-1]"),
                        "target_groups.appliances.Targets[1]")  # fmt: skip
    assert reason == "instance web-1 is in VPC app, not in VPC sec (the target group's)"


def test_unknown_instance_target_is_refused_with_a_suggestion():
    reason = refused_at(edit("[appliance-1, appliance-2]", "[appliance-1, appliance-3]"), "target_groups.appliances.Targets[1]")
    assert reason.startswith("unknown instance 'appliance-3'; did you mean")


def test_ip_target_must_be_in_a_subnet_of_the_groups_vpc_and_not_reserved():
    base = "    TargetType: ip\n    Targets: [{Id: %s}]\n"
    text = edit("    Targets: [appliance-1, appliance-2]\n", base % "10.1.11.20")
    assert refused_at(text, "target_groups.appliances.Targets[0].Id") == (
        "10.1.11.20 is not in a subnet of VPC sec (the target group's)"
    )
    text = edit("    Targets: [appliance-1, appliance-2]\n", base % "10.0.21.1")
    assert "reserved" in refused_at(text, "target_groups.appliances.Targets[0].Id")


def test_instance_target_given_to_an_ip_group_is_refused():
    text = edit("    Targets: [appliance-1, appliance-2]\n", "    TargetType: ip\n    Targets: [appliance-1]\n")
    assert "takes IPv4 addresses" in refused_at(text, "target_groups.appliances.Targets[0]")


def test_same_target_twice_is_refused():
    text = edit("[appliance-1, appliance-2]", "[appliance-1, appliance-1]")
    assert "already Targets[0]" in refused_at(text, "target_groups.appliances.Targets[1]")


def test_geneve_target_on_another_port_is_refused():
    text = edit("[appliance-1, appliance-2]", "[{Id: appliance-1, Port: 80}]")
    refused_at(text, "target_groups.appliances.Targets[0].Port")


def test_target_group_of_another_vpc_than_the_load_balancer_is_refused():
    text = edit("    VpcId: sec\n    Targets: [appliance-1, appliance-2]\n", "    VpcId: app\n")
    reason = refused_at(text, "listeners.gwlb-listener.DefaultActions[0].TargetGroupArn")
    assert reason == "target group appliances is in VPC app, but load balancer gwlb is in VPC sec"


@pytest.mark.parametrize(
    ("lines", "key", "fragment"),
    [
        ("    HealthCheckIntervalSeconds: 3\n", "HealthCheckIntervalSeconds", "5-300"),
        ("    HealthyThresholdCount: 11\n", "HealthyThresholdCount", "2-10"),
        ("    HealthCheckProtocol: UDP\n", "HealthCheckProtocol", "HTTP, HTTPS, TCP"),
        ("    HealthCheckPort: traffic-port\n", "HealthCheckPort", "1-65535"),
        ("    Matcher: {HttpCode: 200}\n", "Matcher", "TCP protocol"),
        ("    HealthCheckIntervalSeconds: 5\n    HealthCheckTimeoutSeconds: 6\n", "HealthCheckIntervalSeconds", ">="),
    ],
)
def test_health_check_is_validated_with_health_check_config(lines, key, fragment):
    assert fragment in refused_at(with_group(lines), f"target_groups.appliances.{key}")


def test_failover_attributes_must_be_equal():
    text = with_group("    TargetGroupAttributes:\n      target_failover.on_deregistration: rebalance\n")
    reason = refused_at(text, "target_groups.appliances.TargetGroupAttributes.target_failover.on_deregistration")
    assert reason.startswith("target_failover.on_deregistration (rebalance) and target_failover.on_unhealthy "
                             "(no_rebalance) must be equal")  # fmt: skip
    text = with_group("    TargetGroupAttributes:\n      target_failover.on_deregistration: rebalance\n"
                      "      target_failover.on_unhealthy: no_rebalance\n")  # fmt: skip
    refused_at(text, "target_groups.appliances.TargetGroupAttributes.target_failover.on_unhealthy")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("deregistration_delay.timeout_seconds", 3601, "3601 is outside 0-3600"),
        ("deregistration_delay.timeout_seconds", -1, "-1 is outside 0-3600"),
        ("stickiness.type", "source_ip", "did you mean"),
        ("stickiness.enabled", "sure", "expected true or false"),
        ("target_failover.on_unhealthy", "rebalanced", "did you mean 'rebalance'"),
        ("vpclab.drop_stale_cookie.enabled", "[]", "expected a value"),
        ("deregistration_delay", 10, "did you mean 'deregistration_delay.timeout_seconds'"),
        ("load_balancing.cross_zone.enabled", "true", "is a load balancer attribute"),
    ],
)
def test_target_group_attribute_values_are_checked(key, value, fragment):
    text = with_group(f"    TargetGroupAttributes:\n      {key}: {value}\n")
    assert fragment in refused_at(text, f"target_groups.appliances.TargetGroupAttributes.{key}")


def test_target_group_used_by_two_listeners_is_refused():
    text = edit("  gwlb:\n    Type: gateway\n    Subnets: [sec-a, sec-b]\n",
                "  gwlb:\n    Type: gateway\n    Subnets: [sec-a, sec-b]\n  gwlb2:\n    Type: gateway\n    Subnets: [sec-b]\n")
    text = edit("listeners:\n", "listeners:\n  second:\n    LoadBalancerArn: gwlb2\n"
                "    DefaultActions: [{Type: forward, TargetGroupArn: appliances}]\n", text)  # fmt: skip
    reason = refused_at(text, "listeners.gwlb-listener.DefaultActions[0].TargetGroupArn")
    assert reason.startswith("target group appliances is already used by listener second")


# -- listeners


def test_gateway_listener_has_no_protocol_or_port():
    text = edit("    LoadBalancerArn: gwlb\n", "    LoadBalancerArn: gwlb\n    Port: 80\n")
    assert "no Protocol or Port" in refused_at(text, "listeners.gwlb-listener.Port")


def test_gateway_listener_only_forwards():
    text = edit("{Type: forward, TargetGroupArn: appliances}", "{Type: redirect}")
    assert "can only forward" in refused_at(text, "listeners.gwlb-listener.DefaultActions[0].Type")
    text = edit("[{Type: forward, TargetGroupArn: appliances}]", "[]")
    assert "exactly one default action" in refused_at(text, "listeners.gwlb-listener.DefaultActions")


def test_listener_idle_timeout_range():
    text = edit("    LoadBalancerArn: gwlb\n", "    LoadBalancerArn: gwlb\n    ListenerAttributes: {tcp.idle_timeout.seconds: 59}\n")
    assert refused_at(text, "listeners.gwlb-listener.ListenerAttributes.tcp.idle_timeout.seconds") == "59 is outside 60-6000"


def test_listener_of_unknown_load_balancer_is_refused_with_suggestion():
    text = edit("    LoadBalancerArn: gwlb\n", "    LoadBalancerArn: gwlbb\n")
    assert "did you mean 'gwlb'" in refused_at(text, "listeners.gwlb-listener.LoadBalancerArn")


def test_listener_naming_a_target_group_where_a_load_balancer_belongs_says_so():
    text = edit("    LoadBalancerArn: gwlb\n", "    LoadBalancerArn: appliances\n")
    assert refused_at(text, "listeners.gwlb-listener.LoadBalancerArn") == "'appliances' is a target group, not a load balancer"


# -- endpoint services and endpoints


def test_endpoint_from_account_not_allowed_is_refused():
    text = edit('    AllowedPrincipals: ["arn:aws:iam::222233334444:root"]\n', "")
    reason = refused_at(text, "vpc_endpoints.gwlbe-a.ServiceName")
    assert reason.startswith("account 222233334444 (VPC app's) is not an allowed principal of endpoint service inspection")


def test_principals_of_another_account_do_not_allow_an_endpoint():
    text = edit("arn:aws:iam::222233334444:root", "arn:aws:iam::999999999999:role/other")
    refused_at(text, "vpc_endpoints.gwlbe-a.ServiceName")


@pytest.mark.parametrize("principal", ["222233334444", "arn:aws:iam::2222:root", "arn:aws:iam::222233334444:group/x",
                                       "arn:aws:iam::222233334444:role/path/name"])  # fmt: skip
def test_malformed_principal_is_refused(principal):
    text = edit("arn:aws:iam::222233334444:root", principal)
    refused_at(text, "vpc_endpoint_services.inspection.AllowedPrincipals[0]")


def test_endpoint_service_of_both_gateway_and_network_load_balancers_is_refused():
    text = edit("    GatewayLoadBalancerArns: [gwlb]\n", "    GatewayLoadBalancerArns: [gwlb]\n    NetworkLoadBalancerArns: [x]\n")
    reason = refused_at(text, "vpc_endpoint_services.inspection.NetworkLoadBalancerArns")
    assert reason.startswith("give GatewayLoadBalancerArns or NetworkLoadBalancerArns, not both")


def test_gateway_load_balancer_in_network_load_balancer_arns_is_refused():
    text = edit("    GatewayLoadBalancerArns: [gwlb]\n", "    NetworkLoadBalancerArns: [gwlb]\n")
    reason = refused_at(text, "vpc_endpoint_services.inspection.NetworkLoadBalancerArns[0]")
    assert reason == "load balancer gwlb is a gateway load balancer, not a network one"


def test_load_balancer_serves_one_endpoint_service():
    text = edit("vpc_endpoints:\n", "  second: {GatewayLoadBalancerArns: [gwlb]}\nvpc_endpoints:\n")
    reason = refused_at(text, "vpc_endpoint_services.second.GatewayLoadBalancerArns[0]")
    assert reason == "load balancer gwlb already serves endpoint service inspection"


def test_endpoint_in_an_az_without_a_gwlb_node_is_refused():
    text = edit("gwlbe-subnet-a: {VpcId: app, CidrBlock: 10.1.1.0/24, AvailabilityZone: a}",
                "gwlbe-subnet-a: {VpcId: app, CidrBlock: 10.1.1.0/24, AvailabilityZone: c}")  # fmt: skip
    reason = refused_at(text, "vpc_endpoints.gwlbe-a.SubnetIds[0]")
    assert reason == (
        "subnet gwlbe-subnet-a is in us-east-1c, but endpoint service inspection is only in "
        "us-east-1a, us-east-1b (where its load balancers have nodes)"
    )


def test_gwlb_endpoint_has_exactly_one_subnet():
    text = edit("SubnetIds: [gwlbe-subnet-a]", "SubnetIds: [gwlbe-subnet-a, web-a]")
    assert "exactly one subnet" in refused_at(text, "vpc_endpoints.gwlbe-a.SubnetIds")


def test_endpoint_subnet_must_be_in_its_vpc():
    text = edit("SubnetIds: [gwlbe-subnet-a]", "SubnetIds: [sec-a]")
    assert refused_at(text, "vpc_endpoints.gwlbe-a.SubnetIds[0]") == "subnet sec-a is in VPC sec, not in VPC app"


def test_gateway_endpoints_are_not_supported_yet():
    assert "not supported yet" in refused_at(
        edit("VpcEndpointType: GatewayLoadBalancer", "VpcEndpointType: Gateway"), "vpc_endpoints.gwlbe-a.VpcEndpointType"
    )
    reason = refused_at(edit("    VpcEndpointType: GatewayLoadBalancer\n", ""), "vpc_endpoints.gwlbe-a.VpcEndpointType")
    assert "defaults to Gateway" in reason


def test_gwlb_endpoint_has_no_security_groups():
    text = edit("    SubnetIds: [gwlbe-subnet-a]\n", "    SubnetIds: [gwlbe-subnet-a]\n    SecurityGroupIds: [app-default]\n")
    assert "no security groups" in refused_at(text, "vpc_endpoints.gwlbe-a.SecurityGroupIds")


def test_unknown_service_name_is_refused_with_suggestion():
    text = edit("    ServiceName: inspection\n", "    ServiceName: inspecton\n")
    assert "did you mean 'inspection'" in refused_at(text, "vpc_endpoints.gwlbe-a.ServiceName")


# -- routes


def test_route_to_gwlb_endpoint_of_another_vpc_is_refused():
    text = GWLB + "route_tables:\n  r:\n    VpcId: sec\n    Routes:\n      - {DestinationCidrBlock: 0.0.0.0/0, VpcEndpointId: gwlbe-a}\n"
    assert refused_at(text, "route_tables.r.Routes[0].VpcEndpointId") == "VPC endpoint gwlbe-a is in VPC app, not in VPC sec"


def test_edge_table_route_to_gwlb_endpoint_must_be_a_whole_subnet():
    text = GWLB + ROUTES.replace("10.1.11.0/24, VpcEndpointId", "10.1.11.0/25, VpcEndpointId", 1)
    assert "not exactly a subnet's CIDR" in refused_at(text, "route_tables.edge.Routes[0]")


def test_route_naming_an_instance_as_endpoint_says_so():
    text = GWLB + ROUTES.replace("0.0.0.0/0, VpcEndpointId: gwlbe-a", "0.0.0.0/0, VpcEndpointId: web-1")
    assert refused_at(text, "route_tables.web.Routes[0].VpcEndpointId") == "'web-1' is an instance, not a VPC endpoint"


# -- appliances


def test_appliance_config_on_a_plain_instance_is_refused():
    text = edit("  web-1: {SubnetId: web-a}", "  web-1: {SubnetId: web-a, Appliance: {drop_all: true}}")
    assert "needs Role: appliance" in refused_at(text, "instances.web-1.Appliance")


def test_appliance_config_with_run_is_refused():
    text = edit("  appliance-1: {SubnetId: sec-a, Role: appliance}",
                "  appliance-1: {SubnetId: sec-a, Role: appliance, Run: ./my-fw, Appliance: {drop_all: true}}")  # fmt: skip
    assert "does not run when Run is given" in refused_at(text, "instances.appliance-1.Appliance")


@pytest.mark.parametrize(
    ("config", "key_path", "fragment"),
    [
        ("{rules: [{action: block}]}", "instances.appliance-1.Appliance.rules[0].action", "expected allow or deny"),
        ("{inside: [10.0.0.1/8]}", "instances.appliance-1.Appliance.inside", "host bits"),
        ("{rules: [{action: deny, direction: inbound}]}", "instances.appliance-1.Appliance.rules", "needs appliance.inside"),
        ("{drop: true}", "instances.appliance-1.Appliance", "unknown key(s) drop"),
        ("[1]", "instances.appliance-1.Appliance", "expected a mapping"),
        ("{rules: [{action: deny, protocol: icmp, port: 22}]}", "instances.appliance-1.Appliance.rules[0].port", "ports need"),
        ("{kind: iptables}", "instances.appliance-1.Appliance.kind", "expected reference or hairpin, got 'iptables'"),
        ("{kind: hairpin, drop_all: true}", "instances.appliance-1.Appliance.drop_all", "takes no settings but kind"),
        ("{kind: hairpin, rules: []}", "instances.appliance-1.Appliance.rules", "takes no settings but kind"),
    ],
)
def test_appliance_config_is_validated_like_the_appliance(config, key_path, fragment):
    text = edit("  appliance-1: {SubnetId: sec-a, Role: appliance}",
                f"  appliance-1: {{SubnetId: sec-a, Role: appliance, Appliance: {config}}}")  # fmt: skip
    assert fragment in refused_at(text, key_path)


def test_hairpin_appliance_with_run_is_refused():
    text = edit("  appliance-1: {SubnetId: sec-a, Role: appliance}",
                "  appliance-1: {SubnetId: sec-a, Role: appliance, Run: ./my-fw, Appliance: {kind: hairpin}}")  # fmt: skip
    assert "does not run when Run is given" in refused_at(text, "instances.appliance-1.Appliance")
