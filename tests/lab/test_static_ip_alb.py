"""Static IPs for an ALB (reference §5), with real traffic (examples/static-ip-alb.yaml): an
internet-facing NLB with an Elastic IP per AZ over an internal HTTPS ALB over two web
instances. The IP-sync function registers the ALB's node IPs, follows them when the nodes are
replaced without a request failing, and the targets see the client AWS says they see."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alb_harness import module_lab
from conftest import RunningLab, target_states, wait_for

pytestmark = pytest.mark.lab
LAB = Path(__file__).resolve().parents[2] / "examples" / "static-ip-alb.yaml"
EIPS = ("100.64.1.10", "100.64.1.11")  # the NLB's, one per AZ (SubnetMappings)
NLB_NODES = {"10.0.1.4", "10.0.2.4"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with module_lab(tmp_path_factory, LAB.read_text(), "sip") as running:
        wait_for(lambda: set(target_states(running, "web").values()) == {"healthy"}, 60, "web targets healthy")
        yield running


def invoke(lab: RunningLab, function: str = "alb-ip-sync") -> dict:
    return json.loads(lab.vpclab("invoke", "--lab", "sip", function, "--json").stdout)


def alb_ips(lab: RunningLab) -> set[str]:
    """The ALB's node IPs that DNS gives (scaled-out nodes' included)."""
    alb = next(b for b in lab.status()["load_balancers"] if b["name"] == "web-alb")
    return {ip for n in alb["nodes"] for ip in (n["private_ip"], *n["scaled_ips"])}


def page(lab: RunningLab, url: str) -> dict[str, str]:
    """The test page's `key: value` lines, through curl from the internet host ({} on failure)."""
    r = lab.sh("outside", f"curl -sk --max-time 5 {url}", check=False)
    if r.returncode != 0:
        return {}
    return dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)


def served(lab: RunningLab, group: str, ips: set[str]) -> bool:
    states = target_states(lab, group)
    return all(states.get(ip) == "healthy" for ip in ips)


@contextlib.contextmanager
def requests_during(lab: RunningLab, urls: list[str]):
    """A bounded client loop through `urls` while the body runs: every request must succeed."""
    loop = subprocess.Popen(
        [sys.executable, "-m", "vpclab", "exec", "--lab", "sip", "outside", "--", "sh", "-c",
         "for i in $(seq 1 300); do for url in " + " ".join(urls) + "; do "
         "curl -sk -o /dev/null -w \"%{http_code} $(date +%T.%N) connect=%{time_connect} tls=%{time_appconnect} "
         "$url\\n\" --max-time 5 $url; done; "
         "sleep 0.2; done"],
        env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield
    finally:
        time.sleep(1)
        os.killpg(loop.pid, signal.SIGTERM)  # the shell too, under the nsenters
        out, _ = loop.communicate(timeout=30)
    codes = [line.split()[0] for line in out.splitlines()]
    assert len(codes) >= 20, out
    failed = [f"#{i}: {line}" for i, line in enumerate(out.splitlines()) if not line.startswith("200 ")]
    assert not failed, f"{len(failed)} of {len(codes)} requests failed: {failed}"


def runs_after(lab: RunningLab, since: int, gone: set[str]) -> list[dict]:
    """Invoke the function until its runs after run `since` have deregistered `gone` (six runs at
    most: three must do it); those runs, oldest first. A scheduled run may be among them: what
    counts is their order."""
    for _ in range(6):
        history = [h for h in invoke(lab)["history"] if h["run"] > since]
        if gone <= {ip for h in history for ip in h["deregistered"]}:
            break
    return history


@contextlib.contextmanager
def resolver_silenced(lab: RunningLab):
    """The VPC resolver gets no query from the function (both in the router namespace): dropped on
    input, as a silent resolver would lose it (on output, sendto fails at once with EPERM)."""
    rules = ("add table ip sip_test\nadd chain ip sip_test in { type filter hook input priority 0; }\n"
             "add rule ip sip_test in udp dport 53 drop\n")
    lab.vpclab("exec", "--lab", "sip", "router:main", "--", "nft", "-f", "-", input=rules)
    try:
        yield
    finally:
        lab.vpclab("exec", "--lab", "sip", "router:main", "--", "nft", "delete", "table", "ip", "sip_test")


def test_the_function_registers_the_alb_ips_and_the_nlbs_fixed_ips_serve(lab):
    ips = alb_ips(lab)
    status = invoke(lab)
    assert status["last_run"]["ok"] and set(status["last_run"]["registered"]) == ips
    assert status["last_run"]["LoadBalancerIPCount"] == 2
    invoke(lab, "alb-ip-sync-pp2")
    wait_for(lambda: served(lab, "alb-ips", ips), 60, "the ALB's IPs healthy in alb-ips")
    names = set()
    for eip in EIPS:
        for _ in range(3):
            body = page(lab, f"https://{eip}/")
            assert body, f"no answer through {eip}"
            names.add(body["hostname"])
    assert names == {"ip-10-0-11-10.ec2.internal", "ip-10-0-12-10.ec2.internal"}


def test_ip_targets_show_the_nlb_node_as_the_client(lab):
    wait_for(lambda: served(lab, "alb-ips", alb_ips(lab)), 60, "alb-ips healthy")
    seen = {page(lab, f"https://{eip}/").get("x-forwarded-for") for eip in EIPS}
    assert seen == NLB_NODES  # client IP preservation is off for ip targets over TCP


def test_an_alb_target_group_passes_the_clients_address(lab):
    outside = next(h["ip"] for h in lab.status()["internet_hosts"] if h["name"] == "outside")
    wait_for(lambda: set(target_states(lab, "alb-target").values()) == {"healthy"}, 60, "alb-target healthy")
    for eip in EIPS:
        assert page(lab, f"https://{eip}:4443/").get("x-forwarded-for") == outside


def tls_errors(lab: RunningLab) -> int:
    alb = next(b for b in lab.status()["load_balancers"] if b["name"] == "web-alb")
    return alb["metrics"]["ClientTLSNegotiationErrorCount"]


def test_proxy_protocol_v2_toward_the_alb_fails_the_tls_handshake(lab):
    before = tls_errors(lab)
    for _ in range(5):
        r = lab.sh("outside", f"curl -sk --max-time 5 https://{EIPS[0]}:8443/", check=False)
        assert r.returncode == 35, (r.returncode, r.stdout, r.stderr)  # curl: TLS connect error
    # the group's own health checks come every 300 s at most: five at once are the clients'
    assert tls_errors(lab) - before >= 5


def test_status_shows_the_function(lab):
    text = lab.vpclab("status", "--lab", "sip").stdout
    assert "FUNCTION" in text and "LoadBalancerIPCount" in text and "alb-ip-sync" in text
    fn = next(f for f in lab.status()["lambda_functions"] if f["name"] == "alb-ip-sync")
    assert fn["schedule_seconds"] == 60 and fn["runs"] >= 1 and fn["missed_runs"] == {}


def test_replaced_nodes_are_followed_and_no_request_fails(lab):
    old = alb_ips(lab)
    wait_for(lambda: served(lab, "alb-ips", old), 60, "alb-ips healthy")
    with requests_during(lab, [f"https://{eip}/" for eip in EIPS]):
        time.sleep(2)
        runs_before = invoke(lab)["runs"]
        lab.vpclab("replace-nodes", "--lab", "sip", "web-alb")
        new = alb_ips(lab)
        assert new and not new & old
        history = runs_after(lab, runs_before, old)
        assert set(history[0]["registered"]) == new and history[0]["deregistered"] == []
        assert all(h["deregistered"] == [] for h in history[:2])
        assert set(history[2]["deregistered"]) == old
        wait_for(lambda: served(lab, "alb-ips", new), 60, "the new IPs healthy")
        wait_for(lambda: not old & set(target_states(lab, "alb-ips")), 60, "the old IPs drained away")
        time.sleep(2)


def test_an_alb_target_follows_its_alb_through_two_replacements(lab):
    lab.vpclab("replace-nodes", "--lab", "sip", "web-alb")  # the first one's old addresses are gone now
    outside = next(h["ip"] for h in lab.status()["internet_hosts"] if h["name"] == "outside")
    # four health checks (every 5 s, 2 s timeout): checks sent to a gone address would fail two in a row
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert target_states(lab, "alb-target") != {} and set(target_states(lab, "alb-target").values()) == {"healthy"}
        assert page(lab, f"https://{EIPS[1]}:4443/").get("x-forwarded-for") == outside
        time.sleep(1)


def test_scaled_nodes_are_followed_and_no_request_fails(lab):
    """AWS scales an ALB out and back in: the function registers the added nodes' IPs at once and
    deregisters the removed ones three runs after they left DNS, while requests go on through the
    `ip` and the `alb` groups."""
    one = alb_ips(lab)
    for _ in range(3):  # after the replacements above: the group comes to hold the ALB's IPs of now only
        invoke(lab)
    wait_for(lambda: set(target_states(lab, "alb-ips")) == one and served(lab, "alb-ips", one), 60,
             "alb-ips holds the ALB's IPs alone, healthy")
    with requests_during(lab, [f"https://{EIPS[0]}/", f"https://{EIPS[1]}/", f"https://{EIPS[0]}:4443/"]):
        time.sleep(2)
        lab.vpclab("scale-nodes", "--lab", "sip", "web-alb", "2")
        two = alb_ips(lab)
        assert len(two) == 4 and one < two
        # a run whose DNS queries time out says why and changes nothing; the next one recovers
        with resolver_silenced(lab):
            failed = lab.vpclab("invoke", "--lab", "sip", "alb-ip-sync", check=False)
        assert failed.returncode == 1 and "run failed, nothing changed" in failed.stdout, failed.stdout
        assert "timed out" in failed.stdout and set(target_states(lab, "alb-ips")) == one
        status = invoke(lab)
        assert set(status["last_run"]["registered"]) == two - one and status["last_run"]["LoadBalancerIPCount"] == 4
        wait_for(lambda: served(lab, "alb-ips", two), 60, "the added nodes' IPs healthy")
        since = invoke(lab)["runs"]
        lab.vpclab("scale-nodes", "--lab", "sip", "web-alb", "1")
        assert alb_ips(lab) == one
        history = runs_after(lab, since, two - one)
        assert [h["deregistered"] for h in history[:2]] == [[], []] and set(history[2]["deregistered"]) == two - one
        assert history[0]["missed_runs"] == {ip: 1 for ip in two - one}
        wait_for(lambda: set(target_states(lab, "alb-ips")) == one, 60, "the removed IPs drained away")
        time.sleep(2)


def test_an_alb_targets_health_checks_go_through_the_albs_listener(lab):
    """The ALB answers its alb target group's checks through its listener: when its default
    action answers 503 (ModifyListener, which leaves group `web` unused), the target turns
    unhealthy, and `web`'s targets show unused (Target.NotInUse) as on AWS; forwarding to `web`
    again, both are checked again and healthy."""
    wait_for(lambda: set(target_states(lab, "alb-target").values()) == {"healthy"}, 60, "alb-target healthy")
    fixed = [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503", "ContentType": "text/plain"}}]
    lab.vpclab("modify-listener", "--lab", "sip", "alb-https", "--default-actions", json.dumps(fixed))
    try:
        wait_for(lambda: set(target_states(lab, "alb-target").values()) == {"unhealthy"}, 30, "alb-target unhealthy")
        web = next(g for g in lab.status()["target_groups"] if g["name"] == "web")
        assert {(t["state"], t["reason"]) for t in web["targets"]} == {("unused", "Target.NotInUse")}
    finally:
        lab.vpclab("modify-listener", "--lab", "sip", "alb-https", "--default-actions",
                   json.dumps([{"Type": "forward", "TargetGroupArn": "web"}]))
    wait_for(lambda: set(target_states(lab, "alb-target").values()) == {"healthy"}, 30, "alb-target healthy again")
    wait_for(lambda: set(target_states(lab, "web").values()) == {"healthy"}, 30, "web's targets checked again")
