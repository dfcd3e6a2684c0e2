"""Gateway Load Balancer labs, proven with real traffic through GENEVE appliances."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from conftest import ROOT, doctor_report, start_capture, target_states, wait_for

pytestmark = pytest.mark.lab
DISTRIBUTED = ROOT / "examples" / "gwlb-distributed.yaml"
TWO_VPC = ROOT / "examples" / "gwlb-two-vpc.yaml"
HAIRPIN = ROOT / "examples" / "appliances" / "iptables-hairpin.sh"

# web-1 also echoes UDP on port 7, so a test can hold one flow open for as long as it likes.
UDP_ECHO = """  web-1:
    SubnetId: app-a
    PrivateIpAddress: 10.0.11.10
    AssociatePublicIpAddress: true
    SecurityGroupIds: [web-sg]
    Run: ["socat UDP4-RECVFROM:7,reuseaddr,fork PIPE"]"""
WEB_1 = """  web-1:
    SubnetId: app-a
    PrivateIpAddress: 10.0.11.10
    AssociatePublicIpAddress: true
    SecurityGroupIds: [web-sg]"""


def distributed(**replacements: str) -> str:
    text = DISTRIBUTED.read_text().replace(WEB_1, UDP_ECHO)
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def appliances(lab) -> dict[str, dict]:
    """Each appliance's counters, as of now: status asks the appliances when asked."""
    return {i["name"]: i.get("appliance", {}) for i in lab.status()["instances"] if i["role"] == "appliance"}


def appliance_states(lab) -> dict[str, str]:
    return target_states(lab, "appliances")


def all_healthy(lab, group: str = "appliances") -> bool:
    return all(state == "healthy" for state in target_states(lab, group).values())


def web_url(lab) -> str:
    return f"http://{lab.instance('web-1')['public_ip']}/"


UDP_FLOW = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {sport}))
s.settimeout(0.5)
ok = 0
for i in range({count}):
    s.sendto(b"ping %d" % i, ("{dst}", 7))
    try:
        if s.recv(100) == b"ping %d" % i:
            ok += 1
    except socket.timeout:
        pass
print(ok)
"""


def udp_exchange(lab, sport: int, count: int = 5) -> int:
    """Echoes received on one UDP flow (fixed 5-tuple) from client to web-1."""
    code = UDP_FLOW.format(sport=sport, count=count, dst=lab.instance("web-1")["public_ip"])
    return int(lab.sh("client", f"python3 -c '{code}'", timeout=count + 20).stdout.strip() or 0)


@pytest.fixture
def gwlb(up):
    lab = up(distributed(), "gwlb")
    wait_for(lambda: all_healthy(lab), 30, "both appliances healthy")
    return lab


def test_ingress_and_egress_pass_through_an_appliance(gwlb, tmp_path):
    before = appliances(gwlb)
    page = gwlb.curl("client", web_url(gwlb))
    assert page.startswith("web-1 ")
    assert "client: 100.64.0.10:" in page  # inspection is transparent: web-1 sees the client
    nat_ip = gwlb.status()["nat_gateways"][0]["public_ip"]
    assert f"client: {nat_ip}:" in gwlb.curl("web-1", "http://server.internet.test/")
    after = appliances(gwlb)
    packets = lambda stats: sum(s.get("packets_in", 0) for s in stats.values())  # noqa: E731
    # ingress: SYN, ACK, request... and replies, then egress the same again
    assert packets(after) - packets(before) >= 10


def test_capture_on_appliance_shows_geneve_with_the_three_gwlb_options(gwlb, tmp_path):
    pcaps = {name: tmp_path / f"{name}.pcap" for name in ("appliance-1", "appliance-2")}
    captures = [start_capture(gwlb, name, "udp port 6081", "-w", str(pcap)) for name, pcap in pcaps.items()]
    for _ in range(4):
        gwlb.curl("client", web_url(gwlb))
    for capture in captures:  # stopped as by Ctrl-C: the pcap is still complete
        capture.send_signal(signal.SIGINT)
        assert capture.wait(timeout=30) == 0
    seen = ""
    for pcap in pcaps.values():
        seen += subprocess.run(["tshark", "-r", str(pcap), "-V", "-Y", "geneve"], capture_output=True,
                               text=True).stdout
        expert = subprocess.run(["tshark", "-r", str(pcap), "-q", "-z", "expert"], capture_output=True,
                                text=True).stdout
        assert "Malformed" not in expert and "Error" not in expert
    assert "Generic Network Virtualization Encapsulation" in seen
    assert seen.count("Amazon") >= 3  # tshark names class 0x0108 Amazon
    for option_type in ("Type: 0x01", "Type: 0x02", "Type: 0x03"):
        assert option_type in seen


def test_geneve_reaches_the_appliance_with_ttl_255_id_0_df_clear_on_both_data_paths(gwlb, tmp_path):
    ips = {name: gwlb.instance(name)["private_ip"] for name in ("appliance-1", "appliance-2")}
    pcaps, captures = {}, []
    for name in ips:
        pcaps[name] = tmp_path / f"{name}.pcap"
        captures.append(start_capture(gwlb, name, "udp port 6081", "--seconds", "10", "-w", str(pcaps[name])))
    for _ in range(3):  # each: SYN and FIN on the Python path, the rest on the fast path when it is on
        assert gwlb.curl("client", web_url(gwlb)).startswith("web-1 ")
    for capture in captures:
        capture.wait(timeout=30)
    seen = []
    for name, pcap in pcaps.items():
        out = subprocess.run(
            ["tshark", "-r", str(pcap), "-o", "udp.check_checksum:TRUE", "-Y", f"geneve && ip.dst == {ips[name]}",
             "-T", "fields", "-E", "occurrence=f", "-e", "ip.ttl", "-e", "ip.id", "-e", "ip.flags.df",
             "-e", "udp.checksum.status", "-e", "tcp.flags.syn"],
            capture_output=True, text=True, check=True).stdout
        seen += [tuple(line.split("\t")) for line in out.splitlines()]
    outer = {(ttl, int(ident, 16), df, csum) for ttl, ident, df, csum, _syn in seen}
    assert outer == {("255", 0, "0", "1")}, outer  # tshark's checksum status 1: good
    syns = [s for s in seen if s[4] in ("1", "True")]
    assert syns and len(seen) - len(syns) >= 3 * 4  # SYNs, and the ACKs, request and FINs after them
    if doctor_report()["ebpf-fast-path"]["ok"]:
        assert node_counters(gwlb)["io"]["fast_path"]["encap_hit"] > 0  # the fast path sent some of them


def test_a_flow_and_its_replies_use_the_same_appliance(gwlb):
    before = appliances(gwlb)
    assert udp_exchange(gwlb, sport=40001, count=6) == 6
    after = appliances(gwlb)
    used = {n: after[n]["packets_in"] - before[n]["packets_in"] for n in after}
    # 6 requests and 6 replies, all on one appliance
    assert sorted(used.values()) == [0, 12]


def _encapsulated_and_appliance_packets(lab) -> tuple[int, int]:
    """From one status: packets the GWLB nodes sent to appliances (either data path), and
    packets the appliances received."""
    status = lab.status()
    nodes = [n["counters"] for lb in status["load_balancers"] for n in lb["nodes"] if "counters" in n]
    sent = sum(c["io"]["encap_sent"] + c["io"]["fast_path"].get("encap_hit", 0) for c in nodes)
    received = sum(i["appliance"]["packets_in"] for i in status["instances"] if i["role"] == "appliance")
    return sent, received


def test_status_shows_appliance_and_node_counters_as_of_the_moment_asked(gwlb):
    """No waiting: what the GWLB node sent, the appliance has counted, in the same status."""
    sent0, received0 = _encapsulated_and_appliance_packets(gwlb)
    assert sent0 == received0
    for round_ in range(3):
        assert udp_exchange(gwlb, sport=40010 + round_, count=5) == 5
        sent, received = _encapsulated_and_appliance_packets(gwlb)
        assert sent - sent0 == 10 * (round_ + 1)  # 5 requests and 5 replies a round
        assert received - received0 == sent - sent0, f"round {round_}: the appliance lags"


def test_peak_rates_show_the_busiest_ten_seconds(gwlb):
    assert udp_exchange(gwlb, sport=40002, count=20) == 20  # 40 packets through web-1's AZ's node
    # a 10-second window closes at the node's first tick past its end; on a busy machine, later
    counters = wait_for(lambda: (c := node_counters(gwlb, "us-east-1a"))["PeakPacketsPerSecond"] >= 1.8 and c,
                        60, "a 10-second window holding the burst to close")
    # A window lasts 10-11 s, so none can average more than 40 / 10 packets a second,
    # and the busier of the (at most two) windows the burst touched holds half of it or more.
    assert 1.8 <= counters["PeakPacketsPerSecond"] <= 4.0  # 20 / 11 = 1.82, shown to one decimal
    assert counters["PeakBytesPerSecond"] >= counters["PeakPacketsPerSecond"] * 34  # 34-35 B each


@pytest.mark.requires("ebpf-fast-path")
def test_established_flows_ride_the_fast_path_and_still_count(gwlb):
    before = appliances(gwlb)
    assert udp_exchange(gwlb, sport=40003, count=20) == 20
    counters = node_counters(gwlb, "us-east-1a")
    fast = counters["io"]["fast_path"]
    # Each direction's first packet takes the Python path, which then hands the flow over
    # (its return too, unless that came back before the handover).
    assert fast["encap_hit"] == 38 and counters["io"]["encap_sent"] == 2 and fast["encap_error"] == 0
    assert fast["decap_hit"] >= 38 and fast["decap_hit"] + counters["io"]["decap_sent"] == 40
    # What the fast path carried is in the node's counters: 20 requests and 20 replies
    # of 34 or 35 bytes ("ping 0" to "ping 19"), and the appliance saw every one.
    assert counters["ProcessedBytes"] == 2 * (10 * 34 + 10 * 35) and counters["ActiveFlowCount"] == 1
    used = {n: a["packets_in"] - before[n]["packets_in"] for n, a in appliances(gwlb).items()}
    assert sorted(used.values()) == [0, 40]


def test_many_flows_spread_over_both_appliances(gwlb):
    before = appliances(gwlb)
    for sport in range(41000, 41016):
        assert udp_exchange(gwlb, sport=sport, count=1) == 1
    after = appliances(gwlb)
    flows = {n: after[n]["flows"] - before[n]["flows"] for n in after}
    assert all(count > 0 for count in flows.values()), flows
    assert sum(flows.values()) == 16


def test_appliance_deny_rule_blocks_traffic(up):
    deny_ssh = """    Role: appliance
    Appliance:
      inside: [10.0.0.0/16]
      rules:
        - {action: deny, direction: inbound, protocol: tcp, port: 22}
"""
    text = distributed().replace("    Role: appliance\n", deny_ssh)
    lab = up(text, "gwlb-deny")
    wait_for(lambda: all_healthy(lab), 30, "both appliances healthy")
    public = lab.instance("web-1")["public_ip"]
    assert lab.curl("client", f"http://{public}/").startswith("web-1 ")
    banner = lab.sh("client", f"echo | nc -w 2 {public} 22", check=False).stdout
    assert "SSH-2.0" not in banner
    assert sum(sum(a.get("dropped", {}).values()) for a in appliances(lab).values()) > 0


def test_with_no_healthy_appliance_traffic_does_not_get_through(gwlb):
    assert gwlb.curl("client", web_url(gwlb)).startswith("web-1 ")
    for name in ("appliance-1", "appliance-2"):
        gwlb.sh(name, f"pkill -f 'appliances/[{name[0]}]{name[1:]}.sock'")
    wait_for(lambda: set(appliance_states(gwlb).values()) == {"unhealthy"}, 30, "both targets unhealthy")
    assert gwlb.curl("client", web_url(gwlb), timeout=2) == ""


def serving_appliance(lab, before: dict) -> str:
    after = appliances(lab)
    return max(after, key=lambda n: after[n]["packets_in"] - before[n]["packets_in"])


@pytest.mark.parametrize("failover", ["no_rebalance", "rebalance"])
def test_stopped_appliance_fails_over_new_flows_and_existing_flows_follow_target_failover(up, failover):
    text = distributed(**{
        "      deregistration_delay.timeout_seconds: 10":
        "      deregistration_delay.timeout_seconds: 10\n"
        f"      target_failover.on_deregistration: {failover}\n"
        f"      target_failover.on_unhealthy: {failover}"})
    lab = up(text, f"gwlb-{failover.replace('_', '-')}")
    wait_for(lambda: all_healthy(lab), 30, "both appliances healthy")
    before = appliances(lab)
    assert udp_exchange(lab, sport=42000, count=3) == 3
    victim = serving_appliance(lab, before)
    lab.sh(victim, f"pkill -f 'appliances/[{victim[0]}]{victim[1:]}.sock'")
    # interval 5 s x unhealthy threshold 2
    wait_for(lambda: appliance_states(lab)[victim] == "unhealthy", 30, f"{victim} unhealthy")
    for sport in range(42100, 42106):  # new flows all reach the survivor
        assert udp_exchange(lab, sport=sport, count=1) == 1
    carried = udp_exchange(lab, sport=42000, count=4)
    if failover == "no_rebalance":
        assert carried == 0  # the flow stays pinned to its dead appliance
    else:
        assert carried == 4  # the flow moved to a healthy appliance


def test_deregistered_target_drains_then_leaves_but_its_live_flow_keeps_it_under_no_rebalance(gwlb):
    before = appliances(gwlb)
    assert udp_exchange(gwlb, sport=43000, count=2) == 2
    pinned = serving_appliance(gwlb, before)
    gwlb.vpclab("deregister", "--lab", gwlb.name, "appliances", pinned)
    assert appliance_states(gwlb)[pinned] == "draining"
    assert udp_exchange(gwlb, sport=43000, count=2) == 2  # the existing flow keeps its appliance
    before = appliances(gwlb)
    for sport in range(43100, 43106):
        assert udp_exchange(gwlb, sport=sport, count=1) == 1
    after = appliances(gwlb)
    assert after[pinned]["flows"] == before[pinned]["flows"]  # no new flow went to the draining target
    wait_for(lambda: "draining" not in appliance_states(gwlb).values(), 25, "the 10 s delay to end")
    # no_rebalance: the live flow keeps its appliance until it idles out (120 s for UDP) ...
    before, fast_before = appliances(gwlb), node_counters(gwlb)["io"]["fast_path"]
    assert udp_exchange(gwlb, sport=43000, count=5) == 5
    after = appliances(gwlb)
    assert after[pinned]["packets_in"] - before[pinned]["packets_in"] == 10
    if doctor_report()["ebpf-fast-path"]["ok"]:  # the delay's end emptied the fast path; the flow is back on it
        assert node_counters(gwlb)["io"]["fast_path"]["encap_hit"] - fast_before["encap_hit"] >= 3
    # ... while new flows never reach it
    for sport in range(43200, 43206):
        assert udp_exchange(gwlb, sport=sport, count=1) == 1
    assert appliances(gwlb)[pinned]["flows"] == after[pinned]["flows"]
    assert all(node["counters"]["drops"].get("target_deregistered", 0) == 0
               for node in gwlb.status()["load_balancers"][0]["nodes"])
    gwlb.vpclab("register", "--lab", gwlb.name, "appliances", pinned)
    wait_for(lambda: all_healthy(gwlb), 30, "the re-registered target healthy")


def test_endpoint_pending_acceptance_carries_nothing_until_accepted(up):
    lab = up(TWO_VPC, "gwlb-two-vpc")
    endpoints = {e["name"]: e for e in lab.status()["vpc_endpoints"]}
    assert {e["state"] for e in endpoints.values()} == {"pendingAcceptance"}
    wait_for(lambda: all_healthy(lab), 30, "both appliances healthy")
    url = web_url(lab)
    assert lab.curl("client", url, timeout=2) == ""  # routed to the endpoint, and dropped
    assert "applied" in lab.vpclab("endpoint", "--lab", lab.name, "accept", "gwlbe-a").stderr
    assert {e["name"]: e["state"] for e in lab.status()["vpc_endpoints"]}["gwlbe-a"] == "available"
    again = lab.vpclab("endpoint", "--lab", lab.name, "accept", "gwlbe-a").stderr  # AWS accepts it; nothing moves
    assert "no-op" in again and "applied" not in again
    assert lab.curl("client", url).startswith("web-1 ")
    assert lab.curl("client", f"http://{lab.instance('web-2')['public_ip']}/", timeout=2) == ""
    lab.vpclab("endpoint", "--lab", lab.name, "reject", "gwlbe-a")
    assert lab.curl("client", url, timeout=2) == ""


def test_iptables_hairpin_appliance_passes_traffic(up):
    text = distributed().replace("    Role: appliance\n",
                                 f"    Role: appliance\n    Run: [\"sh {HAIRPIN}\"]\n")
    lab = up(text, "gwlb-hairpin")
    wait_for(lambda: all_healthy(lab), 30, "both hairpin appliances healthy")
    assert lab.curl("client", web_url(lab)).startswith("web-1 ")
    assert udp_exchange(lab, sport=44000, count=3) == 3


def node_counters(lab, az: str = "us-east-1a") -> dict:
    lb = lab.status()["load_balancers"][0]
    return next(n for n in lb["nodes"] if n["az"] == az)["counters"]


def node_drops(lab, az: str = "us-east-1a") -> dict:
    return node_counters(lab, az)["drops"]


def test_inner_packets_over_8500_bytes_are_dropped_silently(gwlb):
    send = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.setsockopt(socket.IPPROTO_IP, 10, 2); "  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: never fragment
            "s.sendto(b'x' * {size}, ('100.64.0.250', 9))")  # unassigned: no host link MTU on the way
    before = node_drops(gwlb).get("oversize", 0)
    gwlb.sh("web-1", f"python3 -c \"{send.format(size=8400)}\"")  # 8,428-byte packet: carried
    assert node_drops(gwlb).get("oversize", 0) == before
    gwlb.sh("web-1", f"python3 -c \"{send.format(size=8600)}\"")  # 8,628 bytes: over the limit
    assert node_drops(gwlb).get("oversize", 0) == before + 1
    # no ICMP "fragmentation needed" comes back: the sender's path MTU is still its link's
    assert "mtu" not in gwlb.sh("web-1", "ip route get 100.64.0.250").stdout.split("cache")[-1]


# web-1 also echoes TCP on port 9000 (its default services close idle connections early).
TCP_ECHO = {
    '    Run: ["socat UDP4-RECVFROM:7,reuseaddr,fork PIPE"]':
        '    Run: ["socat UDP4-RECVFROM:7,reuseaddr,fork PIPE", "socat TCP4-LISTEN:9000,reuseaddr,fork PIPE"]',
    "      - {IpProtocol: udp, FromPort: 7, ToPort: 7, CidrIp: 0.0.0.0/0}\n":
        "      - {IpProtocol: udp, FromPort: 7, ToPort: 7, CidrIp: 0.0.0.0/0}\n"
        "      - {IpProtocol: tcp, FromPort: 9000, ToPort: 9000, CidrIp: 0.0.0.0/0}\n",
    "    DefaultActions: [{Type: forward, TargetGroupArn: appliances}]\n":
        "    DefaultActions: [{Type: forward, TargetGroupArn: appliances}]\n"
        "    ListenerAttributes:\n"
        "      tcp.idle_timeout.seconds: 60\n"              # AWS's minimum
        "      send_tcp_reset.on_idle_timeout.enabled: true\n",
}

IDLE_CONNECTION = """
import socket, time
s = socket.create_connection(("{dst}", 9000), timeout=5)
s.sendall(b"hello")
assert s.recv(100) == b"hello"
time.sleep({idle})
try:
    print("data" if s.recv(100) else "closed")
except ConnectionResetError:
    print("reset")
except socket.timeout:
    print("open")
"""

STRAY_ACK = """
import socket, time
from scapy.layers.inet import IP, TCP
rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
rx.settimeout(0.5)
tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
tx.sendto(bytes(IP(src="{src}", dst="{dst}") / TCP(sport=41234, dport=9000, flags="A", seq=1000, ack=5555)),
          ("{dst}", 0))
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    try:
        reply = IP(rx.recv(200))
    except socket.timeout:
        continue
    if TCP in reply and reply[TCP].dport == 41234:
        print(reply.src, reply[TCP].flags, reply[TCP].seq)
        break
"""


def test_send_tcp_reset_resets_an_idle_connection_at_both_ends_and_answers_a_stray_ack(up):
    lab = up(distributed(**TCP_ECHO), "gwlb-rst")
    wait_for(lambda: all_healthy(lab), 30, "both appliances healthy")
    web = lab.instance("web-1")["public_ip"]

    # A non-SYN segment with no flow: the GWLB answers with a RST carrying the
    # segment's ACK as its sequence number, and no appliance ever sees it.
    before = appliances(lab)
    reply = lab.sh("client", f"python3 -c '{STRAY_ACK.format(src='100.64.0.10', dst=web)}'").stdout.split()
    assert reply == [web, "R", "5555"]
    counters = node_counters(lab)
    assert counters["drops"].get("non_syn_without_flow") == 1 and counters["tcp_resets_sent"] == 1
    assert {n: a["packets_in"] for n, a in appliances(lab).items()} == {n: a["packets_in"] for n, a in before.items()}

    # A connection idle past the listener's 60 s: both ends are reset.
    result = lab.sh("client", f"python3 -c '{IDLE_CONNECTION.format(dst=web, idle=63)}'", timeout=90)
    assert result.stdout.strip() == "reset"
    assert ":9000" not in lab.sh("web-1", "ss -Htn state established").stdout  # the server's end too
    assert node_counters(lab)["tcp_resets_sent"] == 3


PINGER = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {sport}))
s.settimeout(0.1)
answered = []
for i in range({count}):
    s.sendto(b"ping %d" % i, ("{dst}", 7))
    try:
        while s.recv(100) != b"ping %d" % i:
            pass
        answered.append(i)
    except socket.timeout:
        pass
    time.sleep(0.05)
print(" ".join(map(str, answered)))
"""


def engines(lab, kind: str) -> list[dict]:
    return [e for e in lab.status()["engines"] if e["kind"] == kind]


def restarted_once(lab, kind: str, old_pids: set[int]) -> list[dict] | None:
    """The engines of `kind`, once each has been restarted once and runs under a new PID."""
    found = engines(lab, kind)
    if all(e["restarts"] == 1 and e["state"] == "running" and e["pid"] and e["pid"] not in old_pids
           for e in found):
        return found
    return None


def test_killed_gwlb_nodes_come_back_and_a_flow_keeps_its_appliance(gwlb):
    """SIGKILL both nodes under traffic: the daemon restarts them at once, counts it, and
    the flow in flight goes on through the appliance it had (rendezvous hashing)."""
    dst = gwlb.instance("web-1")["public_ip"]
    assert udp_exchange(gwlb, sport=40030, count=3) == 3
    before = appliances(gwlb)
    nodes = engines(gwlb, "gwlb_node")
    assert len(nodes) == 2 and all(n["restarts"] == 0 and n["pid"] for n in nodes)
    pinger = subprocess.Popen(
        [sys.executable, "-m", "vpclab", "exec", "--lab", gwlb.name, "client", "--", "python3", "-c",
         PINGER.format(sport=40030, count=120, dst=dst)], env=gwlb.env, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: appliances(gwlb) != before, 20, "the pinger's traffic through an appliance")
        for node in nodes:
            gwlb.sh(node["namespace"], f"kill -9 {node['pid']}")
        restarted = wait_for(lambda: restarted_once(gwlb, "gwlb_node", {n["pid"] for n in nodes}), 30,
                             "both nodes restarted")
        assert all(n["last_exit"] == "killed by SIGKILL" for n in restarted)
        answered = [int(i) for i in pinger.communicate(timeout=120)[0].split()]
    finally:
        pinger.kill()
    assert answered and answered[-1] >= 110, answered  # traffic came back, well before the end
    used = {n: a["packets_in"] - before[n]["packets_in"] for n, a in appliances(gwlb).items()}
    assert sorted(used.values())[0] == 0, used  # one appliance carried the flow, before and after
    assert page_through(gwlb).startswith("web-1 ")  # and TCP through both nodes again
    if doctor_report()["ebpf-fast-path"]["ok"]:  # a restarted node attaches its fast path again
        for lb in gwlb.status()["load_balancers"]:
            for node in lb["nodes"]:
                assert "off" not in node["counters"]["io"]["fast_path"], node["counters"]["io"]


def page_through(lab) -> str:
    return wait_for(lambda: lab.curl("client", web_url(lab)), 30, "a page through the GWLB")
