"""Application Load Balancer behaviour (reference §4), with real HTTP from an internet host
through HAProxy on the ALB's nodes, to the test pages of two web instances (examples/alb.yaml)."""
from __future__ import annotations

import email.utils
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RunningLab, lab_environment, lab_file_needs, skip_unless_doctor_finds, target_states, wait_for

pytestmark = pytest.mark.lab
LAB = Path(__file__).resolve().parents[2] / "examples" / "alb.yaml"
WEB = {"web-1", "web-2"}


@pytest.fixture(scope="module")
def alb(tmp_path_factory):
    skip_unless_doctor_finds(lab_file_needs(LAB, "alb"))
    lab = RunningLab("alb", lab_environment(tmp_path_factory.mktemp("home")))
    lab.vpclab("up", str(LAB), "--name", "alb", timeout=180)
    try:
        wait_for(lambda: target_states(lab, "web") == {"web-1": "healthy", "web-2": "healthy"}, 60,
                 "web targets healthy")
        yield lab
    finally:
        lab.vpclab("down", "--lab", "alb", check=False, timeout=60)


def _node_ip(lab) -> str:
    lb = next(b for b in lab.status()["load_balancers"] if b["name"] == "web-alb")
    return lb["nodes"][0]["public_ip"]


def get(lab, path: str = "/", headers: dict | None = None, cookies: str | None = None) -> tuple[int, dict, str]:
    """One request from the internet host to the ALB's Elastic IP: status, headers (lower-case), body."""
    args = " ".join(f"-H '{k}: {v}'" for k, v in (headers or {}).items())
    if cookies:
        args += f" -b {cookies} -c {cookies}"
    r = lab.sh("outside", f"curl -si --max-time 5 {args} 'http://{_node_ip(lab)}{path}'", check=False)
    head, _, body = r.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    if not lines:
        return 0, {}, ""
    status = int(lines[0].split()[1])
    fields: dict = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        fields.setdefault(k.strip().lower(), []).append(v.strip())
    return status, fields, body


def served_by(body: str) -> str:
    """The instance named by its test page (the 404 page names it too)."""
    for line in body.splitlines():
        if line.startswith("not found on "):
            return line.split()[3]
        if line.startswith("web-"):
            return line.split()[0]
    return ""


def test_repeated_requests_alternate_between_the_two_web_servers(alb):
    names = [served_by(get(alb)[2]) for _ in range(6)]
    assert set(names) == WEB
    assert all(a != b for a, b in zip(names, names[1:])), names  # round robin


def test_path_rule_sends_api_requests_to_its_own_target_group(alb):
    for _ in range(4):
        status, _, body = get(alb, "/api/users?id=1")
        assert status == 404 and served_by(body) == "web-2"  # the api group holds web-2 alone


def test_host_rule_matches_any_case_and_its_wildcard_needs_a_subdomain(alb):
    for _ in range(4):
        assert served_by(get(alb, headers={"Host": "ADMIN.Example.com"})[2]) == "web-1"
    bare = {served_by(get(alb, headers={"Host": "example.com"})[2]) for _ in range(4)}
    assert bare == WEB  # `*.example.com` does not match example.com: the default rule


def test_redirect_keeps_host_path_and_query(alb):
    status, headers, _ = get(alb, "/old/a/b?x=1")
    assert status == 301
    assert headers["location"] == [f"https://{_node_ip(alb)}/new/old/a/b?x=1"]
    # a host the priority-15 host rule matches is forwarded before the redirect's rule 20 is tried
    assert get(alb, "/old/a", headers={"Host": "www.example.com"})[0] == 404


def test_fixed_response_answers_from_the_load_balancer(alb):
    status, headers, body = get(alb, "/ping")
    assert (status, body) == (200, "pong")
    assert headers["content-type"] == ["text/plain"]


def test_no_registered_target_is_503(alb):
    assert get(alb, "/nobody/x")[0] == 503


def test_a_target_that_resets_the_connection_is_502(alb):
    assert get(alb, "/reset/x")[0] == 502


def test_the_target_sees_x_forwarded_for_with_the_clients_address(alb):
    outside = next(h for h in alb.status()["internet_hosts"] if h["name"] == "outside")["ip"]
    body = get(alb)[2]
    assert f"x-forwarded-for: {outside}" in body.splitlines()


def _awsalb(headers: dict) -> tuple[str, float]:
    """The AWSALB cookie a response sets: its value and its Expires (epoch seconds)."""
    cookie = next(c for c in headers["set-cookie"] if c.startswith("AWSALB="))
    fields = dict(f.strip().partition("=")[::2] for f in cookie.split(";"))
    return fields["AWSALB"], email.utils.parsedate_to_datetime(fields["Expires"]).timestamp()


def test_awsalb_pins_a_client_and_moves_it_when_its_target_is_deregistered(alb):
    jar = "/tmp/alb-test-cookies"
    alb.sh("outside", f"rm -f {jar}")
    status, headers, body = get(alb, cookies=jar)
    assert status == 200 and any(c.startswith("AWSALB=") for c in headers["set-cookie"])
    assert any(c.startswith("AWSALBCORS=") and "SameSite=None; Secure" in c for c in headers["set-cookie"])
    issued = _awsalb(headers)
    # AWS's Expires: 7 days ahead, whatever the group's duration (1 day here), and sent again
    # on each response naming the same target (HAProxy's value: target|last seen|first seen)
    assert abs(issued[1] - (time.time() + 7 * 86400)) < 3600, issued
    again = _awsalb(get(alb, cookies=jar)[1])
    assert again[0].split("|")[0] == issued[0].split("|")[0] and again[1] >= issued[1]
    pinned = served_by(body)
    assert {served_by(get(alb, cookies=jar)[2]) for _ in range(5)} == {pinned}
    other = (WEB - {pinned}).pop()
    alb.vpclab("deregister", "--lab", alb.name, "web", pinned)
    try:
        wait_for(lambda: {served_by(get(alb, cookies=jar)[2]) for _ in range(3)} == {other}, 20,
                 f"the client moved from {pinned} to {other}")
        assert {served_by(get(alb, cookies=jar)[2]) for _ in range(3)} == {other}  # and stays there
    finally:
        alb.vpclab("register", "--lab", alb.name, "web", pinned)
        wait_for(lambda: target_states(alb, "web").get(pinned) == "healthy", 60, f"{pinned} healthy again")


def test_targets_show_aws_health_states_and_status_shows_the_alb(alb):
    out = alb.vpclab("targets", "--lab", alb.name, "web").stdout
    assert out.count("healthy") >= 2
    lb = next(b for b in alb.status()["load_balancers"] if b["name"] == "web-alb")
    assert lb["type"] == "application" and len(lb["nodes"]) == 2
    assert all(n["public_ip"] for n in lb["nodes"])
    engines = [e for e in alb.status()["engines"] if e["kind"] == "alb_node"]
    assert len(engines) == 2 and all(e["state"] == "running" for e in engines)


def test_https_listener_answers_with_the_lab_cas_certificate_over_http2(alb):
    lb = next(b for b in alb.status()["load_balancers"] if b["name"] == "web-alb")
    ca, ip = lb["ca_certificate"], _node_ip(alb)
    r = alb.sh("outside", f"curl -s --max-time 5 --cacert {ca} --resolve www.example.com:443:{ip} "
                          f"-w 'http=%{{http_version}}' https://www.example.com/", check=False)
    assert r.returncode == 0, r.stderr
    assert served_by(r.stdout) in WEB and "x-forwarded-proto: https" in r.stdout
    assert r.stdout.endswith("http=2")  # routing.http2.enabled: h2 by ALPN
    untrusted = alb.sh("outside", f"curl -s --max-time 5 --resolve www.example.com:443:{ip} https://www.example.com/",
                       check=False)
    assert untrusted.returncode != 0  # the lab CA, not a public one, signs it


def test_status_counts_requests_and_elb_errors_with_cloudwatch_names(alb):
    def metrics():
        return next(b for b in alb.status()["load_balancers"] if b["name"] == "web-alb")["metrics"]
    before = metrics()
    assert get(alb)[0] == 200 and get(alb, "/nobody/x")[0] == 503
    after = metrics()
    assert after["RequestCount"] >= before["RequestCount"] + 2
    assert after["HTTPCode_ELB_5XX_Count"] >= before["HTTPCode_ELB_5XX_Count"] + 1
    assert after["HTTPCode_Target_2XX_Count"] >= before["HTTPCode_Target_2XX_Count"] + 1


def test_a_live_attribute_change_reloads_haproxy_without_failing_a_request(alb):
    ip = _node_ip(alb)
    loop = ("for i in $(seq 60); do curl -s -o /dev/null --max-time 5 -w '%{http_code} ' "
            f"http://{ip}/; sleep 0.05; done")
    traffic = subprocess.Popen([sys.executable, "-m", "vpclab", "exec", "--lab", alb.name, "outside", "--",
                                "sh", "-c", loop], env=alb.env, stdout=subprocess.PIPE, text=True)
    try:
        alb.vpclab("modify", "--lab", alb.name, "web-alb", "routing.http.xff_header_processing.mode=remove")
        codes = traffic.communicate(timeout=120)[0].split()
        assert codes and set(codes) == {"200"}, codes  # no request failed across the reload
        # the new mode, once the reloaded HAProxy's new worker has taken the listeners over
        wait_for(lambda: "x-forwarded-for:" not in get(alb)[2], 20, "X-Forwarded-For removed")
    finally:
        traffic.kill()
        alb.vpclab("modify", "--lab", alb.name, "web-alb", "routing.http.xff_header_processing.mode=append")


def test_all_targets_unhealthy_fail_open_with_the_reason_code(alb):
    wait_for(lambda: target_states(alb, "failing") == {"web-1": "unhealthy"}, 60, "web-1 unhealthy in failing")
    out = alb.vpclab("targets", "--lab", alb.name, "failing").stdout
    assert "Target.ResponseCodeMismatch" in out and "[404]" in out
    lb = next(b for b in alb.status()["load_balancers"] if b["name"] == "web-alb")
    assert lb["metrics"]["TargetGroups"]["failing"] == {"HealthyHostCount": 0, "UnHealthyHostCount": 1}
    status, _, body = get(alb, "/fail-open/x")
    assert status == 404 and served_by(body) == "web-1"  # the target's own answer: routed to anyway


def test_rules_change_live_create_modify_delete(alb):
    conditions = '[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/live/*"]}}]'
    fixed = ('[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "418", '
             '"ContentType": "text/plain", "MessageBody": "teapot"}}]')
    alb.vpclab("create-rule", "--lab", alb.name, "http", "--priority", "5", "--name", "live",
               "--conditions", conditions, "--actions", fixed)
    try:
        wait_for(lambda: get(alb, "/live/x")[::2] == (418, "teapot"), 20, "the new rule answers")
        alb.vpclab("modify-rule", "--lab", alb.name, "live",
                   "--actions", '[{"Type": "forward", "TargetGroupArn": "api"}]')
        wait_for(lambda: served_by(get(alb, "/live/x")[2]) == "web-2" and get(alb, "/live/x")[0] == 404, 20,
                 "the modified rule forwards to api (web-2)")
    finally:
        alb.vpclab("delete-rule", "--lab", alb.name, "live", check=False)
    wait_for(lambda: {served_by(get(alb, "/live/x")[2]) for _ in range(4)} == WEB, 20,
             "the default rule again, over both web servers")


def test_access_logs_enabled_live_land_in_the_lab_state_directory(alb):
    alb.vpclab("modify", "--lab", alb.name, "web-alb", "access_logs.s3.enabled=true")
    try:
        lb = next(b for b in alb.status()["load_balancers"] if b["name"] == "web-alb")
        path = Path(lb["access_log"])

        def logged():
            get(alb, "/ping")
            return path.exists() and any('"GET http' in line and "/ping" in line
                                         for line in path.read_text().splitlines())
        wait_for(logged, 30, f"an entry for /ping in {path}")
    finally:
        alb.vpclab("modify", "--lab", alb.name, "web-alb", "access_logs.s3.enabled=false")
    # turned off live: the receiver stops (its socket goes) and requests add no entry
    sockets = path.parent.parent  # <state>/alb: each node's log socket sits there while it receives
    wait_for(lambda: not list(sockets.glob("*-log.sock")), 30, "the access-log receivers stopped")
    entries = len(path.read_text().splitlines())
    for _ in range(3):
        assert get(alb, "/ping")[0] == 200
    assert len(path.read_text().splitlines()) == entries


def test_deregistration_ends_early_when_nothing_is_in_flight(alb):
    alb.vpclab("modify", "--lab", alb.name, "web", "deregistration_delay.timeout_seconds=300")
    alb.vpclab("deregister", "--lab", alb.name, "web", "web-2")
    try:
        assert target_states(alb, "web").get("web-2") in ("draining", None)
        # 300 s of delay, but an idle target leaves as soon as the ALB sees nothing in flight
        wait_for(lambda: "web-2" not in target_states(alb, "web"), 20, "web-2 gone before its delay")
        assert {served_by(get(alb)[2]) for _ in range(4)} == {"web-1"}
    finally:
        alb.vpclab("register", "--lab", alb.name, "web", "web-2")
        alb.vpclab("modify", "--lab", alb.name, "web", "deregistration_delay.timeout_seconds=5")
        wait_for(lambda: target_states(alb, "web").get("web-2") == "healthy", 60, "web-2 healthy again")


def test_the_alb_dns_name_resolves_to_its_nodes_from_the_internet(alb):
    lb = next(b for b in alb.status()["load_balancers"] if b["name"] == "web-alb")
    assert lb["dns_name"].startswith("web-alb-") and lb["dns_name"].endswith(".us-east-1.elb.amazonaws.com")
    assert served_by(alb.curl("outside", f"http://{lb['dns_name']}/")) in WEB


def test_weighted_forward_spreads_over_groups_and_awsalbtg_keeps_a_client_on_one(alb):
    forward = ('[{"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": "api", "Weight": 1}, '
               '{"TargetGroupArn": "admin", "Weight": 1}], '
               '"TargetGroupStickinessConfig": {"Enabled": true, "DurationSeconds": 3600}}}]')
    alb.vpclab("create-rule", "--lab", alb.name, "http", "--priority", "6", "--name", "weighted",
               "--conditions", '[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/tg/*"]}}]',
               "--actions", forward)
    try:
        # api holds web-2 alone, admin web-1 alone: the page says which group a request went to
        wait_for(lambda: {served_by(get(alb, "/tg/x")[2]) for _ in range(12)} == WEB, 30, "both groups drawn")
        jar = "/tmp/alb-test-tg-cookies"
        alb.sh("outside", f"rm -f {jar}")
        status, headers, body = get(alb, "/tg/x", cookies=jar)
        assert any(c.startswith("AWSALBTG=") for c in headers["set-cookie"])
        assert {served_by(get(alb, "/tg/x", cookies=jar)[2]) for _ in range(6)} == {served_by(body)}
    finally:
        alb.vpclab("delete-rule", "--lab", alb.name, "weighted", check=False)


def test_a_node_whose_haproxy_dies_is_started_again_and_serves(alb):
    def engine():
        node = next(b for b in alb.status()["load_balancers"] if b["name"] == "web-alb")["nodes"][0]
        return next(e for e in alb.status()["engines"]
                    if e["kind"] == "alb_node" and e["namespace"].endswith(node["az"]))
    before = engine()
    alb.sh(before["namespace"], f"kill {before['pid']}")  # the master: AWS's node never just stops
    wait_for(lambda: engine()["restarts"] == before["restarts"] + 1 and engine()["state"] == "running", 30,
             "the ALB node started again")
    wait_for(lambda: {served_by(get(alb)[2]) for _ in range(4)} == WEB, 30, "the node serves both targets again")


def test_header_method_query_and_source_ip_conditions_are_anded_as_aws_matches_them(alb):
    outside = next(h for h in alb.status()["internet_hosts"] if h["name"] == "outside")["ip"]
    conditions = json.dumps([
        {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Env", "Values": ["be*a"]}},
        {"Field": "http-request-method", "HttpRequestMethodConfig": {"Values": ["GET"]}},
        {"Field": "query-string", "QueryStringConfig": {"Values": [{"Key": "v", "Value": "1"}]}},
        {"Field": "source-ip", "SourceIpConfig": {"Values": [f"{outside}/32"]}}])
    fixed = json.dumps([{"Type": "fixed-response", "FixedResponseConfig": {
        "StatusCode": "200", "ContentType": "text/plain", "MessageBody": "all four matched"}}])
    alb.vpclab("create-rule", "--lab", alb.name, "http", "--priority", "7", "--name", "four",
               "--conditions", conditions, "--actions", fixed)
    try:
        wait_for(lambda: get(alb, "/c?V=1", headers={"x-env": "BETA"})[2] == "all four matched", 20,
                 "the rule matches (header name and value, query key and value: any case)")
        assert get(alb, "/c?v=2", headers={"X-Env": "beta"})[2] != "all four matched"  # query value differs
        assert get(alb, "/c?v=1", headers={"X-Env": "alpha"})[2] != "all four matched"  # header value differs
        assert get(alb, "/c?v=1")[2] != "all four matched"  # no header
        alb.vpclab("modify-rule", "--lab", alb.name, "four", "--conditions", conditions.replace(
            f"{outside}/32", "10.99.0.0/16"))
        wait_for(lambda: get(alb, "/c?v=1", headers={"X-Env": "beta"})[2] != "all four matched", 20,
                 "another source range no longer matches the internet host (the TCP peer, not X-Forwarded-For)")
        assert get(alb, "/c?v=1", headers={"X-Env": "beta", "X-Forwarded-For": "10.99.0.1"})[2] != "all four matched"
    finally:
        alb.vpclab("delete-rule", "--lab", alb.name, "four", check=False)
