"""The GWLB node and appliance shells carry real packets (harness: gwlb_harness.py).

client ─ router ─ endpoint veth ─ GWLB node ─ GENEVE ─ appliance, and back to
the router and on to the server. Each test builds its own sandbox and tears it
down by closing it, which ends every namespace and process in it.
"""
from __future__ import annotations

import json
import signal
import struct
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import wait_for  # noqa: E402
from gwlb_harness import (  # noqa: E402
    ENDPOINT_ID, NODE_IP, SERVER_IP, Sandbox, appliance_ip,
)

pytestmark = [pytest.mark.lab, pytest.mark.requires("af-packet", "ethtool")]

ROOT = Path(__file__).resolve().parents[2]
HAIRPIN = ROOT / "examples" / "appliances" / "iptables-hairpin.sh"
UDP_PORT, WEB_PORT = 7007, 8080

UDP_ECHO = textwrap.dedent(f"""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("{SERVER_IP}", {UDP_PORT}))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(data, peer)
""")


def udp_exchange(count: int = 5, size: int = 200) -> str:
    """A client command printing how many of `count` UDP datagrams came back intact."""
    return "python3 -c " + _quote(textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1.0)
        ok = 0
        for i in range({count}):
            payload = bytes([i]) * {size}
            s.sendto(payload, ("{SERVER_IP}", {UDP_PORT}))
            try:
                ok += s.recv(65535) == payload
            except OSError:
                pass
        print(ok)
    """))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@pytest.fixture
def sandbox(tmp_path):
    box = Sandbox(tmp_path)
    try:
        yield box
    finally:
        box.close()


def start_servers(box: Sandbox, big_file_bytes: int = 1_000_000) -> None:
    (box.workdir / "web").mkdir()
    (box.workdir / "web" / "big").write_bytes(bytes(range(256)) * (big_file_bytes // 256))
    box.call("spawn", name="udp-echo", ns="server", argv=[sys.executable, "-c", UDP_ECHO])
    box.call("spawn", name="web", ns="server",
             argv=[sys.executable, "-m", "http.server", str(WEB_PORT), "--bind", SERVER_IP,
                   "--directory", str(box.workdir / "web")])
    answers = f"curl -s -o /dev/null --max-time 1 http://{SERVER_IP}:{WEB_PORT}/"  # bypassing the node
    wait_for(lambda: box.sh("server", answers)["rc"] == 0, 60, "the test servers to answer")


def ping(box: Sandbox, count: int = 3) -> bool:
    return box.sh("client", f"ping -c {count} -i 0.2 -W 1 {SERVER_IP}", timeout=10)["rc"] == 0


def download(box: Sandbox, timeout: float = 5) -> str:
    """'<http code> <bytes>' of the big file, or '' on failure."""
    r = box.sh("client", f"curl -s -o /dev/null -w '%{{http_code}} %{{size_download}}' "
                         f"--max-time {timeout} http://{SERVER_IP}:{WEB_PORT}/big", timeout=timeout + 5)
    return r["out"] if r["rc"] == 0 else ""


def udp_ok(box: Sandbox, count: int = 5) -> int:
    return int(box.sh("client", udp_exchange(count), timeout=count + 5)["out"].strip() or 0)


def snapshot(box: Sandbox) -> dict:
    reply = box.control({"op": "snapshot"})
    assert reply["ok"], reply
    return reply["snapshot"]


def appliance_stats(box: Sandbox, after: float) -> dict:
    """The appliance's stats file, once it has been rewritten after `after` (epoch seconds)."""
    path = box.workdir / "appl-1.stats.json"
    wait_for(lambda: path.stat().st_mtime > after, 30, "the appliance to rewrite its stats")
    return json.loads(path.read_text())


def start_capture(box: Sandbox, name: str, ns: str = "appl-1", seconds: int = 6) -> Path:
    pcap = box.workdir / f"{name}.pcapng"
    box.call("spawn", name=name, ns=ns, argv=["dumpcap", "-q", "-i", "eth0", "-f", "udp port 6081",
                                               "-a", f"duration:{seconds}", "-w", str(pcap)])
    # dumpcap names its file once its capture is open and filtered
    wait_for(lambda: "File: " in box.call("log", name=name), 30, f"{name} to start capturing")
    return pcap


def read_capture(box: Sandbox, name: str, pcap: Path) -> list[list[str]]:
    box.call("kill", name=name, sig=int(signal.SIGINT))
    fields = ["ip.src", "ip.dst", "udp.srcport", "udp.dstport", "udp.checksum.status",
              "geneve.option.class", "geneve.option.type", "geneve.vni", "geneve.proto_type"]
    r = box.sh(None, f"tshark -r {pcap} -o udp.check_checksum:TRUE -d udp.port==6081,geneve -T fields "
                     + " ".join(f"-e {f}" for f in fields) + " 2>/dev/null")
    assert r["rc"] == 0, r
    rows = [line.split("\t") for line in r["out"].splitlines() if line.strip()]
    # IP and UDP fields repeat for the inner packet: keep the outer (first) ones.
    return [[field.split(",")[0] for field in row[:5]] + row[5:] for row in rows]


def assert_gwlb_geneve(rows: list[list[str]], appliance: str) -> None:
    """Every captured datagram is §1.1 GENEVE; every return keeps the GWLB's source port."""
    assert rows, "nothing captured on UDP 6081"
    sent = [r for r in rows if r[0] == NODE_IP and r[1] == appliance]
    returned = [r for r in rows if r[0] == appliance and r[1] == NODE_IP]
    assert sent and returned, rows
    for src, dst, sport, dport, checksum, classes, types, vni, proto in rows:
        assert dport == "6081"
        assert 49152 <= int(sport) <= 65535, sport
        assert classes.split(",") == ["0x0108"] * 3 or classes.split(",") == ["264"] * 3, classes
        assert types.split(",") in (["1", "2", "3"], ["0x01", "0x02", "0x03"]), types
        assert int(vni, 0) == 0 and int(proto, 0) == 0x0800
        assert checksum == "1", (src, dst, checksum)  # 1: good, 0: bad, 2: unverified
    sent_ports = {r[2] for r in sent}
    assert {r[2] for r in returned} <= sent_ports  # ports not swapped (§1.2)


def test_ping_udp_tcp_go_through_geneve_and_back(sandbox):
    sandbox.call("build")
    start_servers(sandbox)
    sandbox.call("start_appliance")
    sandbox.call("start_node")
    pcap = start_capture(sandbox, "cap")

    assert ping(sandbox)
    assert udp_ok(sandbox) == 5
    assert download(sandbox) == "200 999936"  # 1 MB over TCP, segmented by the router

    node = snapshot(sandbox)
    io = node["io"]
    assert node["NewFlowCount"] >= 3 and node["HealthyHostCount"] == 1
    assert io["encap_sent"] > 100 and io["decap_sent"] == io["geneve_received"] > 100
    assert io["rx_gso"] == 0 and io["tx_errors"] == 0 and node["drops"] == {}
    assert io["endpoints"][ENDPOINT_ID]["peer_mac"] is not None
    assert io["setup_warnings"] == []
    stats = appliance_stats(sandbox, time.time())
    assert stats["packets_in"] == stats["packets_out"] >= io["geneve_received"]  # stats are newer
    assert stats["flows"] >= 3 and stats["io"]["reply_from_listen_port"] == 0
    assert_gwlb_geneve(read_capture(sandbox, "cap", pcap), appliance_ip(1))

    # Bypass the endpoint: the same exchange no longer touches the node.
    sandbox.call("bypass")
    before = snapshot(sandbox)["io"]["encap_sent"]
    assert ping(sandbox, 1)
    assert snapshot(sandbox)["io"]["encap_sent"] == before


def test_appliance_deny_rule_blocks_and_sighup_reloads(sandbox, tmp_path):
    sandbox.call("build")
    start_servers(sandbox)
    deny_web = {"rules": [{"action": "deny", "protocol": "tcp", "port": WEB_PORT}]}
    sandbox.call("start_appliance", rules=deny_web)
    sandbox.call("start_node")

    assert ping(sandbox)
    assert download(sandbox, timeout=2) == ""
    stats = appliance_stats(sandbox, time.time())
    assert stats["dropped"].get("denied", 0) > 0 and stats["rule_flows"] == [1]

    (tmp_path / "appl-1.rules.json").write_text(json.dumps({"rules": []}))
    sandbox.call("signal", name="appl-1", sig=int(signal.SIGHUP))
    wait_for(lambda: appliance_stats(sandbox, 0)["io"]["reloads"] == 1, 30, "the appliance to reload its rules")
    assert download(sandbox) == "200 999936"


BURST = textwrap.dedent("""
    import json, socket, sys
    datagrams = [bytes.fromhex(h) for h in json.load(open(sys.argv[1]))]
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("{node}", 6081))
    rx.settimeout(1.0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    tx.bind(("{node}", 50001))
    for d in datagrams:
        tx.sendto(d, ("{appliance}", 6081))
    replies = []
    while len(replies) < len(datagrams):
        try:
            data, peer = rx.recvfrom(65535)
        except OSError:
            break
        replies.append((data.hex(), peer[1]))
    print(json.dumps(replies))
""")


def test_a_burst_is_answered_by_the_batch_byte_for_byte_from_the_gwlbs_port(sandbox):
    from vpclab.engines.io.geneve import GwlbHeader, encode, vpce_id_to_int
    sandbox.call("build")
    sandbox.call("start_appliance", rules={"rules": [{"action": "deny", "protocol": "udp", "port": 22}]})
    datagrams = []
    for i in range(120):  # a flow each; every fifth to port 22, which the rules deny
        inner = bytes.fromhex("4500002400000000401100000a0001140a00020a") + struct.pack(
            "!HHHH", 40000 + i, 22 if i % 5 == 4 else 7007, 16, 0) + bytes([i]) * 8
        header = GwlbHeader(protocol=0x0800, endpoint_id=vpce_id_to_int(ENDPOINT_ID), flow_cookie=1000 + i)
        datagrams.append(encode(header, inner))
    (sandbox.workdir / "burst.json").write_text(json.dumps([d.hex() for d in datagrams]))
    (sandbox.workdir / "burst.py").write_text(BURST.format(node=NODE_IP, appliance=appliance_ip(1)))
    out = sandbox.sh("gwlb", f"python3 {sandbox.workdir}/burst.py {sandbox.workdir}/burst.json", timeout=20)
    answered = time.time()
    replies = json.loads(out["out"])
    allowed = {d.hex() for i, d in enumerate(datagrams) if i % 5 != 4}
    assert sorted(h for h, _ in replies) == sorted(allowed)  # each exactly once, unchanged
    assert {port for _, port in replies} == {50001}  # from the GWLB's own source port (§1.2)
    stats = appliance_stats(sandbox, answered)
    assert stats["io"]["received"] == 120 and stats["io"]["replied"] == 96
    assert stats["io"]["batched"] > 0  # the burst went through recvmmsg/sendmmsg
    assert stats["dropped"] == {"denied": 24}


def test_killed_appliance_stops_traffic_and_fails_health(sandbox):
    sandbox.call("build")
    start_servers(sandbox, 100_000)
    sandbox.call("start_appliance")
    sandbox.call("start_node")
    health = f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 2 http://{appliance_ip(1)}/"
    assert sandbox.sh("gwlb", health)["out"] == "200"
    assert sandbox.sh("gwlb", f"nc -z -w 2 {appliance_ip(1)} 80")["rc"] == 0  # a TCP health check
    assert ping(sandbox) and udp_ok(sandbox) == 5

    sandbox.call("kill", name="appl-1")
    before = snapshot(sandbox)["io"]
    assert not ping(sandbox, 2)
    assert udp_ok(sandbox, 2) == 0
    assert sandbox.sh("gwlb", health)["out"] != "200"
    after = snapshot(sandbox)["io"]
    assert after["encap_sent"] > before["encap_sent"]  # still sent to the (dead) target
    assert after["decap_sent"] == before["decap_sent"]  # nothing comes back


def test_partial_checksums_from_the_router_are_completed(sandbox):
    sandbox.call("build", peer_tx_offload=True)  # the router side leaves tx offload on
    start_servers(sandbox, 20_000)
    sandbox.call("start_appliance")
    sandbox.call("start_node")
    assert udp_ok(sandbox) == 5
    assert sandbox.sh("client", f"curl -s --max-time 3 -o /dev/null -w '%{{http_code}}' "
                                f"http://{SERVER_IP}:{WEB_PORT}/")["out"] == "200"
    io = snapshot(sandbox)["io"]
    assert io["checksums_completed"] >= 5  # without completion the server would drop every one


def test_hairpin_example_appliance(sandbox):
    sandbox.call("build")
    start_servers(sandbox)
    sandbox.call("spawn", name="hairpin", ns="appl-1", argv=["sh", str(HAIRPIN)])
    health = f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 1 http://{appliance_ip(1)}/"
    try:
        wait_for(lambda: sandbox.sh("gwlb", health)["out"] == "200", 60, "the hairpin appliance's health port")
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}\n{sandbox.call('log', name='hairpin')}") from None
    sandbox.call("start_node")
    pcap = start_capture(sandbox, "cap")

    assert ping(sandbox)
    assert udp_ok(sandbox) == 5
    assert download(sandbox) == "200 999936"
    io = snapshot(sandbox)["io"]
    assert io["decap_sent"] == io["geneve_received"] > 100
    assert_gwlb_geneve(read_capture(sandbox, "cap", pcap), appliance_ip(1))

    sandbox.call("kill", name="hairpin")
    assert "vpclab_hairpin" not in sandbox.sh("appl-1", "nft list tables")["out"]  # it cleans up
    assert not ping(sandbox, 1)


def test_control_socket_and_bad_input(sandbox):
    info = sandbox.call("build", appliances=2)
    start_servers(sandbox, 10_000)
    sandbox.call("start_appliance", index=1)
    sandbox.call("start_appliance", index=2)
    sandbox.call("start_node", targets=[{"id": "i-appl1", "ip": info["appliances"][0], "healthy": True}])
    control = sandbox.control

    assert ping(sandbox)
    assert control({"op": "register", "target": "i-appl2", "ip": info["appliances"][1]})["ok"]
    assert control({"op": "set_target_health", "target": "i-appl2", "healthy": True})["ok"]
    assert control({"op": "set_target_health", "target": "i-appl1", "healthy": False})["ok"]
    assert ping(sandbox)  # the ICMP flow stays pinned to appl-1 (no_rebalance)
    assert udp_ok(sandbox) == 5  # a new flow goes to appl-2
    targets = {t["id"]: t["state"] for t in snapshot(sandbox)["targets"]}
    assert targets == {"i-appl1": "unhealthy", "i-appl2": "healthy"}

    reply = control({"op": "modify", "attributes": {"deregistration_delay.timeout_seconds": "0"}})
    assert reply["ok"] and reply["attributes"]["deregistration_delay.timeout_seconds"] == "0"
    assert control({"op": "deregister", "target": "i-appl1"})["ok"]
    assert [t["id"] for t in snapshot(sandbox)["targets"]] == ["i-appl2"]
    assert not control({"op": "modify", "attributes": {"no.such.key": 1}})["ok"]
    assert not control({"op": "set_target_health", "target": "i-appl2"})["ok"]
    assert not control({"op": "frobnicate"})["ok"]
    assert not control({"op": "detach_endpoint", "id": "vpce-0fffffffffffffff0"})["ok"]

    # Junk on both sides: frames of every shape from the router, datagrams to 6081.
    junk_frames = textwrap.dedent("""
        import os, socket, time
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(("r-vpce", 0))
        peer = bytes.fromhex(os.environ["PEER"].replace(":", ""))
        src = bytes(6)
        for i in range(300):
            body = os.urandom(i % 90)
            kind = [b"\\x08\\x00", b"\\x86\\xdd", b"\\x08\\x06", b"\\x88\\xcc"][i % 4]
            if i % 3 == 0:
                body = bytes([0x45, 0, 0xff, 0xff]) + body  # claims more than it has
            s.send(peer + src + kind + body)
            if i % 50 == 49:
                time.sleep(0.02)  # paced: a busy machine must not overflow the node's 256-slot ring
        print("sent")
    """)
    peer = snapshot(sandbox)["io"]
    gwe_mac = sandbox.sh("gwlb", "cat /sys/class/net/gwe0/address")["out"].strip()
    r = sandbox.sh("router", f"PEER={gwe_mac} python3 -c {_quote(junk_frames)}")
    assert r["out"].strip() == "sent", r
    junk_geneve = textwrap.dedent(f"""
        import os, socket, struct
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(300):
            body = os.urandom(i % 120)
            if i % 2:
                body = struct.pack("!HHI", 0x0800, 0x0800, 0) + body
            s.sendto(body, ("{NODE_IP}", 6081))
        print("sent")
    """)
    assert sandbox.sh("appl-2", f"python3 -c {_quote(junk_geneve)}")["out"].strip() == "sent"
    wait_for(lambda: snapshot(sandbox)["io"]["rx_frames"] >= peer["rx_frames"] + 300 or
             not sandbox.call("alive", name="node"), 60, "the node to read the junk")
    assert sandbox.call("alive", name="node")
    after = snapshot(sandbox)
    assert after["io"]["rx_frames"] >= peer["rx_frames"] + 300
    assert after["io"]["rx_not_ip"] + after["io"]["rx_short"] >= 150
    assert sum(after["drops"].values()) > 100  # malformed inner packets, bad GENEVE
    assert udp_ok(sandbox) == 5  # and it still carries traffic

    assert control({"op": "detach_endpoint", "id": ENDPOINT_ID})["ok"]
    assert udp_ok(sandbox, 2) == 0
    assert control({"op": "attach_endpoint", "id": ENDPOINT_ID, "ifname": "gwe0"})["ok"]
    assert udp_ok(sandbox) == 5
