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


# -- target groups


def with_web_group(extra: str, text: str = ALB) -> str:
    return edit("    Targets: [web-1, web-2]\n", f"    Targets: [web-1, web-2]\n{extra}", text)


def test_alb_target_group_attribute_defaults_are_awss():
    assert dict(load().target_groups["web"].attributes) == {
        "deregistration_delay.timeout_seconds": "300",
        "load_balancing.algorithm.type": "round_robin",
        "slow_start.duration_seconds": "0",
        "stickiness.enabled": "false",
        "stickiness.type": "lb_cookie",
        "stickiness.lb_cookie.duration_seconds": "86400",
        "stickiness.app_cookie.cookie_name": "",
        "stickiness.app_cookie.duration_seconds": "86400",
    }


def test_alb_health_check_defaults_are_awss():
    check = load().target_groups["web"].health_check_config()
    assert (check.protocol, check.port, check.path, check.interval_seconds, check.timeout_seconds,
            check.healthy_threshold, check.unhealthy_threshold, check.matcher) == \
        ("HTTP", "traffic-port", "/", 30, 5, 5, 2, "200")


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("HealthCheckIntervalSeconds", 4, "5-300"),
    ("HealthCheckTimeoutSeconds", 121, "2-120"),
    ("HealthyThresholdCount", 11, "2-10"),
    ("UnhealthyThresholdCount", 1, "2-10"),
    ("Matcher", "{HttpCode: '500'}", "within 200-499"),
    ("HealthCheckProtocol", "TCP", "HTTP, HTTPS"),
])
def test_alb_health_check_ranges(key, value, fragment):
    reason = refused_at(with_web_group(f"    {key}: {value}\n"), f"target_groups.web.{key}")
    assert fragment in reason


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("slow_start.duration_seconds", 29, "slow start is 30-900 seconds, or 0 to turn it off; got 29"),
    ("slow_start.duration_seconds", 901, "901 is outside 0-900"),
    ("stickiness.lb_cookie.duration_seconds", 0, "0 is outside 1-604800"),
    ("stickiness.lb_cookie.duration_seconds", 604801, "604801 is outside 1-604800"),
    ("stickiness.app_cookie.duration_seconds", 604801, "604801 is outside 1-604800"),
    ("deregistration_delay.timeout_seconds", 3601, "3601 is outside 0-3600"),
    ("stickiness.type", "source_ip", "expected one of lb_cookie, app_cookie, got 'source_ip'"),
    ("load_balancing.algorithm.type", "random", "expected one of round_robin, least_outstanding_requests, "
     "got 'random'"),
    ("stickiness.app_cookie.cookie_name", "AWSALBAPP-0", "the names AWSALB, AWSALBAPP and AWSALBTG are reserved "
     "for the load balancer's own cookies, got 'AWSALBAPP-0'"),
    ("load_balancing.cross_zone.enabled", "false", "target group attribute load_balancing.cross_zone.enabled is "
     "not supported yet for an Application Load Balancer's groups: the load balancer always balances across zones"),
    ("proxy_protocol_v2.enabled", "true", "unknown target group attribute 'proxy_protocol_v2.enabled'"),
])  # fmt: skip
def test_alb_target_group_attributes_are_checked(key, value, reason):
    text = with_web_group(f"    TargetGroupAttributes:\n      {key}: {value}\n")
    assert refused_at(text, f"target_groups.web.TargetGroupAttributes.{key}").startswith(reason)


def test_weighted_random_is_refused_with_the_reason():
    text = with_web_group("    TargetGroupAttributes:\n      load_balancing.algorithm.type: weighted_random\n")
    reason = refused_at(text, "target_groups.web.TargetGroupAttributes.load_balancing.algorithm.type")
    assert reason.startswith("weighted_random is not supported")


def test_slow_start_works_with_round_robin_only():
    text = with_web_group("    TargetGroupAttributes:\n      slow_start.duration_seconds: 30\n"
                          "      load_balancing.algorithm.type: least_outstanding_requests\n")
    reason = refused_at(text, "target_groups.web.TargetGroupAttributes.slow_start.duration_seconds")
    assert reason.startswith("slow start (slow_start.duration_seconds 30) works with round_robin only")


def test_app_cookie_stickiness_needs_the_cookie_name():
    text = with_web_group("    TargetGroupAttributes:\n      stickiness.enabled: true\n      stickiness.type: app_cookie\n")
    reason = refused_at(text, "target_groups.web.TargetGroupAttributes.stickiness.type")
    assert reason == "app_cookie stickiness follows the application's cookie: set stickiness.app_cookie.cookie_name"
    text = text.replace("stickiness.type: app_cookie\n", "stickiness.type: app_cookie\n"
                        "      stickiness.app_cookie.cookie_name: SESSION\n")
    assert load(text).target_groups["web"].attributes["stickiness.app_cookie.cookie_name"] == "SESSION"


def test_alb_target_group_attributes_in_range_load():
    text = with_web_group("    TargetGroupAttributes:\n      slow_start.duration_seconds: 900\n"
                          "      deregistration_delay.timeout_seconds: 0\n"
                          "      stickiness.lb_cookie.duration_seconds: 604800\n")
    attributes = load(text).target_groups["web"].attributes
    assert (attributes["slow_start.duration_seconds"], attributes["deregistration_delay.timeout_seconds"]) == \
        ("900", "0")


def test_https_target_groups_and_ip_targets_are_allowed_lambda_is_not():
    group = load(edit("  web-v2:\n    Protocol: HTTP", "  web-v2:\n    Protocol: HTTPS")).target_groups["web-v2"]
    assert group.protocol == "HTTPS"
    reason = refused_at(with_web_group("    TargetType: lambda\n"), "target_groups.web.TargetType")
    assert reason == "lambda targets are not supported yet: the lab has no Lambda"


# -- certificates


PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def with_files(cert: str, key: str = "certs/own.key") -> str:
    return edit("  site: {DomainName", f"  own: {{CertificateFile: '{cert}', PrivateKeyFile: '{key}'}}\n  site: {{DomainName")


def lab_dir(tmp_path):
    (tmp_path / "certs").mkdir(parents=True)
    (tmp_path / "certs" / "own.pem").write_text(PEM_CERT)
    (tmp_path / "certs" / "own.key").write_text(PEM_KEY)
    return tmp_path


def load_in(directory, text: str) -> Lab:
    return load_lab_text(text, str(directory / "lab.yaml"), name="t")


def refused_in(directory, text: str, key_path: str) -> str:
    with pytest.raises(LabFileError) as info:
        load_in(directory, text)
    assert info.value.key_path == key_path, (info.value.key_path, info.value.reason)
    return info.value.reason


def test_certificate_files_are_relative_to_the_lab_file(tmp_path):
    directory = lab_dir(tmp_path)
    cert = load_in(directory, with_files("certs/own.pem")).certificates["own"]
    assert cert.certificate_file == str((directory / "certs" / "own.pem").resolve())
    assert cert.private_key_file == str((directory / "certs" / "own.key").resolve())
    assert cert.domain_name is None


def test_certificate_file_outside_the_lab_directory_is_refused_unless_absolute(tmp_path):
    directory = lab_dir(tmp_path / "lab")
    outside = tmp_path / "outside.pem"
    outside.write_text(PEM_CERT)
    reason = refused_in(directory, with_files("../outside.pem"), "certificates.own.CertificateFile")
    assert reason.startswith("'../outside.pem' leads outside the lab file's directory")
    assert load_in(directory, with_files(str(outside))).certificates["own"].certificate_file == str(outside)


def test_certificate_symlink_out_of_the_lab_directory_is_refused(tmp_path):
    directory = lab_dir(tmp_path / "lab")
    (tmp_path / "outside.pem").write_text(PEM_CERT)
    (directory / "certs" / "link.pem").symlink_to(tmp_path / "outside.pem")
    reason = refused_in(directory, with_files("certs/link.pem"), "certificates.own.CertificateFile")
    assert "leads outside the lab file's directory" in reason


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null"])
def test_certificate_from_a_special_file_is_refused(tmp_path, special):
    reason = refused_in(lab_dir(tmp_path), with_files(special), "certificates.own.CertificateFile")
    assert reason == f"certificate file {special} is not a regular file"


def test_certificate_from_a_fifo_is_refused_without_blocking(tmp_path):
    import os
    directory = lab_dir(tmp_path)
    os.mkfifo(directory / "certs" / "fifo.pem")
    reason = refused_in(directory, with_files("certs/fifo.pem"), "certificates.own.CertificateFile")
    assert reason.endswith("is not a regular file")


def test_certificate_files_must_hold_pem_and_be_small(tmp_path):
    directory = lab_dir(tmp_path)
    (directory / "certs" / "big.pem").write_text(PEM_CERT + "x" * 70000)
    reason = refused_in(directory, with_files("certs/big.pem"), "certificates.own.CertificateFile")
    assert reason.endswith("is larger than 64 KiB")
    reason = refused_in(directory, with_files("certs/own.key", "certs/own.pem"), "certificates.own.CertificateFile")
    assert reason.endswith("does not hold a PEM certificate (-----BEGIN CERTIFICATE-----)")
    reason = refused_in(directory, with_files("certs/own.pem", "certs/own.pem"), "certificates.own.PrivateKeyFile")
    assert "does not hold a PEM private key" in reason and "MIIB" not in reason


def test_missing_certificate_file_is_refused(tmp_path):
    reason = refused_in(lab_dir(tmp_path), with_files("certs/none.pem"), "certificates.own.CertificateFile")
    assert reason.startswith("cannot read certificate file") and "No such file" in reason


def test_certificate_needs_a_domain_name_or_both_files():
    reason = refused_at(edit("  site: {DomainName: www.example.com, ", "  site: {"), "certificates.site.DomainName")
    assert reason.startswith("required key is missing")
    reason = refused_at(edit("  site: {DomainName", "  own: {CertificateFile: a.pem}\n  site: {DomainName"),
                        "certificates.own.PrivateKeyFile")
    assert reason.startswith("required key is missing: an imported certificate needs")


def test_certificate_domain_names_are_checked():
    reason = refused_at(edit("DomainName: www.example.com", "DomainName: 'www example'"), "certificates.site.DomainName")
    assert reason == "'www example' is not a domain name like www.example.com or *.example.com"
    reason = refused_at(edit('["*.example.com"]', '["a.*.example.com"]'), "certificates.site.SubjectAlternativeNames[0]")
    assert "is not a domain name" in reason


def test_listener_certificate_must_be_a_certificate():
    reason = refused_at(edit("CertificateArn: site", "CertificateArn: web"), "listeners.https.Certificates[0].CertificateArn")
    assert reason == "'web' is a target group, not a certificate"


def test_listener_certificate_by_arn():
    arn = load().certificates["site"].arn
    assert load(edit("CertificateArn: site", f"CertificateArn: '{arn}'")).listeners["https"].certificate == "site"


def test_alb_takes_at_most_five_security_groups_as_an_eni_does():
    groups = "".join(f"  sg{i}: {{VpcId: main, GroupDescription: g}}\n" for i in range(6))
    text = edit("security_groups:\n", "security_groups:\n" + groups)
    text = edit("SecurityGroups: [alb-sg]", "SecurityGroups: [sg0, sg1, sg2, sg3, sg4, sg5]", text)
    reason = refused_at(text, "load_balancers.web-alb.SecurityGroups[5]")
    assert reason.startswith("load balancer web-alb's network interfaces have 6 security groups, over AWS's quota")


def test_alias_to_an_alb_answers_its_nodes_and_it_has_no_zonal_names():
    zone = """hosted_zones:
  z:
    Name: example.local
    VPCs: [main]
    RecordSets:
      - {Name: www.example.local, Type: A, AliasTarget: {DNSName: web-alb}}
"""
    text = edit("  main: {CidrBlock: 10.0.0.0/16}", "  main: {CidrBlock: 10.0.0.0/16, EnableDnsHostnames: true}") + zone
    lab = load(text)
    record = lab.hosted_zones["z"].records[0]
    lb = lab.load_balancers["web-alb"]
    assert record.alias_target == lb.dns_name
    assert record.values == tuple(str(n.public_ip) for n in lb.nodes)
    zonal = ALB.replace("DNSName: web-alb", "") + zone.replace("DNSName: web-alb", f"DNSName: us-east-1a.{lb.dns_name}")
    zonal = edit("  main: {CidrBlock: 10.0.0.0/16}", "  main: {CidrBlock: 10.0.0.0/16, EnableDnsHostnames: true}",
                 zonal)
    refused(zonal)
