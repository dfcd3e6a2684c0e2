"""Loading Network Load Balancer labs: nodes and Elastic IPs, DNS names, target groups whose
defaults depend on their protocol, listeners, live changes, and every refusal."""
from __future__ import annotations

import re
from ipaddress import IPv4Address

import pytest

from vpclab.model import (
    ChangeError,
    Lab,
    LabFileError,
    deregister_targets,
    load_lab_text,
    modify_attributes,
    modify_listener_attributes,
    modify_target_group_attributes,
    register_targets,
)
from vpclab.model.elbv2.attributes import target_group_defaults
from vpclab.model.health_check import HealthCheckConfig

# One VPC with an internet gateway: an NLB (internet-facing, CloudFormation's default) in two
# public subnets, two web servers in app subnets, one TCP listener and group.
NLB = """
lab: {account: "111122223333"}
vpcs:
  main: {CidrBlock: 10.0.0.0/16}
subnets:
  pub-a: {VpcId: main, CidrBlock: 10.0.1.0/24, AvailabilityZone: a}
  pub-b: {VpcId: main, CidrBlock: 10.0.2.0/24, AvailabilityZone: b}
  app-a: {VpcId: main, CidrBlock: 10.0.11.0/24, AvailabilityZone: a}
  app-b: {VpcId: main, CidrBlock: 10.0.12.0/24, AvailabilityZone: b}
internet_gateways:
  igw: {VpcId: main}
instances:
  web-1: {SubnetId: app-a}
  web-2: {SubnetId: app-b}
  web-3: {SubnetId: app-a}
load_balancers:
  nlb:
    Type: network
    Subnets: [pub-a, pub-b]
target_groups:
  web:
    Protocol: TCP
    Port: 80
    VpcId: main
    Targets: [web-1, web-2]
listeners:
  http:
    LoadBalancerArn: nlb
    Protocol: TCP
    Port: 80
    DefaultActions: [{Type: forward, TargetGroupArn: web}]
"""


def load(text: str = NLB) -> Lab:
    return load_lab_text(text, "lab.yaml", name="t")


def edit(old: str, new: str, text: str = NLB) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def refused_at(text: str, key_path: str) -> str:
    with pytest.raises(LabFileError) as info:
        load(text)
    assert "\n" not in str(info.value)
    assert info.value.key_path == key_path, (info.value.key_path, info.value.reason)
    return info.value.reason


def with_lb(lines: str) -> str:
    return edit("    Subnets: [pub-a, pub-b]\n", lines)


def with_group(lines: str, text: str = NLB) -> str:
    return edit("    VpcId: main\n", f"    VpcId: main\n{lines}", text)


def group_attributes(lines: str, text: str = NLB) -> dict[str, str]:
    return dict(load(with_group(f"    TargetGroupAttributes:\n{lines}", text)).target_groups["web"].attributes)


def as_udp(text: str = NLB) -> str:
    return edit("    Protocol: TCP\n    Port: 80\n    VpcId", "    Protocol: UDP\n    Port: 53\n    VpcId",
                edit("    Protocol: TCP\n    Port: 80\n    DefaultActions", "    Protocol: UDP\n    Port: 53\n    DefaultActions", text))  # fmt: skip


def as_ip_targets(text: str = NLB) -> str:
    return edit("    Targets: [web-1, web-2]\n", "    TargetType: ip\n    Targets: [10.0.11.4, 10.0.12.4]\n", text)


# -- load balancer: nodes, addresses, names


def test_network_load_balancer_is_internet_facing_by_default_with_an_elastic_ip_per_node():
    lb = load().load_balancers["nlb"]
    assert (lb.type, lb.scheme, lb.vpc) == ("network", "internet-facing", "main")
    assert [(n.subnet, n.az, n.private_ip, n.public_ip) for n in lb.nodes] == [
        ("pub-a", "us-east-1a", IPv4Address("10.0.1.4"), IPv4Address("100.64.1.10")),
        ("pub-b", "us-east-1b", IPv4Address("10.0.2.4"), IPv4Address("100.64.1.11")),
    ]
    assert all(re.fullmatch(r"eni-0[0-9a-f]{16}", n.eni_id) for n in lb.nodes)


def test_internal_network_load_balancer_nodes_have_no_public_ip():
    lb = load(with_lb("    Scheme: internal\n    Subnets: [pub-a, pub-b]\n")).load_balancers["nlb"]
    assert lb.scheme == "internal"
    assert [n.public_ip for n in lb.nodes] == [None, None]


def test_internal_network_load_balancer_needs_no_internet_gateway():
    text = edit("internet_gateways:\n  igw: {VpcId: main}\n", "")
    text = edit("    Type: network\n", "    Type: network\n    Scheme: internal\n", text)
    assert load(text).load_balancers["nlb"].scheme == "internal"


def test_internet_facing_by_default_needs_an_internet_gateway_and_suggests_internal():
    reason = refused_at(edit("internet_gateways:\n  igw: {VpcId: main}\n", ""), "load_balancers.nlb.Scheme")
    assert reason == (
        "an internet-facing load balancer (the default Scheme, as in CloudFormation) needs an internet gateway "
        "attached to VPC main, and it has none; write Scheme: internal for one reachable only from inside the VPC"
    )
    text = edit("    Type: network\n", "    Type: network\n    Scheme: internet-facing\n",
                edit("internet_gateways:\n  igw: {VpcId: main}\n", ""))  # fmt: skip
    assert refused_at(text, "load_balancers.nlb.Scheme").startswith("an internet-facing load balancer needs")


def test_subnet_mappings_choose_elastic_ip_and_private_address():
    lab = load(with_lb("    SubnetMappings:\n      - {SubnetId: pub-a, PublicIPv4Address: 100.64.1.50}\n"
                       "      - {SubnetId: pub-b, PrivateIPv4Address: 10.0.2.50}\n"))  # fmt: skip
    first, second = lab.load_balancers["nlb"].nodes
    assert (first.public_ip, first.private_ip) == (IPv4Address("100.64.1.50"), IPv4Address("10.0.1.4"))
    assert (second.public_ip, second.private_ip) == (IPv4Address("100.64.1.10"), IPv4Address("10.0.2.50"))


def test_chosen_elastic_ip_must_be_in_the_pool_and_free():
    mapping = "    SubnetMappings:\n      - {SubnetId: pub-a, PublicIPv4Address: %s}\n"
    reason = refused_at(with_lb(mapping % "100.64.0.7"), "load_balancers.nlb.SubnetMappings[0].PublicIPv4Address")
    assert reason == "100.64.0.7 is outside the Elastic IP pool 100.64.1.0/24"
    text = edit("  web-1: {SubnetId: app-a}", "  web-1: {SubnetId: app-a, PublicIpAddress: 100.64.1.50}",
                with_lb(mapping % "100.64.1.50"))  # fmt: skip
    reason = refused_at(text, "load_balancers.nlb.SubnetMappings[0].PublicIPv4Address")
    assert reason == "100.64.1.50 is already used by instance web-1"


def test_public_address_of_an_internal_load_balancer_is_refused():
    text = with_lb("    Scheme: internal\n    SubnetMappings:\n      - {SubnetId: pub-a, PublicIPv4Address: 100.64.1.50}\n")
    reason = refused_at(text, "load_balancers.nlb.SubnetMappings[0].PublicIPv4Address")
    assert reason.startswith("an internal load balancer's nodes have no public address")


def test_elastic_ip_allocation_ids_are_not_supported_yet():
    text = with_lb("    SubnetMappings:\n      - {SubnetId: pub-a, AllocationId: eipalloc-0123}\n")
    reason = refused_at(text, "load_balancers.nlb.SubnetMappings[0].AllocationId")
    assert "not supported yet" in reason and "PublicIPv4Address" in reason


def test_network_load_balancer_takes_one_subnet_per_az():
    text = edit("  app-b: {VpcId: main, CidrBlock: 10.0.12.0/24, AvailabilityZone: b}",
                "  app-b: {VpcId: main, CidrBlock: 10.0.12.0/24, AvailabilityZone: a}", with_lb("    Subnets: [app-a, app-b]\n"))  # fmt: skip
    assert "one subnet per AZ" in refused_at(text, "load_balancers.nlb.Subnets[1]")


def test_network_arn_dns_name_and_zonal_names():
    lab = load()
    lb = lab.load_balancers["nlb"]
    match = re.fullmatch(r"arn:aws:elasticloadbalancing:us-east-1:111122223333:loadbalancer/net/nlb/([0-9a-f]{16})", lb.arn)
    assert match
    assert lb.dns_name == f"nlb-{match[1]}.elb.us-east-1.amazonaws.com"
    assert lb.zonal_dns_name("us-east-1b") == f"us-east-1b.nlb-{match[1]}.elb.us-east-1.amazonaws.com"
    assert re.fullmatch(rf"arn:aws:elasticloadbalancing:us-east-1:111122223333:listener/net/nlb/{match[1]}/[0-9a-f]{{16}}",
                        lab.listeners["http"].arn)  # fmt: skip


def test_dns_name_is_lowercase():
    text = NLB.replace("nlb", "Web-NLB")
    lb = load(text).load_balancers["Web-NLB"]
    assert lb.dns_name.startswith("web-nlb-") and lb.dns_name == lb.dns_name.lower()


def test_network_load_balancer_attribute_defaults():
    assert load().load_balancers["nlb"].attributes == {
        "deletion_protection.enabled": "false",
        "load_balancing.cross_zone.enabled": "false",
    }


def test_network_load_balancer_cross_zone_can_be_enabled():
    text = with_lb("    Subnets: [pub-a, pub-b]\n    LoadBalancerAttributes: {load_balancing.cross_zone.enabled: true}\n")
    assert load(text).load_balancers["nlb"].attributes["load_balancing.cross_zone.enabled"] == "true"


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("load_balancing.cross_zone.enabled", "maybe", "expected true or false, got 'maybe'"),
        ("deletion_protection", "true",
         "unknown load balancer attribute 'deletion_protection'; did you mean 'deletion_protection.enabled'?"),
        ("zonal_shift.config.enabled", "true", "load balancer attribute zonal_shift.config.enabled is not supported yet"),
    ],
)  # fmt: skip
def test_network_load_balancer_attributes_are_checked(key, value, reason):
    text = with_lb(f"    Subnets: [pub-a, pub-b]\n    LoadBalancerAttributes:\n      {key}: {value}\n")
    assert refused_at(text, f"load_balancers.nlb.LoadBalancerAttributes.{key}") == reason


def test_network_load_balancer_without_listener_is_allowed():
    lab = load(NLB.split("listeners:")[0])
    assert lab.listeners_of("nlb") == () and lab.listener_of("nlb") is None


def test_missing_type_is_cloudformations_application_whose_listeners_are_http():
    reason = refused_at(edit("    Type: network\n", ""), "listeners.http.Protocol")
    assert reason == "TCP listeners are for Network Load Balancers; expected HTTP, HTTPS"


# -- target groups: defaults


def test_tcp_instance_target_group_defaults():
    group = load().target_groups["web"]
    assert (group.protocol, group.port, group.target_type) == ("TCP", 80, "instance")
    assert group.attributes == {
        "deregistration_delay.timeout_seconds": "300",
        "deregistration_delay.connection_termination.enabled": "false",
        "preserve_client_ip.enabled": "true",
        "proxy_protocol_v2.enabled": "false",
        "load_balancing.cross_zone.enabled": "use_load_balancer_configuration",
        "target_health_state.unhealthy.connection_termination.enabled": "true",
        "target_health_state.unhealthy.draining_interval_seconds": "0",
        "stickiness.enabled": "false",
        "stickiness.type": "source_ip",
    }


def test_preserve_client_ip_defaults_off_for_ip_targets_on_tcp():
    assert load(as_ip_targets()).target_groups["web"].attributes["preserve_client_ip.enabled"] == "false"


@pytest.mark.parametrize("protocol", ["UDP", "TCP_UDP"])
@pytest.mark.parametrize("target_type", ["instance", "ip"])
def test_udp_groups_preserve_client_ip_and_terminate_connections_on_deregistration_by_default(protocol, target_type):
    defaults = target_group_defaults(protocol, target_type)
    assert defaults["preserve_client_ip.enabled"] == "true"
    assert defaults["deregistration_delay.connection_termination.enabled"] == "true"


def test_udp_target_group_defaults_in_a_loaded_lab():
    attributes = load(as_ip_targets(as_udp())).target_groups["web"].attributes
    assert attributes["preserve_client_ip.enabled"] == "true"
    assert attributes["deregistration_delay.connection_termination.enabled"] == "true"


def test_geneve_group_defaults_are_unchanged():
    assert target_group_defaults("GENEVE", "ip")["stickiness.type"] == "source_ip_dest_ip_proto"
    assert "preserve_client_ip.enabled" not in target_group_defaults("GENEVE", "instance")


def test_network_health_check_defaults():
    config = load().target_groups["web"].health_check_config()
    assert (config.lb_type, config.protocol, config.port, config.interval_seconds, config.timeout_seconds,
            config.healthy_threshold, config.unhealthy_threshold) == ("network", "TCP", "traffic-port", 30, 10, 5, 2)  # fmt: skip
    http = load(with_group("    HealthCheckProtocol: HTTP\n")).target_groups["web"].health_check_config()
    assert (http.timeout_seconds, http.matcher, http.path) == (6, "200-399", "/")


def test_network_health_check_accepts_aws_network_ranges():
    text = with_group("    HealthCheckProtocol: HTTP\n    HealthCheckPort: traffic-port\n    Matcher: {HttpCode: 200-599}\n"
                      "    HealthCheckIntervalSeconds: 5\n    HealthCheckTimeoutSeconds: 10\n")  # fmt: skip
    assert load(text).target_groups["web"].health_check_config() == HealthCheckConfig.for_target_group(
        "network", "TCP", HealthCheckProtocol="HTTP", HealthCheckPort="traffic-port", Matcher={"HttpCode": "200-599"},
        HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=10,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "key", "fragment"),
    [
        ("    HealthCheckProtocol: UDP\n", "HealthCheckProtocol", "HTTP, HTTPS, TCP"),
        ("    HealthCheckIntervalSeconds: 301\n", "HealthCheckIntervalSeconds", "5-300"),
        ("    HealthCheckProtocol: HTTP\n    Matcher: {HttpCode: 600}\n", "Matcher", "200-599"),
        ("    UnhealthyThresholdCount: 1\n", "UnhealthyThresholdCount", "2-10"),
    ],
)
def test_network_health_check_is_validated(lines, key, fragment):
    assert fragment in refused_at(with_group(lines), f"target_groups.web.{key}")


# -- target groups: attributes and their protocol rules


def test_preserve_client_ip_can_be_turned_off_for_tcp_instance_targets_and_on_for_ip_targets():
    assert group_attributes("      preserve_client_ip.enabled: false\n")["preserve_client_ip.enabled"] == "false"
    attributes = group_attributes("      preserve_client_ip.enabled: true\n", as_ip_targets())
    assert attributes["preserve_client_ip.enabled"] == "true"


@pytest.mark.parametrize("protocol", ["UDP", "TCP_UDP"])
@pytest.mark.parametrize("target_type", ["instance", "ip"])
def test_preserve_client_ip_cannot_be_disabled_for_udp_and_tcp_udp_groups(protocol, target_type):
    text = as_udp() if protocol == "UDP" else edit("Protocol: TCP\n    Port: 80\n    VpcId", "Protocol: TCP_UDP\n    Port: 80\n    VpcId",
                                                   edit("Protocol: TCP\n    Port: 80\n    Default", "Protocol: TCP_UDP\n    Port: 80\n    Default"))  # fmt: skip
    if target_type == "ip":
        text = as_ip_targets(text)
    text = with_group("    TargetGroupAttributes:\n      preserve_client_ip.enabled: false\n", text)
    reason = refused_at(text, "target_groups.web.TargetGroupAttributes.preserve_client_ip.enabled")
    assert reason == (
        f"client IP preservation cannot be disabled for UDP and TCP_UDP target groups, and this one is {protocol}"
    )


def test_proxy_protocol_v2_on_tcp_groups_only():
    assert group_attributes("      proxy_protocol_v2.enabled: true\n")["proxy_protocol_v2.enabled"] == "true"
    text = with_group("    TargetGroupAttributes:\n      proxy_protocol_v2.enabled: true\n", as_udp())
    reason = refused_at(text, "target_groups.web.TargetGroupAttributes.proxy_protocol_v2.enabled")
    assert reason.startswith("Proxy Protocol v2 is for TCP target groups, and this one is UDP")


@pytest.mark.parametrize("value", ["true", "false", "use_load_balancer_configuration"])
def test_target_group_cross_zone_overrides_the_load_balancer(value):
    attributes = group_attributes(f"      load_balancing.cross_zone.enabled: {value}\n")
    assert attributes["load_balancing.cross_zone.enabled"] == value


def test_target_group_cross_zone_refuses_other_values():
    text = with_group("    TargetGroupAttributes:\n      load_balancing.cross_zone.enabled: use_load_balancer\n")
    reason = refused_at(text, "target_groups.web.TargetGroupAttributes.load_balancing.cross_zone.enabled")
    assert reason == (
        "expected one of true, false, use_load_balancer_configuration, got 'use_load_balancer'; "
        "did you mean 'use_load_balancer_configuration'?"
    )


def test_unhealthy_draining_interval_needs_connection_termination_off():
    text = with_group("    TargetGroupAttributes:\n      target_health_state.unhealthy.draining_interval_seconds: 60\n")
    reason = refused_at(text, "target_groups.web.TargetGroupAttributes.target_health_state.unhealthy.draining_interval_seconds")
    assert reason == (
        "target_health_state.unhealthy.draining_interval_seconds (60) can be set only when "
        "target_health_state.unhealthy.connection_termination.enabled is false, as AWS requires; set it to false"
    )
    attributes = group_attributes("      target_health_state.unhealthy.connection_termination.enabled: false\n"
                                  "      target_health_state.unhealthy.draining_interval_seconds: 360000\n")  # fmt: skip
    assert attributes["target_health_state.unhealthy.draining_interval_seconds"] == "360000"


def test_unhealthy_draining_interval_range():
    text = with_group("    TargetGroupAttributes:\n      target_health_state.unhealthy.connection_termination.enabled: false\n"
                      "      target_health_state.unhealthy.draining_interval_seconds: 360001\n")  # fmt: skip
    reason = refused_at(text, "target_groups.web.TargetGroupAttributes.target_health_state.unhealthy.draining_interval_seconds")
    assert reason == "360001 is outside 0-360000"


def test_unhealthy_connection_termination_takes_both_values_on_udp_groups():
    # AWS's API reference both defaults it to true and says it can't be enabled for UDP: vpclab takes both.
    for value in ("true", "false"):
        text = with_group(f"    TargetGroupAttributes:\n      target_health_state.unhealthy.connection_termination.enabled: {value}\n",
                          as_udp())  # fmt: skip
        assert load(text).target_groups["web"].attributes["target_health_state.unhealthy.connection_termination.enabled"] == value


def test_deregistration_attributes_are_checked():
    attributes = group_attributes("      deregistration_delay.timeout_seconds: 0\n"
                                  "      deregistration_delay.connection_termination.enabled: true\n")  # fmt: skip
    assert (attributes["deregistration_delay.timeout_seconds"],
            attributes["deregistration_delay.connection_termination.enabled"]) == ("0", "true")  # fmt: skip
    text = with_group("    TargetGroupAttributes:\n      deregistration_delay.timeout_seconds: 3601\n")
    assert refused_at(text, "target_groups.web.TargetGroupAttributes.deregistration_delay.timeout_seconds") == "3601 is outside 0-3600"


def test_stickiness_type_is_source_ip_only():
    attributes = group_attributes("      stickiness.enabled: true\n      stickiness.type: source_ip\n")
    assert (attributes["stickiness.enabled"], attributes["stickiness.type"]) == ("true", "source_ip")
    text = with_group("    TargetGroupAttributes:\n      stickiness.type: source_ip_dest_ip\n")
    assert "expected one of source_ip" in refused_at(text, "target_groups.web.TargetGroupAttributes.stickiness.type")


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("target_group_health.dns_failover.minimum_healthy_targets.count", "is not supported yet"),
        ("target_failover.on_unhealthy", "unknown target group attribute 'target_failover.on_unhealthy'"),
        ("preserve_client_ip", "did you mean 'preserve_client_ip.enabled'"),
    ],
)
def test_other_target_group_attributes_are_refused(key, fragment):
    text = with_group(f"    TargetGroupAttributes:\n      {key}: 1\n")
    assert fragment in refused_at(text, f"target_groups.web.TargetGroupAttributes.{key}")


# -- target groups: protocols, types, targets


@pytest.mark.parametrize(
    ("protocol", "fragment"),
    [
        ("TLS", "TLS target groups (Network Load Balancers with certificates) are not supported yet"),
        ("QUIC", "QUIC target groups are not supported yet"),
        ("TPC", "unknown protocol 'TPC'; did you mean 'TCP'?"),
    ],
)
def test_target_group_protocols_other_than_tcp_udp_tcp_udp_and_geneve_are_refused(protocol, fragment):
    text = edit("    Protocol: TCP\n    Port: 80\n    VpcId", f"    Protocol: {protocol}\n    Port: 80\n    VpcId")
    assert fragment in refused_at(text, "target_groups.web.Protocol")


def test_target_group_port_is_1_to_65535():
    text = edit("    Protocol: TCP\n    Port: 80\n    VpcId", "    Protocol: TCP\n    Port: 0\n    VpcId")
    assert refused_at(text, "target_groups.web.Port") == "0 is outside 1-65535"


def test_lambda_target_type_is_refused_and_alb_takes_an_alb():
    reason = refused_at(with_group("    TargetType: alb\n"), "target_groups.web.Targets[0]")
    assert "takes an Application Load Balancer" in reason  # test_model_alb_target.py has the rest
    assert "instance or ip" in refused_at(with_group("    TargetType: lambda\n"), "target_groups.web.TargetType")


def test_targets_may_have_their_own_port():
    text = edit("    Targets: [web-1, web-2]\n", "    Targets: [{Id: web-1, Port: 8080}, web-2]\n")
    first, second = load(text).target_groups["web"].targets
    assert (first.instance, first.port, second.port) == ("web-1", 8080, 80)


def test_one_target_on_two_ports_is_not_supported_yet():
    text = edit("    Targets: [web-1, web-2]\n", "    Targets: [{Id: web-1, Port: 8080}, {Id: web-1, Port: 8081}]\n")
    reason = refused_at(text, "target_groups.web.Targets[1]")
    assert reason.startswith("target i-") and "not supported yet" in reason


def test_target_port_range():
    text = edit("    Targets: [web-1, web-2]\n", "    Targets: [{Id: web-1, Port: 70000}]\n")
    assert refused_at(text, "target_groups.web.Targets[0].Port") == "70000 is outside 1-65535"


# -- listeners


def test_network_listener_protocol_port_and_default_idle_timeout():
    listener = load().listeners["http"]
    assert (listener.load_balancer, listener.target_group, listener.protocol, listener.port) == ("nlb", "web", "TCP", 80)
    assert listener.attributes == {"tcp.idle_timeout.seconds": "350"}


def add_listener(protocol: str, port: int, group: str = "web", text: str = NLB, name: str = "second") -> str:
    return text + (f"  {name}:\n    LoadBalancerArn: nlb\n    Protocol: {protocol}\n    Port: {port}\n"
                   f"    DefaultActions: [{{Type: forward, TargetGroupArn: {group}}}]\n")  # fmt: skip


def test_two_listeners_of_one_network_load_balancer_may_share_a_target_group():
    lab = load(add_listener("TCP", 8080))
    assert [li.name for li in lab.listeners_of("nlb")] == ["http", "second"]
    assert {li.target_group for li in lab.listeners_of("nlb")} == {"web"}


def add_group(protocol: str, name: str = "other", port: int = 80) -> str:
    return edit("listeners:\n", f"  {name}: {{Protocol: {protocol}, Port: {port}, VpcId: main}}\nlisteners:\n")


def test_tcp_and_udp_listeners_may_share_a_port():
    lab = load(add_listener("UDP", 80, "other", add_group("UDP")))
    assert [(li.protocol, li.port) for li in lab.listeners_of("nlb")] == [("TCP", 80), ("UDP", 80)]


@pytest.mark.parametrize(
    ("protocol", "group_protocol", "other"),
    [("TCP", "TCP", "TCP"), ("TCP_UDP", "TCP_UDP", "TCP"), ("UDP", "TCP_UDP", "TCP_UDP")],
)
def test_colliding_listeners_are_refused(protocol, group_protocol, other):
    text = edit("    Protocol: TCP\n    Port: 80\n    DefaultActions: [{Type: forward, TargetGroupArn: web}]",
                f"    Protocol: {other}\n    Port: 80\n    DefaultActions: [{{Type: forward, TargetGroupArn: other}}]",
                add_group("TCP_UDP"))  # fmt: skip
    text = add_listener(protocol, 80, "web" if group_protocol == "TCP" else "other2", text)
    if group_protocol != "TCP":
        text = edit("listeners:\n", f"  other2: {{Protocol: {group_protocol}, Port: 80, VpcId: main}}\nlisteners:\n", text)
    reason = refused_at(text, "listeners.second.Port")
    assert reason == (
        f"load balancer nlb already has listener http on {other} port 80; two listeners can share a port only as "
        "TCP and UDP (TCP_UDP takes both)"
    )


@pytest.mark.parametrize(
    ("listener", "group", "allowed"),
    [
        ("TCP", "TCP", True), ("TCP", "TCP_UDP", True), ("TCP", "UDP", False),
        ("UDP", "UDP", True), ("UDP", "TCP_UDP", True), ("UDP", "TCP", False),
        ("TCP_UDP", "TCP_UDP", True), ("TCP_UDP", "TCP", False), ("TCP_UDP", "UDP", False),
    ],
)  # fmt: skip
def test_listener_forwards_to_a_target_group_of_a_matching_protocol(listener, group, allowed):
    text = add_listener(listener, 9000, "other", add_group(group))
    if allowed:
        assert load(text).listeners["second"].target_group == "other"
    else:
        reason = refused_at(text, "listeners.second.DefaultActions[0].TargetGroupArn")
        assert reason.startswith(f"target group other is {group}, and a {listener} listener forwards to a ")


def test_network_listener_needs_protocol_and_port():
    text = edit("    Protocol: TCP\n    Port: 80\n    DefaultActions", "    Port: 80\n    DefaultActions")
    assert refused_at(text, "listeners.http.Protocol").startswith("required key is missing")
    text = edit("    Protocol: TCP\n    Port: 80\n    DefaultActions", "    Protocol: TCP\n    DefaultActions")
    assert refused_at(text, "listeners.http.Port").startswith("required key is missing")


@pytest.mark.parametrize(
    ("protocol", "fragment"),
    [("TLS", "TLS listeners (Network Load Balancers with certificates) are not supported yet"),
     ("udp", None), ("TCPUDP", "did you mean 'TCP_UDP'"),
     ("HTTPS", "HTTPS listeners are for Application Load Balancers; expected TCP, UDP, TCP_UDP")],
)  # fmt: skip
def test_listener_protocol_is_checked(protocol, fragment):
    text = edit("    Protocol: TCP\n    Port: 80\n    DefaultActions", f"    Protocol: {protocol}\n    Port: 80\n    DefaultActions")
    if fragment is None:  # lowercase is accepted, as AWS's protocol names are uppercase
        text = add_group("UDP", "other")
        text = edit("    Protocol: TCP\n    Port: 80\n    DefaultActions: [{Type: forward, TargetGroupArn: web}]",
                    "    Protocol: udp\n    Port: 80\n    DefaultActions: [{Type: forward, TargetGroupArn: other}]", text)  # fmt: skip
        assert load(text).listeners["http"].protocol == "UDP"
    else:
        assert fragment in refused_at(text, "listeners.http.Protocol")


def test_listener_port_range():
    text = edit("    Protocol: TCP\n    Port: 80\n    DefaultActions", "    Protocol: TCP\n    Port: 65536\n    DefaultActions")
    assert refused_at(text, "listeners.http.Port") == "65536 is outside 1-65535"


def test_udp_listener_has_no_attributes_and_refuses_the_tcp_idle_timeout():
    lab = load(as_udp())
    assert lab.listeners["http"].attributes == {}
    text = edit("    DefaultActions: [{Type: forward, TargetGroupArn: web}]\n",
                "    DefaultActions: [{Type: forward, TargetGroupArn: web}]\n"
                "    ListenerAttributes: {tcp.idle_timeout.seconds: 600}\n", as_udp())  # fmt: skip
    reason = refused_at(text, "listeners.http.ListenerAttributes.tcp.idle_timeout.seconds")
    assert reason.startswith("tcp.idle_timeout.seconds applies to TCP and TCP_UDP listeners, and this one is UDP")


@pytest.mark.parametrize(("value", "ok"), [(60, True), (6000, True), (59, False), (6001, False)])
def test_tcp_listener_idle_timeout_range(value, ok):
    text = edit("    DefaultActions: [{Type: forward, TargetGroupArn: web}]\n",
                "    DefaultActions: [{Type: forward, TargetGroupArn: web}]\n"
                f"    ListenerAttributes: {{tcp.idle_timeout.seconds: {value}}}\n")  # fmt: skip
    if ok:
        assert load(text).listeners["http"].attributes == {"tcp.idle_timeout.seconds": str(value)}
    else:
        assert "outside 60-6000" in refused_at(text, "listeners.http.ListenerAttributes.tcp.idle_timeout.seconds")


def test_network_listener_has_exactly_one_forward_action():
    text = edit("[{Type: forward, TargetGroupArn: web}]", "[]")
    assert "exactly one default action" in refused_at(text, "listeners.http.DefaultActions")
    text = edit("[{Type: forward, TargetGroupArn: web}]", "[{Type: redirect}]")
    assert refused_at(text, "listeners.http.DefaultActions[0].Type") == (
        "a Network Load Balancer listener can only forward, got 'redirect'"
    )


def test_target_group_serving_another_load_balancer_is_refused():
    text = edit("load_balancers:\n", "load_balancers:\n  nlb2: {Type: network, Scheme: internal, Subnets: [app-a]}\n")
    text += ("  other:\n    LoadBalancerArn: nlb2\n    Protocol: TCP\n    Port: 80\n"
             "    DefaultActions: [{Type: forward, TargetGroupArn: web}]\n")  # fmt: skip
    reason = refused_at(text, "listeners.other.DefaultActions[0].TargetGroupArn")
    assert reason == "target group web is already used by listener http; vpclab lets a target group serve one load balancer"


def test_network_listener_cannot_forward_to_a_geneve_group():
    text = add_listener("TCP", 81, "geneve", add_group("GENEVE", "geneve", 6081))
    reason = refused_at(text, "listeners.second.DefaultActions[0].TargetGroupArn")
    assert reason == "target group geneve is GENEVE, and a TCP listener forwards to a TCP or TCP_UDP target group"


def test_gateway_listener_cannot_forward_to_a_tcp_group():
    text = edit("load_balancers:\n", "load_balancers:\n  gwlb: {Type: gateway, Subnets: [app-a]}\n", add_group("TCP", "spare"))
    text += "  gw:\n    LoadBalancerArn: gwlb\n    DefaultActions: [{Type: forward, TargetGroupArn: spare}]\n"
    reason = refused_at(text, "listeners.gw.DefaultActions[0].TargetGroupArn")
    assert reason == "target group spare is TCP; a Gateway Load Balancer forwards to GENEVE"


# -- live changes


LAB = load()
UDP_IP_LAB = load(as_ip_targets(as_udp()))


def code_of(call, *args) -> str:
    with pytest.raises(ChangeError) as info:
        call(*args)
    return info.value.code


@pytest.mark.parametrize("target", ["web-3:8080", "Id=web-3,Port=8080", {"Id": "web-3", "Port": 8080}])
def test_register_targets_with_a_port(target):
    changed = register_targets(LAB, "web", [target])
    added = changed.target_groups["web"].targets[-1]
    assert (added.instance, added.port) == ("web-3", 8080)


def test_register_targets_without_a_port_take_the_groups():
    assert register_targets(LAB, "web", ["web-3"]).target_groups["web"].targets[-1].port == 80


def test_register_ip_target_with_a_port():
    changed = register_targets(UDP_IP_LAB, "web", ["10.0.11.9:5353"])
    assert (changed.target_groups["web"].targets[-1].id, changed.target_groups["web"].targets[-1].port) == ("10.0.11.9", 5353)


def test_registering_a_target_again_on_its_port_is_a_no_op_and_on_another_port_is_refused():
    assert register_targets(LAB, "web", ["web-1:80"]) is LAB
    with pytest.raises(ChangeError) as info:
        register_targets(LAB, "web", ["web-1:8080"])
    assert info.value.code == "InvalidTarget" and "not supported yet" in info.value.message


@pytest.mark.parametrize("target", ["web-3:0", "web-3:http", "Id=web-3,Port=70000", {"Id": "web-3", "Port": "x"},
                                    {"Port": 80}, {"Id": "web-3", "Weight": 1}])  # fmt: skip
def test_register_targets_refuses_bad_ports_and_shapes(target):
    assert code_of(register_targets, LAB, "web", [target]) == "ValidationError"


def test_deregister_targets_by_id_or_with_the_registered_port():
    assert [t.instance for t in deregister_targets(LAB, "web", ["web-1"]).target_groups["web"].targets] == ["web-2"]
    assert [t.instance for t in deregister_targets(LAB, "web", ["Id=web-1,Port=80"]).target_groups["web"].targets] == ["web-2"]
    with pytest.raises(ChangeError) as info:
        deregister_targets(LAB, "web", ["web-1:8080"])
    assert info.value.code == "InvalidTarget" and info.value.message.endswith("on port 8080")


def test_modify_network_load_balancer_and_listener_attributes():
    changed = modify_attributes(LAB, "nlb", {"load_balancing.cross_zone.enabled": "true"})
    assert changed.load_balancers["nlb"].attributes["load_balancing.cross_zone.enabled"] == "true"
    changed = modify_attributes(LAB, LAB.listeners["http"].arn, {"tcp.idle_timeout.seconds": 120})
    assert changed.listeners["http"].attributes == {"tcp.idle_timeout.seconds": "120"}


def test_modify_udp_listener_idle_timeout_is_refused():
    assert code_of(modify_listener_attributes, UDP_IP_LAB, "http", {"tcp.idle_timeout.seconds": 120}) == "ValidationError"


def test_modify_network_target_group_attributes_keeps_protocol_rules():
    changed = modify_target_group_attributes(LAB, "web", {"load_balancing.cross_zone.enabled": "false",
                                                          "preserve_client_ip.enabled": "false"})  # fmt: skip
    assert changed.target_groups["web"].attributes["load_balancing.cross_zone.enabled"] == "false"
    assert changed.target_groups["web"].attributes["preserve_client_ip.enabled"] == "false"
    with pytest.raises(ChangeError) as info:
        modify_target_group_attributes(UDP_IP_LAB, "web", {"preserve_client_ip.enabled": "false"})
    assert info.value.code == "ValidationError" and "cannot be disabled" in info.value.message
    assert code_of(modify_target_group_attributes, UDP_IP_LAB, "web", {"proxy_protocol_v2.enabled": True}) == "ValidationError"


def test_modify_unhealthy_draining_interval_follows_connection_termination():
    code = code_of(modify_target_group_attributes, LAB, "web",
                   {"target_health_state.unhealthy.draining_interval_seconds": 30})  # fmt: skip
    assert code == "InvalidConfigurationRequest"
    changed = modify_target_group_attributes(
        LAB, "web", {"target_health_state.unhealthy.connection_termination.enabled": "false",
                     "target_health_state.unhealthy.draining_interval_seconds": 30},
    )  # fmt: skip
    assert changed.target_groups["web"].attributes["target_health_state.unhealthy.draining_interval_seconds"] == "30"
    # turning termination back on while the interval is set contradicts it
    code = code_of(modify_target_group_attributes, changed, "web",
                   {"target_health_state.unhealthy.connection_termination.enabled": "true"})  # fmt: skip
    assert code == "InvalidConfigurationRequest"


def test_modify_network_group_refuses_gateway_only_attributes():
    assert code_of(modify_target_group_attributes, LAB, "web", {"target_failover.on_unhealthy": "rebalance"}) == "ValidationError"


# -- Route 53 aliases to a Network Load Balancer


def zone(record: str, text: str = NLB) -> str:
    text = edit("  main: {CidrBlock: 10.0.0.0/16}", "  main: {CidrBlock: 10.0.0.0/16, EnableDnsHostnames: true}", text)
    return text + f"hosted_zones:\n  z:\n    Name: example.local\n    VPCs: [main]\n    RecordSets:\n      - {record}\n"


def test_alias_to_an_internet_facing_nlb_answers_its_elastic_ips():
    lb = LAB.load_balancers["nlb"]
    (record,) = load(zone(f"{{Name: web.example.local, Type: A, AliasTarget: {{DNSName: {lb.dns_name}}}}}")).hosted_zones["z"].records
    assert (record.values, record.ttl, record.alias_target) == (("100.64.1.10", "100.64.1.11"), 60, lb.dns_name)


def test_alias_to_a_zonal_name_answers_that_azs_node():
    name = LAB.load_balancers["nlb"].zonal_dns_name("us-east-1b")
    (record,) = load(zone(f"{{Name: web.example.local, Type: A, AliasTarget: {{DNSName: {name}}}}}")).hosted_zones["z"].records
    assert record.values == ("100.64.1.11",)


def test_alias_to_an_internal_nlb_answers_its_private_addresses():
    text = with_lb("    Scheme: internal\n    Subnets: [pub-a, pub-b]\n")
    lb = load(text).load_balancers["nlb"]
    (record,) = load(zone(f"{{Name: web.example.local, Type: A, AliasTarget: {{DNSName: {lb.dns_name}}}}}", text)).hosted_zones["z"].records
    assert record.values == ("10.0.1.4", "10.0.2.4")


def test_alias_by_the_nlbs_lab_name_means_its_regional_name():
    (record,) = load(zone("{Name: web.example.local, Type: A, AliasTarget: {DNSName: nlb}}")).hosted_zones["z"].records
    assert (record.alias_target, record.values) == (LAB.load_balancers["nlb"].dns_name, ("100.64.1.10", "100.64.1.11"))


def test_alias_to_an_unknown_name_lists_what_an_alias_may_name():
    with pytest.raises(LabFileError) as info:
        load(zone("{Name: web.example.local, Type: A, AliasTarget: {DNSName: nbl}}"))
    assert info.value.key_path == "hosted_zones.z.RecordSets[0].AliasTarget.DNSName"
    assert "Network Load Balancer's or interface endpoint's DNS name (regional or zonal)" in info.value.reason
    assert "the lab name of a Network Load Balancer or interface endpoint" in info.value.reason
    assert info.value.reason.endswith("did you mean 'nlb'?")
