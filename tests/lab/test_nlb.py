"""Network Load Balancer behaviour (reference §3), proven with real connections through the kernel."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (LABS, RunningLab, lab_environment, lab_file_needs, skip_unless_doctor_finds, target_states,
                      wait_for)
from vpclab.engines.io.proxy_protocol import parse_header, proxy_header

pytestmark = pytest.mark.lab
LAB = LABS / "nlb.yaml"
NODE_A, NODE_B = "10.0.1.5", "10.0.2.5"


def page(lab, url: str, node: str = "client") -> dict:
    """The test page's fields (`name`, `client`, ...), or {} when the request failed."""
    body = lab.curl(node, url)
    if not body:
        return {}
    fields = {"headline": body.splitlines()[0]}
    for line in body.splitlines()[1:]:
        key, _, value = line.partition(": ")
        fields[key] = value
    fields["name"] = fields["headline"].split()[0]
    return fields


def served_by(lab, url: str, count: int, node: str = "client") -> list[str]:
    return [page(lab, url, node).get("name", "") for _ in range(count)]


@pytest.fixture(scope="module")
def nlb(tmp_path_factory):
    """One lab for the tests that leave it as they found it."""
    skip_unless_doctor_finds(lab_file_needs(LAB, "nlb"))
    lab = RunningLab("nlb", lab_environment(tmp_path_factory.mktemp("home")))
    lab.vpclab("up", str(LAB), "--name", "nlb", timeout=120)
    try:
        wait_for(lambda: target_states(lab, "web-instances") == {"web-a": "healthy", "web-b": "healthy"}, 40,
                 "web targets healthy")
        yield lab
    finally:
        lab.vpclab("down", "--lab", "nlb", check=False, timeout=60)


def test_instance_targets_see_the_clients_own_ip(nlb):
    assert page(nlb, f"http://{NODE_A}/")["client"].startswith("10.0.9.10:")


def test_ip_targets_on_tcp_see_the_nodes_private_ip(nlb):
    seen = page(nlb, f"http://{NODE_A}:8080/")
    assert seen["name"] == "web-a" and seen["client"].startswith(f"{NODE_A}:")


def test_cross_zone_off_each_node_sends_only_to_its_own_zone(nlb):
    assert set(served_by(nlb, f"http://{NODE_A}/", 8)) == {"web-a"}
    assert set(served_by(nlb, f"http://{NODE_B}/", 8)) == {"web-b"}


def test_internet_facing_nlb_is_reached_on_its_elastic_ips_with_the_client_ip_preserved(nlb):
    lb = next(b for b in nlb.status()["load_balancers"] if b["name"] == "web-nlb")
    public = {n["az"]: n["public_ip"] for n in lb["nodes"]}
    seen = page(nlb, f"http://{public['us-east-1a']}/", node="outside")
    assert seen["name"] == "web-a"
    assert seen["client"].startswith("100.64.0.")



def test_an_idle_connection_is_forgotten_after_the_listeners_idle_timeout(nlb):
    # conntrack holds the connection for 350 s of silence, not the kernel's 5 days: in the VPC
    # router, which dispatches an in-VPC client's connections itself (the router fast path)
    idle = (f"import socket, time; s = socket.create_connection(('{NODE_A}', 8080), timeout=5); "
            "print('open', flush=True); time.sleep(5)")
    holder = subprocess.Popen([sys.executable, "-m", "vpclab", "exec", "--lab", nlb.name, "client", "--",
                               "python3", "-c", idle], env=nlb.env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        entries = nlb.sh("router:app", "conntrack -L -p tcp --dport 8080 --state ESTABLISHED").stdout
        timeouts = [int(line.split()[2]) for line in entries.splitlines() if "ESTABLISHED" in line]
        assert timeouts and all(340 <= t <= 350 for t in timeouts), entries
        at_node = nlb.sh("nlb:web-nlb:us-east-1a", "conntrack -L -p tcp --dport 8080 --state ESTABLISHED").stdout
        assert "ESTABLISHED" not in at_node, at_node
    finally:
        holder.wait(timeout=30)

UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
ok = 0
for i in range(5):
    s.sendto(b"ping %d" % i, ("{dst}", 7))
    try:
        ok += s.recv(100) == b"ping %d" % i
    except socket.timeout:
        pass
print(ok)
"""


def test_udp_listener_carries_datagrams_both_ways(nlb):
    out = nlb.sh("client", f"python3 -c '{UDP_ECHO.format(dst=NODE_B)}'", timeout=30).stdout
    assert int(out.strip()) == 5


def test_proxy_protocol_v2_header_is_byte_exact(nlb):
    seen = page(nlb, f"http://{NODE_A}:8081/")
    raw = bytes.fromhex(seen["proxy-protocol-hex"])
    header = parse_header(raw)
    client_ip, client_port = header.source
    assert client_ip == "10.0.9.10"
    assert header.destination == (NODE_A, 8081)
    assert raw == proxy_header((client_ip, client_port), (NODE_A, 8081))
    assert len(raw) == 100
    # instance targets preserve the client's IP, with the header on too: the connection comes from it
    # (from another port: the relay's own connection cannot reuse the client's while it is open)
    assert seen["client"].rsplit(":", 1)[0] == client_ip


def test_zone_without_a_healthy_target_leaves_dns_and_its_node_fails_open(nlb):
    wait_for(lambda: target_states(nlb, "half-healthy") == {"web-a": "unhealthy", "web-b": "healthy"}, 40,
             "web-a unhealthy, web-b healthy in half-healthy")
    # Cross-zone off: node A has only unhealthy targets, so it fails open to them.
    assert set(served_by(nlb, f"http://{NODE_A}:8082/", 4)) == {"web-a"}
    assert set(served_by(nlb, f"http://{NODE_B}:8082/", 4)) == {"web-b"}


def test_regional_dns_name_answers_with_the_nodes_whose_az_has_a_healthy_target_in_every_group(nlb):
    groups = ("web-instances", "web-ips", "echo", "web-pp2")
    wait_for(lambda: all(set(target_states(nlb, g).values()) == {"healthy"} for g in groups)
             and target_states(nlb, "half-healthy") == {"web-a": "unhealthy", "web-b": "healthy"}, 40,
             "every group healthy but half-healthy in AZ a")
    lb = next(b for b in nlb.status()["load_balancers"] if b["name"] == "web-nlb")
    out = nlb.sh("client", f"getent ahostsv4 {lb['dns_name']}").stdout.split()
    assert {ip for ip in out if ip.count(".") == 3} == {n["public_ip"] for n in lb["nodes"] if n["az"] == "us-east-1b"}


def test_cross_zone_on_failing_open_across_zones_only_when_no_zone_is_healthy(up):
    lab = up(LAB.read_text().replace("    HealthCheckPort: \"9001\"\n",
                                     "    HealthCheckPort: \"9001\"\n"
                                     "    TargetGroupAttributes: {load_balancing.cross_zone.enabled: true}\n"),
             "nlbx")
    wait_for(lambda: target_states(lab, "half-healthy") == {"web-a": "unhealthy", "web-b": "healthy"}, 40,
             "web-a unhealthy, web-b healthy")
    # One healthy target anywhere: both nodes send only to it.
    assert set(served_by(lab, f"http://{NODE_A}:8082/", 6)) == {"web-b"}
    # web-b stops answering its checks too: every target is unhealthy, so both nodes use all of them.
    lab.sh("web-b", "pkill -f 'TCP4-LISTEN:900[1]'")
    wait_for(lambda: target_states(lab, "half-healthy") == {"web-a": "unhealthy", "web-b": "unhealthy"}, 40,
             "both unhealthy")
    assert set(served_by(lab, f"http://{NODE_A}:8082/", 16)) == {"web-a", "web-b"}


HOLD = """
import os, socket, sys, time
s = socket.create_connection(("{dst}", 80), timeout=5)
def get():
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    data = b""
    while b"client: " not in data or not data.endswith(b"\\n"):
        chunk = s.recv(4096)
        if not chunk:
            return "closed"
        data += chunk
    return data.split(b"\\r\\n\\r\\n", 1)[1].split()[0].decode()
print(get(), flush=True)
for _ in range(300):
    if os.path.exists("{flag}"):
        break
    time.sleep(0.1)
try:
    print(get(), flush=True)
except OSError as e:
    print(type(e).__name__, flush=True)
"""


def test_deregistered_target_keeps_its_open_connection_while_new_ones_avoid_it(up, tmp_path):
    lab = up(LAB.read_text().replace(
        "    Targets: [web-a, web-b]\n  web-ips:",
        "    TargetGroupAttributes: {load_balancing.cross_zone.enabled: true, "
        "deregistration_delay.timeout_seconds: 30}\n    Targets: [web-a, web-b]\n  web-ips:"), "nlbd")
    wait_for(lambda: target_states(lab, "web-instances") == {"web-a": "healthy", "web-b": "healthy"}, 40, "healthy")
    flag = tmp_path / "go"
    holder, first = None, ""
    for _ in range(10):  # until the held connection lands on web-a
        holder = subprocess.Popen(
            [sys.executable, "-m", "vpclab", "exec", "--lab", lab.name, "client", "--", "python3", "-c",
             HOLD.format(dst=NODE_A, flag=flag)], env=lab.env, stdout=subprocess.PIPE, text=True)
        first = holder.stdout.readline().strip()
        if first == "web-a":
            break
        flag.touch()
        holder.wait(timeout=30)
        flag.unlink()
    assert first == "web-a"
    lab.vpclab("deregister", "--lab", lab.name, "web-instances", "web-a")
    assert wait_for(lambda: target_states(lab, "web-instances").get("web-a") == "draining", 10, "draining")
    assert set(served_by(lab, f"http://{NODE_A}/", 8)) == {"web-b"}
    flag.touch()
    out, _ = holder.communicate(timeout=30)
    assert out.strip() == "web-a"  # the open connection still reaches its target


def test_connection_termination_resets_connections_when_the_delay_ends(up, tmp_path):
    lab = up(LAB.read_text().replace(
        "    Targets: [web-a, web-b]\n  web-ips:",
        "    TargetGroupAttributes: {deregistration_delay.timeout_seconds: 2, "
        "deregistration_delay.connection_termination.enabled: true}\n    Targets: [web-a, web-b]\n  web-ips:"),
        "nlbt")
    flag = tmp_path / "go"
    holder = subprocess.Popen(
        [sys.executable, "-m", "vpclab", "exec", "--lab", lab.name, "client", "--", "python3", "-c",
         HOLD.format(dst=NODE_A, flag=flag)], env=lab.env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "web-a"  # cross-zone off: node A has web-a only
    lab.vpclab("deregister", "--lab", lab.name, "web-instances", "web-a")
    wait_for(lambda: "web-a" not in target_states(lab, "web-instances"), 60, "the delay to end")
    web_a = lab.instance("web-a")["private_ip"]
    forgotten = f"conntrack -L -p tcp --reply-src {web_a} --reply-port-src 80 {{}} 2>/dev/null | grep -c tcp"
    # the VPC router dispatched the client's connection itself (fast path, its mark): it forgets it,
    # node A too (the router's other entries for web-a, the nodes' health checks, may linger)
    wait_for(lambda: all(lab.sh(ns, forgotten.format(only), check=False).stdout.strip() == "0"
                         for ns, only in (("nlb:web-nlb:us-east-1a", ""), ("router:app", "--mark 0x10000/0x10000"))),
             60, "node A and the router to forget web-a's connections")
    flag.touch()
    out, _ = holder.communicate(timeout=30)
    assert out.strip() in ("ConnectionResetError", "closed")


ALIAS_ZONE = """
hosted_zones:
  example:
    Name: example.local
    VPCs: [app]
    RecordSets:
      - {Name: web.example.local, Type: A, AliasTarget: {DNSName: web-nlb}}
"""


def test_az_without_a_healthy_target_leaves_the_dns_answer_until_every_az_has_none(up):
    text = LAB.read_text()
    head, rest = text.split("listeners:\n")
    half = next(line for line in rest.splitlines() if line.startswith("  half:"))
    lab = up(head + "listeners:\n" + half + "\ninternet:\n  hosts:\n    outside: {}\n" + ALIAS_ZONE, "nlbdns")
    lb = next(b for b in lab.status()["load_balancers"] if b["name"] == "web-nlb")
    public = {n["az"]: n["public_ip"] for n in lb["nodes"]}

    def answer(name: str) -> set[str]:
        out = lab.sh("client", f"getent ahostsv4 {name}", check=False).stdout.split()
        return {word for word in out if word.count(".") == 3}

    wait_for(lambda: target_states(lab, "half-healthy") == {"web-a": "unhealthy", "web-b": "healthy"}, 40,
             "web-a unhealthy, web-b healthy")
    assert wait_for(lambda: answer(lb["dns_name"]) == {public["us-east-1b"]}, 10, "AZ a to leave DNS")
    assert answer(f"us-east-1a.{lb['dns_name']}") == {public["us-east-1a"]}  # the zonal name stays
    assert answer("web.example.local") == {public["us-east-1b"]}  # an alias answers as its target does
    lab.sh("web-b", "pkill -f 'TCP4-LISTEN:900[1]'")
    wait_for(lambda: target_states(lab, "half-healthy")["web-b"] == "unhealthy", 40, "web-b unhealthy")
    assert wait_for(lambda: answer(lb["dns_name"]) == set(public.values()), 10, "every AZ back in DNS")
    assert answer("web.example.local") == set(public.values())


def test_killed_proxy_protocol_relays_are_restarted_and_carry_connections_again(nlb):
    """A relay is AWS's side of the NLB: SIGKILLed, the daemon starts it again and counts it."""
    assert page(nlb, f"http://{NODE_A}:8081/").get("proxy-protocol-hex")
    relays = [e for e in nlb.status()["engines"] if e["kind"] == "pp2_relay"]
    assert relays and all(r["pid"] and r["state"] == "running" for r in relays)
    old = {r["name"]: r for r in relays}
    for relay in relays:
        nlb.sh(relay["namespace"], f"kill -9 {relay['pid']}")

    def restarted():
        now = {e["name"]: e for e in nlb.status()["engines"] if e["kind"] == "pp2_relay"}
        return now if all(e["restarts"] == old[n]["restarts"] + 1 and e["pid"] and e["pid"] != old[n]["pid"]
                          and e["state"] == "running" for n, e in now.items()) else None
    now = wait_for(restarted, 30, "every relay restarted")
    assert {e["last_exit"] for e in now.values()} == {"killed by SIGKILL"}
    seen = wait_for(lambda: page(nlb, f"http://{NODE_A}:8081/").get("proxy-protocol-hex"), 30,
                    "a connection through the restarted relay")
    assert parse_header(bytes.fromhex(seen)).source[0] == "10.0.9.10"


def two_group_lab() -> str:
    """nlb.yaml with two listeners: `http` (web-instances, healthy in both AZs) and `half`
    (half-healthy: web-a in AZ a fails its checks, web-b in AZ b passes)."""
    head, rest = LAB.read_text().split("listeners:\n")
    kept = [line for line in rest.splitlines() if line.startswith(("  http:", "  half:"))]
    return head + "listeners:\n" + "\n".join(kept) + "\ninternet:\n  hosts:\n    outside: {}\n" + ALIAS_ZONE


def test_cross_zone_off_az_leaves_dns_when_one_of_its_target_groups_has_no_healthy_target_there(up):
    lab = up(two_group_lab(), "nlb2tg")
    lb = next(b for b in lab.status()["load_balancers"] if b["name"] == "web-nlb")
    public = {n["az"]: n["public_ip"] for n in lb["nodes"]}

    def answer(name: str) -> set[str]:
        out = lab.sh("client", f"getent ahostsv4 {name}", check=False).stdout.split()
        return {word for word in out if word.count(".") == 3}

    wait_for(lambda: target_states(lab, "web-instances") == {"web-a": "healthy", "web-b": "healthy"}
             and target_states(lab, "half-healthy") == {"web-a": "unhealthy", "web-b": "healthy"}, 40,
             "web-instances healthy; half-healthy unhealthy in AZ a only")
    # web-instances alone would keep AZ a; half-healthy has no healthy target there (§3.6)
    assert wait_for(lambda: answer(lb["dns_name"]) == {public["us-east-1b"]}, 10, "AZ a to leave DNS")
    assert answer("web.example.local") == {public["us-east-1b"]}  # EvaluateTargetHealth (§7)
    # Node A still takes each group's new connections by that group's rules: web-instances to its
    # healthy web-a, half-healthy failing open to web-a, its only target in scope.
    assert set(served_by(lab, f"http://{NODE_A}/", 4)) == {"web-a"}
    assert set(served_by(lab, f"http://{NODE_A}:8082/", 4)) == {"web-a"}
    lab.sh("web-b", "pkill -f 'TCP4-LISTEN:900[1]'")  # half-healthy is now unhealthy in every AZ
    wait_for(lambda: target_states(lab, "half-healthy")["web-b"] == "unhealthy", 40, "web-b unhealthy")
    assert wait_for(lambda: answer(lb["dns_name"]) == set(public.values()), 10, "every AZ back in DNS")


def test_bring_up_with_two_target_groups_logs_no_error(up, lab_env):
    home = Path(lab_env["VPCLAB_HOME"])
    for attempt in range(3):  # each bring-up registers both groups' targets; each once raced
        name = f"nlbup{attempt}"
        lab = up(two_group_lab(), name)
        wait_for(lambda: target_states(lab, "web-instances") == {"web-a": "healthy", "web-b": "healthy"}, 40,
                 "web targets healthy")
        log = (home / "labs" / name / "daemon.log").read_text()
        assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
        lab.vpclab("down", "--lab", name, timeout=60)
