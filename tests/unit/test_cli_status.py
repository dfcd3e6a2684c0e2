"""`vpclab status` as a table: what a person reads first."""
from __future__ import annotations

from vpclab.cli.render import render_status


def status(nodes: list[dict]) -> dict:
    return {"lab": {"name": "lab", "region": "us-east-1", "account": "111122223333"},
            "instances": [], "nat_gateways": [], "internet_hosts": [], "target_groups": [],
            "vpc_endpoints": [],
            "load_balancers": [{"name": "gwlb", "type": "gateway", "nodes": nodes}]}


def node(az: str, counters: dict | None) -> dict:
    return {"az": az, "private_ip": "10.0.21.4", **({"counters": counters} if counters is not None else {})}


def test_the_load_balancer_table_says_whether_each_node_has_its_fast_path():
    table = render_status(status([
        node("us-east-1a", {"ActiveFlowCount": 3, "NewFlowCount": 5, "drops": {"oversize": 1},
                            "io": {"fast_path": {"flows": 4, "encap_hit": 10}}}),
        node("us-east-1b", {"ActiveFlowCount": 0, "NewFlowCount": 0, "drops": {},
                            "io": {"fast_path": {"off": "cannot load BPF programs here"}}}),
        node("us-east-1c", None),
    ]))
    rows = [line.split() for line in table.splitlines() if line.startswith("gwlb")]
    assert rows[0][-6:] == ["3", "5", "1", "on", "(4", "flows)"]
    assert rows[1][-4:] == ["0", "0", "0", "off"]
    assert rows[2][-4:] == ["-", "-", "0", "-"]


def test_an_alb_shows_its_name_listeners_metrics_ca_and_access_log():
    s = status([])
    s["load_balancers"] = [{
        "name": "web-alb", "type": "application", "scheme": "internet-facing",
        "dns_name": "web-alb-1.us-east-1.elb.amazonaws.com", "nodes": [node("us-east-1a", None)],
        "listeners": [{"protocol": "HTTP", "port": 80}, {"protocol": "HTTPS", "port": 443}],
        "metrics": {"RequestCount": 7, "HTTPCode_Target_2XX_Count": 5, "HTTPCode_ELB_5XX_Count": 2,
                    "TargetResponseTime": 0.004, "ActiveConnectionCount": 1},
        "ca_certificate": "/state/alb-certs/ca.pem", "access_log": "/state/alb/access-logs/web-alb.log"}]
    text = render_status(s)
    assert "web-alb: web-alb-1.us-east-1.elb.amazonaws.com (internet-facing; HTTP:80, HTTPS:443)" in text
    assert "RequestCount 7  HTTPCode_Target_2XX_Count 5  HTTPCode_ELB_5XX_Count 2" in text
    assert "curl --cacert /state/alb-certs/ca.pem" in text and "access log: /state/alb/access-logs/web-alb.log" in text
    row = next(line.split() for line in text.splitlines() if line.startswith("web-alb  "))
    assert row[-4:] == ["-", "-", "-", "-"]  # no flows: an ALB counts requests
