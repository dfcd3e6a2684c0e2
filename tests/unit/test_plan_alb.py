"""Compiling an Application Load Balancer: a node namespace per AZ with its ENI in the VPC router
(behind the ALB's security groups), its Elastic IP through the internet gateway, its DNS name
through the resolvers, HAProxy needed, and `alb_node_config`, the engine's whole input (ALB.md)."""
from __future__ import annotations

import json

from test_model_alb import ALB, edit, load
from vpclab.doctor.needs import lab_needs
from vpclab.plan.common import alb_ns
from vpclab.plan.compile import compile_lab
from vpclab.plan.elbv2 import alb_node_config
from vpclab.plan.route53 import aws_dns_names


def test_each_alb_node_is_a_namespace_with_its_eni_and_an_alb_node_service():
    lab = load()
    wiring = compile_lab(lab)
    lb = lab.load_balancers["web-alb"]
    for node in lb.nodes:
        ns = wiring.namespace(alb_ns("web-alb", node.az))
        assert ns.kind == "alb"
        assert f"addr add {node.private_ip}/24 dev eth0" in ns.ip_batch
        assert f"route add default via {lab.subnets[node.subnet].router_ip} dev eth0" in ns.ip_batch
    services = [s for s in wiring.services if s.kind == "alb_node"]
    assert [(s.ns, dict(s.params)) for s in services] == [
        (alb_ns("web-alb", n.az), {"load_balancer": "web-alb", "availability_zone": n.az}) for n in lb.nodes]


def test_alb_node_enis_are_behind_the_albs_security_groups_in_the_router():
    lab = load()
    router = compile_lab(lab).namespace("router:main")
    for node in lab.load_balancers["web-alb"].nodes:
        chain = node.eni_id.replace("-", "_")
        to_node = router.nft.split(f"chain to_{chain} {{")[1].split("}")[0]
        # alb-sg lets clients in on 80 and 443 only; the node sends only from its own address
        assert "ip saddr 0.0.0.0/0 tcp dport 80 return" in to_node and "tcp dport 443 return" in to_node
        assert f'drop comment "ingress not allowed for {node.eni_id}"' in to_node
        assert f"chain from_{chain} {{" in router.nft
        assert f"{node.private_ip} : return" in router.nft  # the source check


def test_internet_facing_alb_nodes_elastic_ips_map_through_the_internet_gateway():
    lab = load()
    igw = compile_lab(lab).namespace("igw:igw")
    for node in lab.load_balancers["web-alb"].nodes:
        assert f"{node.public_ip} : {node.private_ip}" in igw.nft


def test_alb_dns_name_resolves_to_every_node_and_has_no_zonal_names():
    lab = load()
    lb = lab.load_balancers["web-alb"]
    names = dict(aws_dns_names(lab))
    assert names[lb.dns_name] == tuple((str(n.public_ip), "web-alb", n.az) for n in lb.nodes)
    assert not any(name.endswith("." + lb.dns_name) for name in names)


def test_internal_alb_dns_name_resolves_to_private_addresses():
    lab = load(edit("    Type: application\n", "    Type: application\n    Scheme: internal\n"))
    lb = lab.load_balancers["web-alb"]
    assert dict(aws_dns_names(lab))[lb.dns_name] == tuple((str(n.private_ip), "web-alb", n.az) for n in lb.nodes)


def test_a_lab_with_an_alb_needs_haproxy():
    assert "haproxy" in lab_needs(load())


def test_alb_node_config_is_json_with_the_contracts_keys():
    lab = load()
    config = alb_node_config(lab, "web-alb", "us-east-1b")
    assert json.loads(json.dumps(config)) == config
    node = lab.load_balancers["web-alb"].node_in("us-east-1b")
    assert {k: config[k] for k in ("load_balancer", "scheme", "availability_zone", "node_ip", "public_ip")} == {
        "load_balancer": "web-alb", "scheme": "internet-facing", "availability_zone": "us-east-1b",
        "node_ip": str(node.private_ip), "public_ip": str(node.public_ip)}
    assert config["dns_name"] == lab.load_balancers["web-alb"].dns_name
    assert config["attributes"]["idle_timeout.timeout_seconds"] == "60"
    assert [li["name"] for li in config["listeners"]] == ["http", "https"]


def test_rules_come_in_evaluation_order_with_the_default_rule_last():
    http = alb_node_config(load(), "web-alb", "us-east-1a")["listeners"][0]
    assert [(r["name"], r["priority"]) for r in http["rules"]] == [
        ("health", 5), ("api", 10), ("old", 20), ("default", "default")]
    default = http["rules"][-1]
    assert default["conditions"] == [] and default["arn"].split(":")[5].startswith("listener-rule/app/web-alb/")
    assert default["action"] == {"type": "forward", "target_groups": [{"name": "web", "weight": 1}],
                                 "stickiness": {"enabled": False, "duration_seconds": None}}


def test_conditions_and_actions_in_the_contracts_shape():
    rules = {r["name"]: r for r in alb_node_config(load(), "web-alb", "us-east-1a")["listeners"][0]["rules"]}
    assert rules["api"]["conditions"] == [
        {"field": "path-pattern", "values": ["/api/*"]},
        {"field": "host-header", "values": ["*.example.com"]},
        {"field": "http-header", "name": "X-Env", "values": ["beta"]},
        {"field": "query-string", "values": [{"key": "v", "value": "1"}]},
        {"field": "source-ip", "values": ["10.0.0.0/8"]},
    ]
    assert rules["old"]["action"] == {"type": "redirect", "protocol": "HTTPS", "host": "#{host}", "port": "443",
                                      "path": "/new/#{path}", "query": "#{query}", "status_code": 301}
    assert rules["health"]["action"] == {"type": "fixed-response", "status_code": 200, "content_type": "text/plain",
                                         "message_body": "pong"}


def test_https_listener_carries_its_certificate_and_weighted_groups():
    https = alb_node_config(load(), "web-alb", "us-east-1a")["listeners"][1]
    assert https["certificate"]["domain_name"] == "www.example.com"
    assert https["certificate"]["subject_alternative_names"] == ["*.example.com"]
    assert https["certificate"]["certificate_file"] is None
    assert https["rules"][-1]["action"] == {
        "type": "forward", "target_groups": [{"name": "web", "weight": 3}, {"name": "web-v2", "weight": 1}],
        "stickiness": {"enabled": True, "duration_seconds": 3600}}


def test_every_forwarded_group_with_attributes_health_check_and_targets():
    lab = load()
    groups = alb_node_config(lab, "web-alb", "us-east-1a")["target_groups"]
    assert list(groups) == ["api-v1", "web", "web-v2"]
    web = groups["web"]
    assert web["health_check"] == {"protocol": "HTTP", "port": "traffic-port", "path": "/", "interval_seconds": 30,
                                   "timeout_seconds": 5, "healthy_threshold": 5, "unhealthy_threshold": 2,
                                   "matcher": "200"}
    assert web["attributes"]["load_balancing.algorithm.type"] == "round_robin"
    assert web["attributes"]["deregistration_delay.timeout_seconds"] == "300"
    web_1 = lab.instances["web-1"]
    assert web["targets"][0] == {"id": web_1.id, "ip": str(web_1.private_ip), "port": 80, "az": "us-east-1a"}
    assert groups["api-v1"]["targets"] == [{"id": "10.0.11.4", "ip": "10.0.11.4", "port": 8080, "az": "us-east-1a"}]
