"""Single-VPC inspection with an internet-facing ALB in front (examples/gwlb-single-vpc-alb.yaml,
issue 16): everything between the internet, the ALB's subnets and the web subnets crosses a
GWLB endpoint and an appliance, both ways, by routes more specific than the local route."""
from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from alb_harness import module_lab
from conftest import start_capture, target_states, wait_for

pytestmark = pytest.mark.lab
LAB = Path(__file__).resolve().parents[2] / "examples" / "gwlb-single-vpc-alb.yaml"
NAME = "gwlb-alb"
WEB = {"web server 1", "web server 2"}
WEB_IPS = {"10.0.11.10", "10.0.12.10"}
# An operator's subnet, for the test only: its route to the ALB is the local route (it is not
# among the paths the design inspects), so it still reaches the ALB when the appliances drop
# everything, and sees what ALB answers then.
OPS = """
  ops-subnet: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.41.0/24}
"""
OPS_INSTANCE = """
  ops:
    SubnetId: ops-subnet
    PrivateIpAddress: 10.0.41.10
    DefaultServices: false
"""


def lab_text() -> str:
    text = LAB.read_text()
    text = text.replace("\ninternet_gateways:", OPS + "\ninternet_gateways:", 1)
    return text.replace("\nload_balancers:", OPS_INSTANCE + "\nload_balancers:", 1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with module_lab(tmp_path_factory, lab_text(), NAME) as running:
        wait_for(lambda: set(target_states(running, "appliances").values()) == {"healthy"}, 90, "appliances healthy")
        wait_for(lambda: set(target_states(running, "web").values()) == {"healthy"}, 120, "web servers healthy")
        yield running


def alb(lab) -> dict:
    return next(b for b in lab.status()["load_balancers"] if b["name"] == "web-alb")


def request(lab, node: str, url: str, timeout: float = 15) -> tuple[int, str, str]:
    """(status, Server header, body) of one GET, or (0, '', '') when nothing answered."""
    r = lab.sh(node, f"curl -s -i --max-time {timeout} '{url}'", check=False, timeout=timeout + 30)
    head, _, body = r.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    if r.returncode != 0 or not lines:
        return 0, "", ""
    server = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("server:")), "")
    return int(lines[0].split()[1]), server, body


def which_web_server(body: str) -> str:
    return next((line.strip() for line in body.splitlines() if line.strip() in WEB), "")


def appliance_packets(lab) -> int:
    return sum(i.get("appliance", {}).get("packets_in", 0) for i in lab.status()["instances"] if i["role"] == "appliance")


def inner_pairs(pcap: Path) -> set[tuple[str, str]]:
    """(source, destination) of the packets inside the GENEVE datagrams of a capture."""
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y", "geneve", "-T", "fields", "-e", "ip.src", "-e", "ip.dst"],
                         capture_output=True, text=True, timeout=60).stdout
    pairs = set()
    for line in out.splitlines():
        sources, _, destinations = line.partition("\t")
        src, dst = sources.split(","), destinations.split(",")
        if len(src) >= 2 and len(dst) >= 2:  # outer header first, the inner one second
            pairs.add((src[1], dst[1]))
    return pairs


def captured_while(lab, tmp_path, action) -> set[tuple[str, str]]:
    """Inner flows both appliances saw on UDP 6081 while `action()` ran."""
    pcaps = {name: tmp_path / f"{name}.pcap" for name in ("appliance-1", "appliance-2")}
    captures = [start_capture(lab, name, "udp port 6081", "-w", str(pcap)) for name, pcap in pcaps.items()]
    try:
        action()
    finally:
        for capture in captures:
            capture.send_signal(signal.SIGINT)
            capture.wait(timeout=30)
    return set().union(*(inner_pairs(p) for p in pcaps.values()))


def test_repeated_requests_to_the_albs_public_name_alternate_between_web_server_1_and_2(lab):
    url = f"http://{alb(lab)['dns_name']}/"
    served = [which_web_server(request(lab, "client", url)[2]) for _ in range(8)]
    assert set(served) == WEB, served
    assert min(served.count(w) for w in WEB) >= 2, served


def test_a_capture_at_the_appliances_shows_the_client_to_alb_and_alb_to_web_flows_inside_geneve(lab, tmp_path):
    url = f"http://{alb(lab)['dns_name']}/"
    client_ip = next(h["ip"] for h in lab.status()["internet_hosts"] if h["name"] == "client")
    node_ips = {n["private_ip"] for n in alb(lab)["nodes"]}
    pairs = captured_while(lab, tmp_path, lambda: [request(lab, "client", url) for _ in range(4)])
    # internet -> ALB and back: the IGW has already mapped the Elastic IP to the node's private IP
    assert any(src == client_ip and dst in node_ips for src, dst in pairs), pairs
    assert any(src in node_ips and dst == client_ip for src, dst in pairs), pairs
    # ALB -> web servers and back, by routes more specific than the local route
    assert any(src in node_ips and dst in WEB_IPS for src, dst in pairs), pairs
    assert any(src in WEB_IPS and dst in node_ips for src, dst in pairs), pairs


def test_web_servers_reach_the_internet_through_the_nat_gateway_and_an_appliance(lab, tmp_path):
    nat = lab.status()["nat_gateways"][0]
    server_ip = next(h["ip"] for h in lab.status()["internet_hosts"] if h["name"] == "server")
    pages = []
    pairs = captured_while(lab, tmp_path, lambda: pages.extend(
        request(lab, name, "http://server.internet.test/")[2] for name in ("web-server-1", "web-server-2")))
    assert all(f"client: {nat['public_ip']}:" in page for page in pages), pages  # out by the NAT gateway
    assert (nat["private_ip"], server_ip) in pairs and (server_ip, nat["private_ip"]) in pairs, pairs


def _appliance_rules(lab, name: str) -> Path:
    return lab.home / "labs" / NAME / "appliances" / f"{name}-rules.json"


def set_drop_all(lab, drop: bool) -> None:
    """Each appliance's rules file rewritten, then SIGHUP to that appliance's process (by PID)."""
    for name in ("appliance-1", "appliance-2"):
        rules = _appliance_rules(lab, name)
        rules.write_text(json.dumps({**json.loads(rules.read_text()), "drop_all": drop}))
        control = lab.home / "labs" / NAME / "appliances" / f"{name}.sock"
        # `[-]` keeps the pattern from matching the shell that runs pgrep
        pids = lab.sh(name, f"pgrep -f -- '[-]-control {control}'").stdout.split()
        assert len(pids) == 1, pids
        lab.sh(name, f"kill -HUP {pids[0]}")
    wait_for(lambda: all(i.get("appliance", {}).get("drop_all") is drop for i in lab.status()["instances"]
                         if i["role"] == "appliance"), 20, f"appliances with drop_all {drop}")


def web_reasons(lab) -> dict[str, str]:
    group = next(g for g in lab.status()["target_groups"] if g["name"] == "web")
    return {t["name"]: (t["state"], t.get("reason")) for t in group["targets"]}


def test_when_the_appliances_stop_forwarding_targets_go_unhealthy_clients_get_504_and_all_recovers(lab):
    url = f"http://{alb(lab)['dns_name']}/"
    node_ip = alb(lab)["nodes"][0]["private_ip"]
    assert request(lab, "ops", f"http://{node_ip}/")[0] == 200
    set_drop_all(lab, True)
    try:
        # The ALB's health checks cross the appliances too: they time out (5 s x 2).
        wait_for(lambda: {s for s, _ in web_reasons(lab).values()} == {"unhealthy"}, 60, "web targets unhealthy")
        assert {r for _, r in web_reasons(lab).values()} == {"Target.Timeout"}, web_reasons(lab)
        assert request(lab, "client", url, timeout=5)[0] == 0  # the internet's way in is inspected: dropped
        # All unhealthy: ALB fails open and tries a target, which never answers its SYN.
        status, server, body = request(lab, "ops", f"http://{node_ip}/", timeout=30)
        assert (status, server) == (504, "awselb/2.0") or (status, server) == (502, "awselb/2.0"), (status, body)
    finally:
        set_drop_all(lab, False)
    wait_for(lambda: {s for s, _ in web_reasons(lab).values()} == {"healthy"}, 90, "web targets healthy again")
    served = {which_web_server(request(lab, "client", url)[2]) for _ in range(6)}
    assert served == WEB
