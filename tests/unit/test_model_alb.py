"""Loading Application Load Balancer labs (reference §4): the load balancer (two AZs, security
groups, DNS name), HTTP and HTTPS listeners with their default actions and certificates,
listener rules, target groups with ALB attributes and health checks, and every refusal."""
from __future__ import annotations

import pytest

from vpclab.model import Lab, LabFileError, load_lab_text
from vpclab.model.resources import FixedResponseAction, ForwardAction, RedirectAction, WeightedTargetGroup

# One VPC: an internet-facing ALB in two public subnets, two web servers, an HTTP listener with
# three rules (forward, redirect, fixed response) and an HTTPS listener splitting by weight.
ALB = """
lab: {account: "111122223333"}
vpcs:
  main: {CidrBlock: 10.0.0.0/16}
subnets:
  public-a: {VpcId: main, CidrBlock: 10.0.1.0/24, AvailabilityZone: a}
  public-b: {VpcId: main, CidrBlock: 10.0.2.0/24, AvailabilityZone: b}
  app-a: {VpcId: main, CidrBlock: 10.0.11.0/24, AvailabilityZone: a}
  app-b: {VpcId: main, CidrBlock: 10.0.12.0/24, AvailabilityZone: b}
internet_gateways:
  igw: {VpcId: main}
route_tables:
  public:
    VpcId: main
    Routes: [{DestinationCidrBlock: 0.0.0.0/0, GatewayId: igw}]
    SubnetAssociations: [public-a, public-b]
security_groups:
  alb-sg:
    VpcId: main
    GroupDescription: web clients
    SecurityGroupIngress:
      - {IpProtocol: tcp, FromPort: 80, ToPort: 80, CidrIp: 0.0.0.0/0}
      - {IpProtocol: tcp, FromPort: 443, ToPort: 443, CidrIp: 0.0.0.0/0}
instances:
  web-1: {SubnetId: app-a}
  web-2: {SubnetId: app-b}
certificates:
  site: {DomainName: www.example.com, SubjectAlternativeNames: ["*.example.com"]}
load_balancers:
  web-alb:
    Type: application
    Subnets: [public-a, public-b]
    SecurityGroups: [alb-sg]
target_groups:
  web:
    Protocol: HTTP
    Port: 80
    VpcId: main
    Targets: [web-1, web-2]
  web-v2:
    Protocol: HTTP
    Port: 80
    VpcId: main
    Targets: [web-2]
  api-v1:
    Protocol: HTTP
    Port: 8080
    VpcId: main
    TargetType: ip
    Targets: [10.0.11.4]
listeners:
  http:
    LoadBalancerArn: web-alb
    Protocol: HTTP
    Port: 80
    DefaultActions: [{Type: forward, TargetGroupArn: web}]
  https:
    LoadBalancerArn: web-alb
    Protocol: HTTPS
    Port: 443
    Certificates: [{CertificateArn: site}]
    DefaultActions:
      - Type: forward
        ForwardConfig:
          TargetGroups: [{TargetGroupArn: web, Weight: 3}, {TargetGroupArn: web-v2, Weight: 1}]
          TargetGroupStickinessConfig: {Enabled: true, DurationSeconds: 3600}
listener_rules:
  api:
    ListenerArn: http
    Priority: 10
    Conditions:
      - {Field: path-pattern, PathPatternConfig: {Values: ["/api/*"]}}
      - {Field: host-header, HostHeaderConfig: {Values: ["*.example.com"]}}
      - {Field: http-header, HttpHeaderConfig: {HttpHeaderName: X-Env, Values: [beta]}}
      - {Field: query-string, QueryStringConfig: {Values: [{Key: v, Value: "1"}]}}
      - {Field: source-ip, SourceIpConfig: {Values: [10.0.0.0/8]}}
    Actions: [{Type: forward, TargetGroupArn: api-v1}]
  old:
    ListenerArn: http
    Priority: 20
    Conditions: [{Field: path-pattern, PathPatternConfig: {Values: ["/old/*"]}}]
    Actions:
      - Type: redirect
        RedirectConfig: {Protocol: HTTPS, Port: "443", Path: "/new/#{path}", StatusCode: HTTP_301}
  health:
    ListenerArn: http
    Priority: 5
    Conditions: [{Field: path-pattern, PathPatternConfig: {Values: ["/ping"]}}]
    Actions:
      - Type: fixed-response
        FixedResponseConfig: {StatusCode: "200", ContentType: text/plain, MessageBody: pong}
"""


def load(text: str = ALB) -> Lab:
    return load_lab_text(text, "lab.yaml", name="t")


def edit(old: str, new: str, text: str = ALB) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def refused(text: str) -> LabFileError:
    with pytest.raises(LabFileError) as info:
        load(text)
    assert "\n" not in str(info.value)
    return info.value


def refused_at(text: str, key_path: str) -> str:
    e = refused(text)
    assert e.key_path == key_path, (e.key_path, e.reason)
    return e.reason


# -- the load balancer


def test_alb_has_a_node_per_az_with_an_elastic_ip_when_internet_facing():
    lb = load().load_balancers["web-alb"]
    assert (lb.type, lb.scheme) == ("application", "internet-facing")
    assert [n.az for n in lb.nodes] == ["us-east-1a", "us-east-1b"]
    assert all(n.public_ip is not None for n in lb.nodes)
    assert lb.arn.split(":")[5].startswith("loadbalancer/app/web-alb/")


def test_alb_dns_name_is_name_number_region_elb_amazonaws_com():
    name = load().load_balancers["web-alb"].dns_name
    prefix, _, rest = name.partition(".")
    assert rest == "us-east-1.elb.amazonaws.com"
    assert prefix.startswith("web-alb-") and prefix.removeprefix("web-alb-").isdigit()


def test_internal_alb_dns_name_starts_with_internal_and_has_no_public_address():
    lb = load(edit("    Type: application\n", "    Type: application\n    Scheme: internal\n")).load_balancers["web-alb"]
    assert lb.dns_name.startswith("internal-web-alb-") and lb.dns_name.endswith(".us-east-1.elb.amazonaws.com")
    assert all(n.public_ip is None for n in lb.nodes)


def test_alb_nodes_carry_its_security_groups_by_default_the_vpcs_default_group():
    assert load().load_balancers["web-alb"].security_groups == ("alb-sg",)
    lab = load(edit("    SecurityGroups: [alb-sg]\n", ""))
    assert lab.load_balancers["web-alb"].security_groups == ("main-default",)


def test_alb_in_one_az_is_refused():
    reason = refused_at(edit("Subnets: [public-a, public-b]", "Subnets: [public-a]"), "load_balancers.web-alb.Subnets")
    assert reason == "an Application Load Balancer needs subnets in at least 2 AZs, got 1"


def test_alb_with_two_subnets_in_one_az_is_refused():
    text = edit("public-b: {VpcId: main, CidrBlock: 10.0.2.0/24, AvailabilityZone: b}",
                "public-b: {VpcId: main, CidrBlock: 10.0.2.0/24, AvailabilityZone: a}")
    assert "one subnet per AZ" in refused_at(text, "load_balancers.web-alb.Subnets[1]")


def test_alb_node_addresses_cannot_be_chosen():
    text = edit("    Subnets: [public-a, public-b]\n    SecurityGroups",
                "    SubnetMappings: [{SubnetId: public-a, PrivateIPv4Address: 10.0.1.50}, {SubnetId: public-b}]\n"
                "    SecurityGroups")
    reason = refused_at(text, "load_balancers.web-alb.SubnetMappings[0].PrivateIPv4Address")
    assert "only a Network Load Balancer takes them" in reason


def test_alb_security_group_must_be_in_its_vpc_and_known():
    reason = refused_at(edit("SecurityGroups: [alb-sg]", "SecurityGroups: [alb-sgg]"),
                        "load_balancers.web-alb.SecurityGroups[0]")
    assert reason.startswith("unknown security group 'alb-sgg'")


def test_network_load_balancer_security_groups_are_not_supported_yet():
    text = edit("    Type: application\n", "    Type: network\n")
    reason = refused_at(text, "load_balancers.web-alb.SecurityGroups")
    assert reason == "security groups on a Network Load Balancer are not supported yet"


def test_alb_attribute_defaults_are_awss():
    assert dict(load().load_balancers["web-alb"].attributes) == {
        "deletion_protection.enabled": "false",
        "idle_timeout.timeout_seconds": "60",
        "routing.http2.enabled": "true",
        "routing.http.xff_header_processing.mode": "append",
        "routing.http.xff_client_port.enabled": "false",
        "routing.http.preserve_host_header.enabled": "false",
        "access_logs.s3.enabled": "false",
    }


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("idle_timeout.timeout_seconds", 0, "0 is outside 1-4000"),
        ("idle_timeout.timeout_seconds", 4001, "4001 is outside 1-4000"),
        ("routing.http.xff_header_processing.mode", "drop",
         "expected one of append, preserve, remove, got 'drop'"),
        ("routing.http2.enabled", "maybe", "expected true or false, got 'maybe'"),
        ("client_keep_alive.seconds", 3600, "load balancer attribute client_keep_alive.seconds is not supported yet"),
        ("access_logs.s3.bucket", "logs", "load balancer attribute access_logs.s3.bucket is not needed: the lab has "
         "no S3 and writes access logs to its state directory"),
    ],
)  # fmt: skip
def test_alb_attributes_are_checked(key, value, reason):
    text = edit("    SecurityGroups: [alb-sg]\n", f"    SecurityGroups: [alb-sg]\n    LoadBalancerAttributes:\n"
                f"      {key}: {value}\n")
    assert refused_at(text, f"load_balancers.web-alb.LoadBalancerAttributes.{key}") == reason


def test_alb_attributes_as_given():
    text = edit("    SecurityGroups: [alb-sg]\n", "    SecurityGroups: [alb-sg]\n    LoadBalancerAttributes:\n"
                "      idle_timeout.timeout_seconds: 4000\n      routing.http.xff_header_processing.mode: preserve\n")
    attributes = load(text).load_balancers["web-alb"].attributes
    assert attributes["idle_timeout.timeout_seconds"] == "4000"
    assert attributes["routing.http.xff_header_processing.mode"] == "preserve"


# -- listeners


def test_http_listener_forwards_by_default_to_its_group():
    li = load().listeners["http"]
    assert (li.protocol, li.port, li.target_group, li.certificate) == ("HTTP", 80, "web", None)
    assert li.default_action == ForwardAction((WeightedTargetGroup("web", 1),))
    assert li.arn.split(":")[5].startswith("listener/app/web-alb/")


def test_https_listener_has_its_certificate_and_a_weighted_forward_with_group_stickiness():
    lab = load()
    li = lab.listeners["https"]
    assert (li.protocol, li.certificate) == ("HTTPS", "site")
    assert li.default_action == ForwardAction(
        (WeightedTargetGroup("web", 3), WeightedTargetGroup("web-v2", 1)), True, 3600)
    cert = lab.certificates["site"]
    assert (cert.domain_name, cert.subject_alternative_names) == ("www.example.com", ("*.example.com",))
    assert cert.arn.startswith("arn:aws:acm:us-east-1:111122223333:certificate/") and len(cert.arn.split("/")[1]) == 36


def test_https_listener_without_a_certificate_is_refused():
    text = edit("    Certificates: [{CertificateArn: site}]\n", "")
    assert refused_at(text, "listeners.https.Certificates").startswith("required key is missing: an HTTPS listener")


def test_http_listener_takes_no_certificate():
    text = edit("    Port: 80\n    DefaultActions", "    Port: 80\n    Certificates: [{CertificateArn: site}]\n"
                "    DefaultActions")
    assert "an HTTP listener takes no certificates" in refused_at(text, "listeners.http.Certificates")


@pytest.mark.parametrize(("protocol", "reason"), [
    ("TCP", "TCP listeners are for Network Load Balancers; expected HTTP, HTTPS"),
    ("TLS", "TLS listeners (Network Load Balancers with certificates) are not supported yet"),
])
def test_alb_listener_protocols_are_http_and_https(protocol, reason):
    text = edit("    Protocol: HTTP\n    Port: 80\n    DefaultActions", f"    Protocol: {protocol}\n    Port: 80\n"
                "    DefaultActions")
    assert refused_at(text, "listeners.http.Protocol") == reason


def test_two_alb_listeners_on_one_port_are_refused():
    text = edit("    Protocol: HTTPS\n    Port: 443", "    Protocol: HTTPS\n    Port: 80")
    assert refused_at(text, "listeners.https.Port") == "load balancer web-alb already has listener http on port 80"


def test_alb_listener_cannot_forward_to_a_tcp_group():
    text = edit("  web-v2:\n    Protocol: HTTP", "  web-v2:\n    Protocol: TCP")
    reason = refused_at(text, "listeners.https.DefaultActions[0].ForwardConfig.TargetGroups[1].TargetGroupArn")
    assert reason == ("target group web-v2 is TCP; an Application Load Balancer forwards to HTTP or HTTPS target "
                      "groups")


def test_network_listener_cannot_forward_to_an_http_group():
    text = edit("load_balancers:\n", "load_balancers:\n  nlb: {Type: network, Subnets: [public-a, public-b]}\n")
    text = edit("listeners:\n", "listeners:\n  tcp:\n    LoadBalancerArn: nlb\n    Protocol: TCP\n    Port: 80\n"
                "    DefaultActions: [{Type: forward, TargetGroupArn: web}]\n", text)
    reason = refused_at(text, "listeners.tcp.DefaultActions[0].TargetGroupArn")
    assert reason.startswith("target group web is HTTP, and a TCP listener forwards to a TCP or TCP_UDP")


def test_a_target_group_serves_one_load_balancer():
    text = ALB.replace("listener_rules:\n", """  other-http:
    LoadBalancerArn: other-alb
    Protocol: HTTP
    Port: 80
    DefaultActions: [{Type: forward, TargetGroupArn: web-v2}]
listener_rules:
""")
    text = edit("load_balancers:\n", "load_balancers:\n  other-alb: {Type: application, Subnets: [public-a, public-b]}\n",
                text)
    reason = refused_at(text, "listeners.other-http.DefaultActions[0].TargetGroupArn")
    assert reason == ("target group web-v2 is already used by load balancer web-alb (listener https); "
                      "a target group serves one load balancer")


# -- listener rules


def test_rules_are_read_with_their_conditions_and_actions_lowest_priority_first():
    lab = load()
    assert [r.name for r in lab.rules_of("http")] == ["health", "api", "old"]
    api = lab.listener_rules["api"]
    assert [(c.field, c.values, c.header_name) for c in api.conditions] == [
        ("path-pattern", ("/api/*",), None), ("host-header", ("*.example.com",), None),
        ("http-header", ("beta",), "X-Env"), ("query-string", (("v", "1"),), None),
        ("source-ip", ("10.0.0.0/8",), None)]
    assert api.action == ForwardAction((WeightedTargetGroup("api-v1", 1),))
    assert api.arn.split(":")[5].startswith("listener-rule/app/web-alb/")
    assert lab.listener_rules["old"].action == RedirectAction(301, "HTTPS", "#{host}", "443", "/new/#{path}", "#{query}")
    assert lab.listener_rules["health"].action == FixedResponseAction(200, "text/plain", "pong")


def test_network_listener_has_no_rules():
    text = ALB + """  nlb-rule:
    ListenerArn: tcp
    Priority: 1
    Conditions: [{Field: path-pattern, Values: ["/"]}]
    Actions: [{Type: forward, TargetGroupArn: tcp-group}]
"""
    text = edit("load_balancers:\n", "load_balancers:\n  nlb: {Type: network, Subnets: [public-a, public-b]}\n", text)
    text = edit("target_groups:\n", "target_groups:\n  tcp-group: {Protocol: TCP, Port: 80, VpcId: main}\n", text)
    text = edit("listeners:\n", "listeners:\n  tcp:\n    LoadBalancerArn: nlb\n    Protocol: TCP\n    Port: 80\n"
                "    DefaultActions: [{Type: forward, TargetGroupArn: tcp-group}]\n", text)
    reason = refused_at(text, "listener_rules.nlb-rule.ListenerArn")
    assert reason == ("listener tcp belongs to a Network Load Balancer; only an Application Load Balancer's "
                      "listeners have rules")
