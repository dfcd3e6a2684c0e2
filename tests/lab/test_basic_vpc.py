"""examples/basic-vpc.yaml, proven with real traffic."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.lab
BASIC = ROOT / "examples" / "basic-vpc.yaml"


@pytest.fixture
def basic(up):
    return up(BASIC, "basic")


def _pidns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def _processes_in(pidns: str) -> list[int]:
    """Live processes in a PID namespace (an exited one awaiting its reaper holds nothing)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                alive = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
                if alive and os.readlink(entry / "ns" / "pid") == pidns:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _daemon_pid(lab) -> int:
    home = Path(lab.env["VPCLAB_HOME"])
    return json.loads((home / "labs" / lab.name / "pids.json").read_text())["daemon"]


def test_internet_client_reaches_web_instance_by_its_public_ip(basic):
    web = basic.instance("web-1")
    page = basic.curl("client", f"http://{web['public_ip']}/")
    assert page.startswith(f"web-1 {web['id']} us-east-1a")
    assert "client: 198.51.100." in page  # the IGW translates only the instance's side


def test_private_instance_reaches_internet_and_server_sees_nat_gateway_elastic_ip(basic):
    nat = basic.status()["nat_gateways"][0]
    page = basic.curl("app-1", "http://server.internet.test/")
    assert f"client: {nat['public_ip']}:" in page


def test_internet_cannot_reach_private_instance(basic):
    app = basic.instance("app-1")
    assert basic.curl("client", f"http://{app['private_ip']}/", timeout=2) == ""


def test_web_tier_reaches_app_tier_by_security_group_reference(basic):
    app = basic.instance("app-1")
    assert basic.curl("web-1", f"http://{app['private_ip']}/").startswith("app-1 ")
    # app-sg admits port 80 from members of web-sg only
    assert basic.sh("web-1", f"nc -z -w 2 {app['private_ip']} 22", check=False).returncode != 0


def test_revoking_security_group_rule_blocks_live_and_authorizing_restores(basic):
    url = f"http://{basic.instance('web-1')['public_ip']}/"
    rule = ["web-sg", "--protocol", "tcp", "--port", "80", "--cidr", "0.0.0.0/0"]
    assert basic.curl("client", url).startswith("web-1 ")
    basic.vpclab("revoke-security-group-ingress", "--lab", basic.name, *rule)
    assert basic.curl("client", url, timeout=2) == ""
    basic.vpclab("authorize-security-group-ingress", "--lab", basic.name, *rule)
    assert basic.curl("client", url).startswith("web-1 ")


def test_revoking_a_rule_that_does_not_exist_is_refused_with_aws_error_code(basic):
    result = basic.vpclab("revoke-security-group-ingress", "--lab", basic.name, "web-sg",
                          "--protocol", "udp", "--port", "53", "--cidr", "0.0.0.0/0", check=False)
    assert result.returncode != 0
    assert "InvalidPermission.NotFound" in result.stderr


def test_vpc_resolver_at_base_plus_two_answers_instance_and_internet_names(basic):
    app = basic.instance("app-1")
    out = basic.sh("web-1", f"getent hosts {app['hostname']}").stdout
    assert out.split() == [app["private_ip"], app["hostname"]]
    # asked directly at base+2, and at AWS's link-local resolver address
    for resolver in ("10.0.0.2", "169.254.169.253"):
        query = ("import socket,dnslib;"
                 f"s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2);"
                 f"s.sendto(dnslib.DNSRecord.question('server.internet.test').pack(),('{resolver}',53));"
                 "print(dnslib.DNSRecord.parse(s.recv(512)).short())")
        assert basic.sh("app-1", f"python3 -c \"{query}\"").stdout.strip() == "198.51.100.11"


def test_each_instance_has_own_hostname_resolv_conf_and_vpc_mtu(basic):
    app = basic.instance("app-1")
    assert basic.sh("app-1", "hostname").stdout.strip() == app["hostname"].split(".")[0]
    assert basic.sh("app-1", "cat /etc/resolv.conf").stdout.splitlines() == [
        "nameserver 10.0.0.2", "search ec2.internal"]
    assert "mtu 9001" in basic.sh("app-1", "ip link show eth0").stdout
    assert basic.sh("client", "hostname").stdout.strip() == "client"


def test_capture_writes_a_pcap_that_tshark_reads(basic, tmp_path):
    pcap = tmp_path / "web.pcap"
    capture = subprocess.Popen(
        [sys.executable, "-m", "vpclab", "capture", "--lab", basic.name, "web-1", "tcp port 80", "-c", "6", "-d", "10",
         "-w", str(pcap)], env=basic.env, stderr=subprocess.PIPE)
    time.sleep(1.0)
    web = basic.instance("web-1")
    basic.curl("client", f"http://{web['public_ip']}/")
    capture.wait(timeout=20)
    decoded = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "ip.src", "-e", "tcp.dstport"],
                             capture_output=True, text=True, check=True).stdout
    assert "198.51.100.10\t80" in decoded  # the ENI sees the client's real address


def test_status_json_has_the_stable_schema(basic):
    status = basic.status()
    assert set(status) >= {"lab", "instances", "internet_hosts", "nat_gateways", "load_balancers",
                           "target_groups", "vpc_endpoint_services", "vpc_endpoints"}
    assert status["lab"] == {"name": "basic", "region": "us-east-1", "account": "111122223333"}
    web = next(i for i in status["instances"] if i["name"] == "web-1")
    assert web["id"].startswith("i-0") and len(web["id"]) == 19
    assert set(web) >= {"name", "id", "vpc", "subnet", "az", "private_ip", "public_ip", "role", "enis"}
    assert web["enis"][0]["id"].startswith("eni-0")
    assert {h["name"] for h in status["internet_hosts"]} == {"client", "server"}


def test_same_file_gives_same_ids_and_several_labs_run_at_once(up):
    first, second = up(BASIC, "one"), up(BASIC, "two")
    assert first.instance("web-1")["id"] == second.instance("web-1")["id"]
    for lab in (first, second):
        assert lab.curl("client", f"http://{lab.instance('web-1')['public_ip']}/").startswith("web-1 ")


def test_sigkilled_daemon_leaves_nothing_running_and_up_restores_live_changes(basic):
    url = f"http://{basic.instance('web-1')['public_ip']}/"
    basic.vpclab("revoke-security-group-ingress", "--lab", basic.name, "web-sg",
                 "--protocol", "tcp", "--port", "80", "--cidr", "0.0.0.0/0")
    daemon = _daemon_pid(basic)
    pidns = _pidns(daemon)
    assert len(_processes_in(pidns)) >= 1  # the daemon (namespaces are kept by bind mounts)
    os.kill(daemon, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _processes_in(pidns) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_in(pidns) == []
    assert "not running" in basic.vpclab("status", "--lab", basic.name, check=False).stderr

    restored = basic.vpclab("up", str(BASIC), "--name", basic.name)
    assert "replayed 1 live change" in restored.stderr
    assert basic.curl("client", url, timeout=2) == ""  # the revoke survived the crash
    assert basic.curl("web-1", f"http://{basic.instance('app-1')['private_ip']}/").startswith("app-1 ")


def test_down_leaves_nothing_behind(up):
    lab = up(BASIC, "gone")
    daemon = _daemon_pid(lab)
    pidns = _pidns(daemon)
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.count("\n")
    lab.vpclab("down", "--lab", lab.name)
    assert _processes_in(pidns) == []
    assert not (Path(lab.env["VPCLAB_HOME"]) / "labs" / lab.name).exists()
    assert subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.count("\n") == host_links
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout == ""


def test_the_vpc_router_is_no_hop_a_ttl_1_connection_reaches_another_subnet(basic):
    # At AWS an instance's first hop to another in its VPC is that instance (traceroute shows one hop)
    app = basic.instance("app-1")
    connect = ("import socket; s = socket.socket(); s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1); "
               f"s.settimeout(5); s.connect(('{app['private_ip']}', 80)); print('connected')")
    assert basic.sh("web-1", f'python3 -c "{connect}"', check=False).stdout.strip() == "connected"
    # a live change reloads the router's nftables (flush ruleset), and the TTL rules with it
    rule = ["web-sg", "--protocol", "tcp", "--port", "8080", "--cidr", "0.0.0.0/0"]
    basic.vpclab("authorize-security-group-ingress", "--lab", basic.name, *rule)
    assert basic.sh("web-1", f'python3 -c "{connect}"', check=False).stdout.strip() == "connected"
    log = (Path(basic.env["VPCLAB_HOME"]) / "labs" / basic.name / "daemon.log").read_text()
    assert "TTL is decremented" not in log
