"""examples/gwlb-ingress-egress.yaml (the Korean Terraform guide's design), end to end with real
traffic: ingress client -> ALB (its public address) -> IGW -> edge route -> GWLB endpoint -> GWLB ->
hairpin appliance -> back -> ALB -> NLB in the app VPC (an ip target across the transit gateway) ->
web; egress web -> transit gateway -> NAT gateway -> GWLB endpoint -> appliance -> IGW -> internet."""
from __future__ import annotations

import re
import signal
import subprocess

import pytest

from conftest import ROOT, start_capture, target_states, wait_for

pytestmark = pytest.mark.lab
EXAMPLE = ROOT / "examples" / "gwlb-ingress-egress.yaml"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from conftest import RunningLab, lab_environment, lab_file_needs, skip_unless_doctor_finds
    home = tmp_path_factory.mktemp("home")
    skip_unless_doctor_finds(lab_file_needs(EXAMPLE, "ingress-egress"))
    running = RunningLab("ingress-egress", lab_environment(home))
    try:
        running.vpclab("up", str(EXAMPLE), "--name", "ingress-egress", timeout=120)
        for group in ("appliances", "web", "nlb-nodes"):
            wait_for(lambda: set(target_states(running, group).values()) == {"healthy"}, 60, f"{group} healthy")
        yield running
    finally:
        running.vpclab("down", "--lab", "ingress-egress", check=False, timeout=60)


def gwlb_new_flows(lab) -> int:
    lb = next(b for b in lab.status()["load_balancers"] if b["type"] == "gateway")
    return sum(n["counters"]["NewFlowCount"] for n in lb["nodes"])


def alb_nodes(lab) -> dict[str, str]:
    """Each ALB node's public IP -> its private IP."""
    lb = next(b for b in lab.status()["load_balancers"] if b["type"] == "application")
    return {n["public_ip"]: n["private_ip"] for n in lb["nodes"]}


def test_ingress_through_an_appliance_and_the_alb_then_the_nlb_across_the_transit_gateway(lab, tmp_path):
    status = lab.status()
    client = next(h["ip"] for h in status["internet_hosts"] if h["name"] == "client")
    webs = {i["name"]: i for i in status["instances"] if i["name"].startswith("web-")}
    appliances = [i["name"] for i in status["instances"] if i["role"] == "appliance"]
    pcaps = {name: tmp_path / f"{name}.pcap" for name in appliances}
    captures = [start_capture(lab, name, "udp port 6081", "-w", str(pcap)) for name, pcap in pcaps.items()]
    flows = gwlb_new_flows(lab)
    pages = []
    try:
        for public, _private in alb_nodes(lab).items():
            for _ in range(3):
                pages.append((public, lab.curl("client", f"http://{public}/", timeout=5)))
    finally:
        for capture in captures:
            capture.send_signal(signal.SIGINT)
            capture.wait(timeout=30)
    seen = set()
    for public, page in pages:
        name = page.split(" ", 1)[0]
        assert name in webs, page
        web = webs[name]
        # the web page: its private IP, its hostname in the region's domain, its instance id, its AZ
        assert page.startswith(f"{name} {web['id']} {web['az']}\n"), page
        assert f"private-ip: {web['private_ip']}" in page
        assert f"hostname: ip-{web['private_ip'].replace('.', '-')}.ap-northeast-2.compute.internal" in page
        assert f"x-forwarded-for: {client}" in page  # the ALB saw the client's own address
        # the NLB preserved the ALB node's address, which is in the security VPC: across the TGW
        assert re.search(r"client: 10\.0\.1[12]\.\d+:", page), page
        seen.add(name)
    assert seen == set(webs), pages  # the NLB spreads the ALB's connections over both web servers
    assert gwlb_new_flows(lab) - flows >= len(pages)  # every connection came in through the GWLB
    # inside the GENEVE at an appliance: the HTTP request from the client's public address to the
    # ALB node's private address (the IGW translated its public one)
    privates = set(alb_nodes(lab).values())
    inner = []
    for pcap in pcaps.values():
        out = subprocess.run(["tshark", "-r", str(pcap), "-Y", "geneve && http.request", "-T", "fields",
                              "-E", "occurrence=l", "-e", "ip.src", "-e", "ip.dst", "-e", "http.request.method"],
                             capture_output=True, text=True, check=True).stdout
        inner += [tuple(line.split("\t")) for line in out.splitlines()]
    assert inner and all(src == client and dst in privates and method == "GET" for src, dst, method in inner), inner
    assert {dst for _src, dst, _m in inner} == privates  # both ALB nodes' requests were inspected


def test_egress_through_the_transit_gateway_a_nat_gateway_and_an_appliance(lab):
    eips = {n["public_ip"] for n in lab.status()["nat_gateways"]}
    for web in ("web-a", "web-c"):
        flows = gwlb_new_flows(lab)
        page = lab.curl(web, "http://server.internet.test/", timeout=5)
        match = re.search(r"client: ([\d.]+):", page)
        assert match and match[1] in eips, page  # the server sees a NAT gateway's Elastic IP
        assert gwlb_new_flows(lab) - flows >= 1  # and the flow crossed the GWLB on its way out


def test_the_appliances_are_the_hairpin_kind(lab):
    for name in ("appliance-a", "appliance-c"):
        rules = lab.sh(name, "iptables -t nat -S").stdout
        assert "DNAT" in rules and "MASQUERADE" in rules and "6081" in rules
