"""Application Load Balancer behaviour (reference §4), with real HTTP from an internet host
through HAProxy on the ALB's nodes, to the test pages of two web instances (examples/alb.yaml)."""
from __future__ import annotations

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
    status, headers, _ = get(alb, "/old/a/b?x=1", headers={"Host": "www.example.com"})
    assert status == 301
    assert headers["location"] == ["https://www.example.com/new/old/a/b?x=1"]


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


def test_awsalb_pins_a_client_and_moves_it_when_its_target_is_deregistered(alb):
    jar = "/tmp/alb-test-cookies"
    alb.sh("outside", f"rm -f {jar}")
    status, headers, body = get(alb, cookies=jar)
    assert status == 200 and any(c.startswith("AWSALB=") for c in headers["set-cookie"])
    assert any(c.startswith("AWSALBCORS=") and "SameSite=None; Secure" in c for c in headers["set-cookie"])
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
