"""ALB-generated codes (reference §4.5) under the conditions AWS names, created for real in a
lab, and the access log (§4.6) those requests leave in the lab's state directory, in ALB's
field order. The client is an internet host; the ALB's idle timeout is 4 s so that a silent
client (408) and a silent target (504) take seconds, not a minute."""
from __future__ import annotations

import json
import re
import shlex
import uuid
from pathlib import Path

import pytest

from alb_harness import module_lab
from conftest import target_states, wait_for

pytestmark = pytest.mark.lab
NAME = "alb-errors"
IDLE = 4
LAB = """
lab: {region: us-east-1, account: "111122223333"}
vpcs:
  main: {CidrBlock: 10.0.0.0/16}
subnets:
  public-a: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.1.0/24}
  public-b: {VpcId: main, AvailabilityZone: b, CidrBlock: 10.0.2.0/24}
  private-a: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.11.0/24}
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
    SecurityGroupIngress:
      - {IpProtocol: tcp, FromPort: 80, ToPort: 80, CidrIp: 0.0.0.0/0}
      - {IpProtocol: tcp, FromPort: 443, ToPort: 443, CidrIp: 0.0.0.0/0}
  web-sg:
    VpcId: main
    SecurityGroupIngress: [{IpProtocol: tcp, FromPort: 80, ToPort: 8081, SourceSecurityGroupId: alb-sg}]
instances:
  web-1:
    SubnetId: private-a
    PrivateIpAddress: 10.0.11.10
    SecurityGroupIds: [web-sg]
    Run:
      # 8080 reads a byte of the request and resets the connection
      - "socat TCP4-LISTEN:8080,reuseaddr,fork,linger=0 SYSTEM:'head -c 1 >/dev/null'"
      # 8081 reads the request and never answers (for a while longer than any test waits)
      - "socat TCP4-LISTEN:8081,reuseaddr,fork SYSTEM:'cat >/dev/null & sleep 120'"
certificates:
  site: {DomainName: www.example.com}
load_balancers:
  web-alb:
    Type: application
    Scheme: internet-facing
    Subnets: [public-a, public-b]
    SecurityGroups: [alb-sg]
    LoadBalancerAttributes:
      idle_timeout.timeout_seconds: 4  # IDLE
      access_logs.s3.enabled: true
target_groups:
  web: {Protocol: HTTP, Port: 80, VpcId: main, TargetType: instance, HealthCheckIntervalSeconds: 5,
         HealthyThresholdCount: 2, Targets: [web-1]}
  resets: {Protocol: HTTP, Port: 8080, VpcId: main, TargetType: instance, HealthCheckPort: "80",
            HealthCheckIntervalSeconds: 5, HealthyThresholdCount: 2, Targets: [web-1]}
  silent: {Protocol: HTTP, Port: 8081, VpcId: main, TargetType: instance, HealthCheckPort: "80",
            HealthCheckIntervalSeconds: 5, HealthyThresholdCount: 2, Targets: [web-1]}
  nobody: {Protocol: HTTP, Port: 80, VpcId: main, TargetType: instance, Targets: []}
listeners:
  http: {LoadBalancerArn: web-alb, Protocol: HTTP, Port: 80, DefaultActions: [{Type: forward, TargetGroupArn: web}]}
  https:                  # HTTP/2 (routing.http2.enabled, the default) to the silent target
    LoadBalancerArn: web-alb
    Protocol: HTTPS
    Port: 443
    Certificates: [{CertificateArn: site}]
    DefaultActions: [{Type: forward, TargetGroupArn: silent}]
listener_rules:
  reset-rule:
    ListenerArn: http
    Priority: 10
    Conditions: [{Field: path-pattern, PathPatternConfig: {Values: ["/reset/*"]}}]
    Actions: [{Type: forward, TargetGroupArn: resets}]
  silent-rule:
    ListenerArn: http
    Priority: 20
    Conditions: [{Field: path-pattern, PathPatternConfig: {Values: ["/silent/*"]}}]
    Actions: [{Type: forward, TargetGroupArn: silent}]
  nobody-rule:
    ListenerArn: http
    Priority: 30
    Conditions: [{Field: path-pattern, PathPatternConfig: {Values: ["/nobody/*"]}}]
    Actions: [{Type: forward, TargetGroupArn: nobody}]
internet:
  hosts:
    outside: {}
"""
FIELDS = ("type time elb client:port target:port request_processing_time target_processing_time "
          "response_processing_time elb_status_code target_status_code received_bytes sent_bytes request "
          "user_agent ssl_cipher ssl_protocol target_group_arn trace_id domain_name chosen_cert_arn "
          "matched_rule_priority request_creation_time actions_executed redirect_url error_reason "
          "target:port_list target_status_code_list classification classification_reason").split()

# Sends raw bytes, optionally closes after `close_after` seconds, and reports what came back:
# {"status": int or 0, "server": str, "seconds": float}.
RAW = r"""
import json, socket, sys, time
host, data, close_after, wait = sys.argv[1], sys.argv[2].encode().decode("unicode_escape").encode("latin-1"), float(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((host, 80), timeout=5)
start = time.monotonic()
s.sendall(data)
got = b""
s.settimeout(close_after if close_after > 0 else wait)
try:
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
except socket.timeout:
    pass
s.close()
head = got.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
status = int(head[0].split()[1]) if head[0].startswith("HTTP/") else 0
server = next((h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("server:")), "")
print(json.dumps({"status": status, "server": server, "seconds": time.monotonic() - start}))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with module_lab(tmp_path_factory, LAB, NAME) as running:
        for group in ("web", "resets", "silent"):
            wait_for(lambda: target_states(running, group) == {"web-1": "healthy"}, 90, f"{group} healthy")
        yield running


def node_ip(lab) -> str:
    lb = next(b for b in lab.status()["load_balancers"] if b["name"] == "web-alb")
    return lb["nodes"][0]["public_ip"]


def curl(lab, path: str, *options: str, timeout: float = 20) -> tuple[int, str]:
    """(status, Server header) of one request from the internet host."""
    args = " ".join(shlex.quote(o) for o in options)
    r = lab.sh("outside", f"curl -s -o /dev/null -D - --max-time {timeout} {args} "
                          f"{shlex.quote(f'http://{node_ip(lab)}{path}')}", check=False, timeout=timeout + 30)
    head = r.stdout.replace("\r\n", "\n").split("\n")
    status = int(head[0].split()[1]) if head and head[0].startswith("HTTP/") else 0
    server = next((h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("server:")), "")
    return status, server


def raw(lab, data: str, close_after: float = 0, wait: float = 20) -> dict:
    r = lab.sh("outside", f"python3 -c {shlex.quote(RAW)} {node_ip(lab)} {shlex.quote(data)} {close_after} {wait}",
               timeout=wait + 30)
    return json.loads(r.stdout)


def access_log(lab) -> Path:
    lb = next(b for b in lab.status()["load_balancers"] if b["name"] == "web-alb")
    where = lb.get("access_log") or lb.get("access_log_file")
    return Path(where) if where else lab.home / "labs" / NAME / "alb" / "access-logs" / "web-alb.log"


def entries_for(lab, marker: str, count: int = 1) -> list[dict]:
    """The access-log entries whose request names `marker`, once `count` have landed."""
    def found():
        path = access_log(lab)
        lines = path.read_text().splitlines() if path.exists() else []
        hits = [dict(zip(FIELDS, shlex.split(line))) for line in lines if marker in line]
        return hits if len(hits) >= count else None
    return wait_for(found, 30, f"{count} access-log entries for {marker}")


def marker() -> str:
    return uuid.uuid4().hex[:12]


# HAProxy 2.6 answers a request it cannot parse, or one whose headers never end, from its H1
# layer before any proxy rule runs, and with its own page: `errorfile` does not reach those two
# (HAProxy issue 3032). The code is ALB's; the page and Server header are HAProxy's.

def test_a_malformed_request_is_400_from_the_load_balancer(lab):
    got = raw(lab, "GARBAGE\\r\\n\\r\\n")
    assert got["status"] == 400 and got["server"] != "vpclab"  # not the target's test page


def test_trace_is_405_refused_before_any_rule(lab):
    mark = marker()
    assert curl(lab, f"/?q={mark}", "-X", "TRACE") == (405, "awselb/2.0")
    (e,) = entries_for(lab, mark)
    # refused before the rules: no matched rule, as AWS logs it ("-" for an error outside them)
    assert (e["elb_status_code"], e["target_status_code"], e["matched_rule_priority"]) == ("405", "-", "-")


def test_a_client_silent_past_the_idle_timeout_gets_408(lab):
    got = raw(lab, "GET / HTTP/1.1\\r\\nHost: www.example.com\\r\\n", wait=IDLE + 15)  # headers never end
    assert got["status"] == 408
    assert got["seconds"] >= IDLE - 0.5


def test_a_client_that_closes_before_the_answer_is_logged_460(lab):
    # Over HTTP/2, which HAProxy 2.6 keeps reading while a request waits: an HTTP/1.1 client's
    # close is seen only when the answer is written, and is logged as the target's outcome.
    mark = marker()
    r = lab.sh("outside", f"curl -sk --http2 --max-time 1 -o /dev/null -w '%{{http_version}} %{{http_code}}' "
                          f"https://{node_ip(lab)}/{mark}", check=False, timeout=30)
    assert r.returncode == 28 and r.stdout.split()[-1] == "000", r.stdout  # it gave up after 1 s
    (entry,) = entries_for(lab, mark)
    assert (entry["type"], entry["elb_status_code"], entry["target_status_code"]) == ("h2", "460", "-")
    assert entry["target:port"] == "10.0.11.10:8081" and entry["target_processing_time"] == "-1"
    assert entry["request"] == f"GET https://{node_ip(lab)}:443/{mark} HTTP/2.0"


def test_more_than_30_x_forwarded_for_entries_is_463(lab):
    assert curl(lab, "/", "-H", "X-Forwarded-For: " + ", ".join(["192.0.2.1"] * 31)) == (463, "awselb/2.0")
    assert curl(lab, "/", "-H", "X-Forwarded-For: " + ", ".join(["192.0.2.1"] * 30))[0] == 200


def test_a_target_that_resets_the_connection_is_502(lab):
    mark = marker()
    assert curl(lab, f"/reset/{mark}") == (502, "awselb/2.0")
    (entry,) = entries_for(lab, mark)
    assert (entry["elb_status_code"], entry["target_status_code"]) == ("502", "-")


def test_a_target_group_with_no_registered_target_is_503(lab):
    mark = marker()
    assert curl(lab, f"/nobody/{mark}") == (503, "awselb/2.0")
    (entry,) = entries_for(lab, mark)
    assert (entry["elb_status_code"], entry["target:port"]) == ("503", "-")
    assert (entry["request_processing_time"], entry["target_processing_time"],
            entry["response_processing_time"]) == ("-1", "-1", "-1")


def test_a_target_that_never_answers_is_504_after_the_idle_timeout(lab):
    mark = marker()
    assert curl(lab, f"/silent/{mark}", timeout=IDLE + 20) == (504, "awselb/2.0")
    (entry,) = entries_for(lab, mark)
    assert (entry["elb_status_code"], entry["target_status_code"], entry["target_processing_time"]) == \
        ("504", "-", "-1")


def test_the_access_log_has_alb_fields_in_order_for_a_forwarded_request(lab):
    mark = marker()
    assert curl(lab, f"/?q={mark}", "-A", "lab tester/1.0", "-H", "Host: www.example.com")[0] == 200
    (e,) = entries_for(lab, mark)
    outside = next(h["ip"] for h in lab.status()["internet_hosts"] if h["name"] == "outside")
    lb = next(b for b in lab.status()["load_balancers"] if b["name"] == "web-alb")
    group = next(g for g in lab.status()["target_groups"] if g["name"] == "web")
    assert e["type"] == "http"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", e["time"]) and e["request_creation_time"] <= e["time"]
    assert e["elb"] == "app/web-alb/" + lb["arn"].rsplit("/", 1)[1]
    assert e["client:port"].startswith(outside + ":") and e["target:port"] == "10.0.11.10:80"
    assert all(re.fullmatch(r"\d+\.\d{3}", e[k]) for k in
               ("request_processing_time", "target_processing_time", "response_processing_time"))
    assert (e["elb_status_code"], e["target_status_code"]) == ("200", "200")
    assert int(e["received_bytes"]) > 0 and int(e["sent_bytes"]) > 0
    assert e["request"] == f"GET http://www.example.com:80/?q={mark} HTTP/1.1"
    assert e["user_agent"] == "lab tester/1.0"
    assert (e["ssl_cipher"], e["ssl_protocol"], e["domain_name"], e["chosen_cert_arn"]) == ("-", "-", "-", "-")
    assert e["target_group_arn"] == group["arn"]
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24}", e["trace_id"])
    assert (e["matched_rule_priority"], e["actions_executed"], e["redirect_url"], e["error_reason"]) == \
        ("0", "forward", "-", "-")
    assert (e["target:port_list"], e["target_status_code_list"]) == ("10.0.11.10:80", "200")
    assert (e["classification"], e["classification_reason"]) == ("-", "-")
