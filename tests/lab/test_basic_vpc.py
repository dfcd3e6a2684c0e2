"""examples/basic-vpc.yaml, proven with real traffic."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, start_capture, wait_for

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
    assert "client: 100.64.0." in page  # the IGW translates only the instance's side


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


# A stub resolver's way on a busy machine: ask again when an answer is slow (UDP), up to a bound.
DNS_QUERY = """
import socket, dnslib
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
question = dnslib.DNSRecord.question('{name}')
for _ in range(10):
    s.sendto(question.pack(), ('{resolver}', 53))
    try:
        reply = dnslib.DNSRecord.parse(s.recv(512))
    except socket.timeout:
        continue
    if reply.header.id == question.header.id:
        print(reply.short())
        break
"""


def test_vpc_resolver_at_base_plus_two_answers_instance_and_internet_names(basic):
    app = basic.instance("app-1")
    # getent gives up after resolv.conf's timeouts; on a loaded machine, ask until it answers
    out = wait_for(lambda: basic.sh("web-1", f"getent hosts {app['hostname']}", check=False).stdout, 60,
                   "getent to answer app-1's hostname")
    assert out.split() == [app["private_ip"], app["hostname"]]
    # asked directly at base+2, and at AWS's link-local resolver address
    for resolver in ("10.0.0.2", "169.254.169.253"):
        query = DNS_QUERY.format(name="server.internet.test", resolver=resolver)
        answer = basic.vpclab("exec", "--lab", basic.name, "app-1", "--", "python3", "-c", query, timeout=90)
        assert answer.stdout.strip() == "100.64.0.11"


def test_each_instance_has_own_hostname_resolv_conf_and_vpc_mtu(basic):
    app = basic.instance("app-1")
    assert basic.sh("app-1", "hostname").stdout.strip() == app["hostname"].split(".")[0]
    assert basic.sh("app-1", "cat /etc/resolv.conf").stdout.splitlines() == [
        "nameserver 10.0.0.2", "search ec2.internal"]
    assert "mtu 9001" in basic.sh("app-1", "ip link show eth0").stdout
    assert basic.sh("client", "hostname").stdout.strip() == "client"


def test_each_host_sees_only_its_own_interfaces_in_sysfs(basic):
    """An appliance that reads /sys/class/net must see its ENI (MTU 9001), never the host's links."""
    for node in ("app-1", "client"):
        assert basic.sh(node, "ls /sys/class/net").stdout.split() == ["eth0", "lo"], node
    assert basic.sh("app-1", "cat /sys/class/net/eth0/mtu").stdout.strip() == "9001"
    assert basic.sh("app-1", "cat /sys/class/net/eth0/address").stdout.strip() == \
        basic.sh("app-1", "ip -o link show eth0").stdout.split("link/ether ")[1].split()[0]


def test_capture_writes_a_pcap_that_tshark_reads(basic, tmp_path):
    pcap = tmp_path / "web.pcap"
    capture = start_capture(basic, "web-1", "tcp port 80", "-c", "6", "--seconds", "60", "-w", str(pcap))
    web = basic.instance("web-1")
    basic.curl("client", f"http://{web['public_ip']}/")
    assert capture.wait(timeout=90) == 0  # 6 packets: the handshake and more
    decoded = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "ip.src", "-e", "tcp.dstport"],
                             capture_output=True, text=True, check=True).stdout
    assert "100.64.0.10\t80" in decoded  # the ENI sees the client's real address


def test_capture_runs_until_ctrl_c_and_then_stops_quietly(basic):
    capture = start_capture(basic, "web-1", "tcp port 80")
    basic.curl("client", f"http://{basic.instance('web-1')['public_ip']}/")
    printed = b""

    def printed_the_request() -> bool:
        nonlocal printed
        if select.select([capture.stdout], [], [], 1)[0]:
            printed += os.read(capture.stdout.fileno(), 65536)
        return b"HTTP: GET / HTTP/1.1" in printed

    wait_for(printed_the_request, 60, "the request in the printed capture")
    capture.send_signal(signal.SIGINT)
    out, err = capture.communicate(timeout=30)
    assert capture.returncode == 0
    assert "File: -" not in err and "Interrupted system call" not in err and err.strip() == ""


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
    wait_for(lambda: _processes_in(pidns) == [], 60, "the kernel to end every process of the lab")
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
