"""The eBPF fast path with real packets, its fds held the way the product holds them.

As root, the test loads one instance (`fastpath.load`), then runs this file as a child
under `unshare --user --map-root-user --net --mount --pid` with the fds passed
(`pass_fds`). The child is the node's stand-in: unprivileged in its user namespace, it
builds three namespaces, attaches the programs through tcx links and the ring filter,
fills the maps, and injects and captures frames with AF_PACKET sockets, moving between
namespaces with setns(2). It prints what it saw as JSON; the tests below judge it.

    rtr: r-vpce ══ gwe0 (endpoint) ┐
    rtr: r-vpce1 ═ gwe1 (endpoint) ┴ gwlb: eth0 10.1.0.5 ══ eth0 10.1.0.10 appl (lo 10.9.0.10)
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from vpclab.engines.io.geneve import GwlbHeader, internet_checksum  # noqa: E402
from vpclab.engines.gwlb import fastpath  # noqa: E402

pytestmark = [pytest.mark.lab, pytest.mark.requires("ebpf-fast-path")]

UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--mount-proc"]
RTR_MAC, RTR1_MAC = bytes.fromhex("02000000aa01"), bytes.fromhex("02000000aa02")
EP_MAC, EP1_MAC = bytes.fromhex("02000000bb01"), bytes.fromhex("02000000bb02")
UPLINK_MAC, APPL_MAC = bytes.fromhex("02000000cc01"), bytes.fromhex("02000000dd01")
CLIENT, SERVER = "10.0.1.10", "10.0.2.10"
NODE_IP, APPL_IP, ROUTED_IP, SPOOF_IP = "10.1.0.5", "10.1.0.10", "10.9.0.10", "10.1.0.11"
GENEVE = {n: GwlbHeader(protocol=0x0800, endpoint_id=0x0123456789ABCDEF, flow_cookie=0x1000 + n).raw
          for n in (1, 2, 3, 9)}
SRC_PORT = {1: 50123, 2: 50124, 3: 50125}
WAIT = 0.3  # for a frame that must not come: veth delivery takes microseconds


# --- frames (shared by both sides) ------------------------------------------------------


def ip4(proto: int, payload: bytes, src: str, dst: str) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 7, 0x4000, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + payload


def udp(sport: int, dport: int, data: bytes, src: str = CLIENT, dst: str = SERVER) -> bytes:
    return ip4(17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data, src, dst)


def tcp(sport: int, dport: int, flags: int, data: bytes = b"", src: str = CLIENT, dst: str = SERVER) -> bytes:
    segment = struct.pack("!HHIIBBHHH", sport, dport, 100, 200, 5 << 4, flags, 65535, 0, 0) + data
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(segment))
    checksum = internet_checksum(pseudo + segment)
    return ip4(6, segment[:16] + struct.pack("!H", checksum) + segment[18:], src, dst)


def eth(dst: bytes, src: bytes, payload: bytes) -> bytes:
    return dst + src + b"\x08\x00" + payload


def geneve_datagram(header: bytes, inner: bytes, sport: int, dport: int, src: str = APPL_IP) -> bytes:
    return udp(sport, dport, header + inner, src=src, dst=NODE_IP)


# Inner packets of each step, by name (the parent checks what came out against them).
INNER = {
    "udp": udp(40000, 7, b"u" * 103),  # odd sizes: 131 B (the checksum's tail: 3 bytes), ack 70 B (2)
    "udp_max": udp(40000, 7, bytes(fastpath.MAX_INNER - 28)),
    # the checksum's 512-byte chunks: two and no tail, three and a 1-byte tail
    "udp_1024": udp(40000, 7, bytes(range(251)) * 3 + bytes(range(243))),
    "udp_1537": udp(40000, 7, bytes(range(253)) * 5 + bytes(range(1, 245))),
    "routed": udp(40002, 7, b"r" * 61),  # 89 B (1)
    "miss": udp(45000, 7, b"m" * 10),
    "syn": tcp(40001, 80, 0x02),
    "ack": tcp(40001, 80, 0x10, b"t" * 30),
    "gso": tcp(40001, 80, 0x10, bytes(3000)),  # sent as a GSO super-packet of 1,000-byte segments
    "return": udp(7, 40000, b"R" * 80, src=SERVER, dst=CLIENT),
    "return_oversize": udp(7, 40000, bytes(fastpath.MAX_INNER - 27), src=SERVER, dst=CLIENT),
}


# --- the child: runs inside the user namespace ---------------------------------------------

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
SOL_PACKET, PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING = 263, 15, 23


def _sh(command: str) -> None:
    subprocess.run(["sh", "-c", command], check=True, timeout=20, capture_output=True)


def _enter(ns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), f"setns({ns})")
    finally:
        os.close(fd)


def _packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    sock.setblocking(False)
    return sock


def _is_geneve(frame: str) -> bool:
    """IPv4 UDP to 6081 (the appliance also sees ARP, and ICMP from its own kernel)."""
    return frame[24:28] == "0800" and frame[46:48] == "11" and frame[72:76] == "17c1"


def _drain(sock: socket.socket, seconds: float, want: int | None = None, keep=lambda frame: True) -> list[str]:
    """The frames (hex) that `keep` accepts among those arriving within `seconds`;
    returns early once `want` have come."""
    frames: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (want is None or len(frames) < want):
        try:
            frame = sock.recv(65535).hex()
        except BlockingIOError:
            time.sleep(0.002)
            continue
        if keep(frame):
            frames.append(frame)
    return frames


def _topology() -> None:
    _sh("mount -t tmpfs tmpfs /run && mkdir -p /run/netns")
    for ns in ("rtr", "gwlb", "appl"):
        _sh(f"ip netns add {ns} && ip -n {ns} link set lo up && "
            f"ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 "
            f"net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0")
    endpoints = (("gwe0", EP_MAC, "r-vpce", RTR_MAC), ("gwe1", EP1_MAC, "r-vpce1", RTR1_MAC))
    for node_if, node_mac, rtr_if, rtr_mac in endpoints:
        _sh(f"ip link add {node_if} netns gwlb address {node_mac.hex(':')} mtu 8500 type veth "
            f"peer name {rtr_if} netns rtr address {rtr_mac.hex(':')} mtu 8500 && "
            f"ip -n gwlb link set {node_if} up && ip -n rtr link set {rtr_if} up")
    _sh(f"ip link add eth0 netns gwlb address {UPLINK_MAC.hex(':')} mtu 9001 type veth "
        f"peer name eth0 netns appl address {APPL_MAC.hex(':')} mtu 9001 && "
        f"ip -n gwlb link set eth0 up && ip -n appl link set eth0 up && "
        f"ip -n gwlb addr add {NODE_IP}/24 dev eth0 && ip -n appl addr add {APPL_IP}/24 dev eth0 && "
        f"ip -n appl addr add {ROUTED_IP}/32 dev lo && "
        # an appliance behind a next hop: the FIB, not the program, picks the MAC
        f"ip -n gwlb route add 10.9.0.0/24 via {APPL_IP}")


def child(fds: fastpath.FastPathFds) -> dict:
    out: dict = {"uid_map": open("/proc/self/uid_map").read().split(),
                 "load_refused": fastpath.unavailable_reason()}
    _topology()
    _enter("gwlb")
    gwe0, gwe1, uplink = (socket.if_nametoindex(n) for n in ("gwe0", "gwe1", "eth0"))
    fastpath.set_node_ip(fds.config, NODE_IP)
    links = {"gwe0": fastpath.attach_tc(fds.encap, gwe0), "gwe1": fastpath.attach_tc(fds.encap, gwe1),
             "uplink": fastpath.attach_tc(fds.decap, uplink)}
    ring = _packet_socket("gwe0")  # the slow path's ring stand-in; outgoing frames included
    fastpath.attach_socket_filter(ring, fds.ring_filter)
    ring1 = _packet_socket("gwe1")  # the other endpoint's: same filter, its own ifindex
    fastpath.attach_socket_filter(ring1, fds.ring_filter)
    flows = {
        1: fastpath.FlowKey(gwe0, CLIENT, SERVER, 40000, 7, 17),
        2: fastpath.FlowKey(gwe0, CLIENT, SERVER, 40001, 80, 6),
        3: fastpath.FlowKey(gwe0, CLIENT, SERVER, 40002, 7, 17),
        "reverse": fastpath.FlowKey(gwe0, SERVER, CLIENT, 7, 40000, 17),  # the flow's other direction
    }
    for n in (1, 2, 3):
        target = ROUTED_IP if n == 3 else APPL_IP
        action = fastpath.FlowAction(uplink, NODE_IP, target, SRC_PORT[n], GENEVE[n])
        assert fastpath.put_flow(fds.flows, flows[n], action)
    assert fastpath.put_flow(fds.flows, flows["reverse"],
                             fastpath.FlowAction(uplink, NODE_IP, APPL_IP, SRC_PORT[1], GENEVE[1]))
    assert fastpath.put_return(fds.returns, GENEVE[1],
                               fastpath.ReturnAction(gwe0, APPL_IP, SRC_PORT[1], RTR_MAC, EP_MAC))
    out["replace_existing"] = fastpath.put_return(fds.returns, GENEVE[1],
                                                  fastpath.ReturnAction(gwe0, APPL_IP, SRC_PORT[1], RTR_MAC, EP_MAC))
    out["delete_absent"] = fastpath.delete_flow(fds.flows, fastpath.FlowKey(gwe0, "1.2.3.4", "5.6.7.8", 1, 2, 17))
    _enter("appl")
    appliance = _packet_socket("eth0")
    _enter("rtr")
    router, router1 = _packet_socket("r-vpce"), _packet_socket("r-vpce1")
    gso_sender = _packet_socket("r-vpce")
    gso_sender.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)  # its frames start with a virtio_net_hdr
    router.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # see only what comes out of the node

    def encap_step(name: str, inner: bytes, via: socket.socket = router, mac: bytes = RTR_MAC,
                   expect: int = 1) -> None:
        via.send(eth(EP_MAC if via is router else EP1_MAC, mac, inner))
        out[name] = {"appliance": _drain(appliance, 2.0 if expect else WAIT, want=expect or None, keep=_is_geneve),
                     "ring": _drain(ring, WAIT if expect else 0.05)}

    def decap_step(name: str, datagram: bytes, expect: int = 1) -> None:
        appliance.send(eth(UPLINK_MAC, APPL_MAC, datagram))
        out[name] = {"router": _drain(router, 2.0 if expect else WAIT, want=expect or None),
                     "ring": _drain(ring, 0.05)}

    encap_step("udp", INNER["udp"])
    encap_step("udp_max", INNER["udp_max"])
    encap_step("udp_1024", INNER["udp_1024"])
    encap_step("udp_1537", INNER["udp_1537"])
    encap_step("routed", INNER["routed"])
    encap_step("miss", INNER["miss"], expect=0)
    encap_step("syn", INNER["syn"], expect=0)
    encap_step("ack", INNER["ack"])
    # virtio_net_hdr: NEEDS_CSUM, GSO_TCPV4, hdr_len, gso_size, csum_start, csum_offset
    gso_sender.send(struct.pack("=BBHHHH", 1, 1, 54, 1000, 34, 16) + eth(EP_MAC, RTR_MAC, INNER["gso"]))
    out["gso"] = {"appliance": _drain(appliance, WAIT, keep=_is_geneve), "ring": _drain(ring, 0.05)}
    encap_step("other_endpoint", INNER["udp"], via=router1, mac=RTR1_MAC, expect=0)
    out["other_endpoint"]["ring1"] = _drain(ring1, 0.05)
    decap_step("return", geneve_datagram(GENEVE[1], INNER["return"], 6081, 6081))
    decap_step("return_swapped", geneve_datagram(GENEVE[1], INNER["return"], 6081, SRC_PORT[1]))
    decap_step("return_spoofed", geneve_datagram(GENEVE[1], INNER["return"], 6081, 6081, src=SPOOF_IP), expect=0)
    decap_step("return_wrong_port", geneve_datagram(GENEVE[1], INNER["return"], 6081, 6082), expect=0)
    decap_step("return_unknown", geneve_datagram(GENEVE[9], INNER["return"], 6081, 6081), expect=0)
    decap_step("return_oversize", geneve_datagram(GENEVE[1], INNER["return_oversize"], 6081, 6081), expect=0)
    out["counters"] = fastpath.read_counters(fds.counters)
    out["flow_counters"] = {str(n): list(fastpath.flow_counters(fds.flows)[key]) for n, key in flows.items()}
    out["return_counters"] = {h.hex(): list(c) for h, c in fastpath.return_counters(fds.returns).items()}
    out["now_ns"] = time.monotonic_ns()

    # Taking a flow out of the map: the ring shows its packets again, the program leaves them alone.
    assert fastpath.delete_flow(fds.flows, flows[1])
    encap_step("after_delete", INNER["udp"], expect=0)
    # Closing the links detaches the programs: nothing runs, nothing counts.
    os.close(links.pop("gwe0"))
    os.close(links.pop("uplink"))
    before = fastpath.read_counters(fds.counters)
    encap_step("after_close", INNER["ack"], expect=0)
    encap_step("after_close_miss", INNER["miss"], expect=0)
    decap_step("return_after_close", geneve_datagram(GENEVE[1], INNER["return"], 6081, 6081), expect=0)
    after = fastpath.read_counters(fds.counters)
    fastpath.detach_socket_filter(ring)  # the rest of the fallback: the ring sees the flows again
    encap_step("after_detach_filter", INNER["ack"], expect=0)
    out["counters_moved_after_close"] = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    for fd in links.values():
        os.close(fd)
    return out


# --- the tests ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seen() -> dict:
    fds = fastpath.load()
    try:
        result = subprocess.run([*UNSHARE, sys.executable, __file__, "child", json.dumps(fds.to_dict())],
                                pass_fds=fds.all(), capture_output=True, text=True, timeout=60)
    finally:
        fds.close()
    assert result.returncode == 0, f"child failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _one(frames: list[str]) -> bytes:
    assert len(frames) == 1, f"expected one frame, got {len(frames)}"
    return bytes.fromhex(frames[0])


def _check_encapsulated(frame: bytes, inner: bytes, flow: int, target: str) -> None:
    assert frame[:6] == APPL_MAC and frame[6:12] == UPLINK_MAC and frame[12:14] == b"\x08\x00"
    outer = frame[14:34]
    version_ihl, tos, total, ident, frag, ttl, proto, _, src, dst = struct.unpack("!BBHHHBBH4s4s", outer)
    assert (version_ihl, tos, ttl, proto, ident, frag) == (0x45, 0, 255, 17, 0, 0)  # ID 0, DF clear
    assert internet_checksum(outer) == 0, "outer IPv4 checksum"
    assert (socket.inet_ntoa(src), socket.inet_ntoa(dst)) == (NODE_IP, target)
    assert total == len(frame) - 14 == 20 + 8 + 40 + len(inner)
    sport, dport, length, checksum = struct.unpack("!HHHH", frame[34:42])
    assert (sport, dport, length) == (SRC_PORT[flow], 6081, total - 20)
    pseudo = outer[12:20] + struct.pack("!BBH", 0, 17, length)
    assert checksum != 0 and internet_checksum(pseudo + frame[34:]) == 0, "outer UDP checksum, as AWS sends one"
    assert frame[42:82] == GENEVE[flow]
    assert frame[82:] == inner


def test_runs_unprivileged_in_a_user_namespace(seen):
    assert seen["uid_map"][2] == "1"  # only its root mapped
    assert "cannot load BPF programs here" in seen["load_refused"]  # yet it runs everything below


def test_gso_goes_to_the_slow_path(seen):
    # A flow's GSO skb: not encapsulated, shown to the ring (the filter agrees), counted.
    assert seen["gso"]["appliance"] == []
    assert len(seen["gso"]["ring"]) == 1 and bytes.fromhex(seen["gso"]["ring"][0])[14:] == INNER["gso"]
    assert seen["counters"]["encap_gso"] == 1


def test_encap_of_a_flow_in_the_map(seen):
    _check_encapsulated(_one(seen["udp"]["appliance"]), INNER["udp"], 1, APPL_IP)
    _check_encapsulated(_one(seen["udp_max"]["appliance"]), INNER["udp_max"], 1, APPL_IP)  # 8,500 B inner
    _check_encapsulated(_one(seen["udp_1024"]["appliance"]), INNER["udp_1024"], 1, APPL_IP)
    _check_encapsulated(_one(seen["udp_1537"]["appliance"]), INNER["udp_1537"], 1, APPL_IP)
    _check_encapsulated(_one(seen["ack"]["appliance"]), INNER["ack"], 2, APPL_IP)


def test_encap_next_hop_comes_from_the_fib(seen):
    # target 10.9.0.10 is routed via the appliance's 10.1.0.10: its MAC, the target's address
    _check_encapsulated(_one(seen["routed"]["appliance"]), INNER["routed"], 3, ROUTED_IP)


def test_slow_path_packets_are_left_alone(seen):
    for step in ("miss", "syn", "other_endpoint"):  # no flow; SYN; same 5-tuple on another endpoint
        assert seen[step]["appliance"] == [], step


def test_ring_filter_hides_exactly_the_fast_path(seen):
    for step in ("udp", "udp_max", "udp_1024", "udp_1537", "routed", "ack"):
        assert seen[step]["ring"] == [], step
    assert [bytes.fromhex(f) for f in seen["miss"]["ring"]] == [eth(EP_MAC, RTR_MAC, INNER["miss"])]
    assert [bytes.fromhex(f) for f in seen["syn"]["ring"]] == [eth(EP_MAC, RTR_MAC, INNER["syn"])]
    # the filter keys by the ring's interface too: gwe0's flow is not gwe1's
    assert [bytes.fromhex(f) for f in seen["other_endpoint"]["ring1"]] == [eth(EP1_MAC, RTR1_MAC, INNER["udp"])]
    assert [bytes.fromhex(f) for f in seen["after_delete"]["ring"]] == [eth(EP_MAC, RTR_MAC, INNER["udp"])]
    assert seen["after_delete"]["appliance"] == []


def test_decap_of_a_known_return(seen):
    expected = eth(RTR_MAC, EP_MAC, INNER["return"])
    assert _one(seen["return"]["router"]) == expected
    assert _one(seen["return_swapped"]["router"]) == expected  # to the flow's source port
    # the frame the node sends out of the endpoint veth is not the ring's to hide,
    # even though the flow's reverse direction is in the map
    assert [bytes.fromhex(f) for f in seen["return"]["ring"]] == [expected]


def test_decap_leaves_the_rest_to_the_slow_path(seen):
    for step in ("return_spoofed", "return_wrong_port", "return_unknown", "return_oversize"):
        assert seen[step]["router"] == [], step


def test_counters(seen):
    c = seen["counters"]
    assert (c["encap_hit"], c["encap_miss"], c["encap_slow"], c["encap_gso"], c["encap_error"]) == (6, 2, 1, 1, 0)
    assert (c["decap_hit"], c["decap_miss"], c["decap_mismatch"], c["decap_oversize"], c["decap_error"]) == \
        (2, 1, 2, 1, 0)
    packets, nbytes, last_seen = seen["flow_counters"]["1"]
    assert (packets, nbytes) == (4, sum(len(INNER[n]) for n in ("udp", "udp_max", "udp_1024", "udp_1537")))
    assert 0 < last_seen <= seen["now_ns"]
    assert seen["flow_counters"]["2"][:2] == [1, len(INNER["ack"])]  # the SYN went to the slow path
    assert seen["flow_counters"]["reverse"] == [0, 0, 0]
    packets, nbytes, last_seen = seen["return_counters"][GENEVE[1].hex()]
    assert (packets, nbytes) == (2, 2 * len(INNER["return"])) and 0 < last_seen <= seen["now_ns"]


def test_map_operations_report_instead_of_raising(seen):
    assert seen["replace_existing"] is True
    assert seen["delete_absent"] is False


def test_closing_a_link_detaches_its_program(seen):
    assert seen["after_close"]["appliance"] == [] and seen["return_after_close"]["router"] == []
    assert seen["counters_moved_after_close"] == {}
    # the filter still hides a flow in the map until it is detached too (see fastpath's docstring)
    assert seen["after_close"]["ring"] == []
    assert [bytes.fromhex(f) for f in seen["after_detach_filter"]["ring"]] == [eth(EP_MAC, RTR_MAC, INNER["ack"])]
    assert seen["after_detach_filter"]["appliance"] == []


def test_full_map_and_dump():
    """Privileged, no namespaces: fill `flows` to max_entries; one more is refused with
    False, not an exception, and the batched dump returns every entry."""
    fds = fastpath.load()
    try:
        action = fastpath.FlowAction(1, NODE_IP, APPL_IP, 50000, GENEVE[1], fastpath.Counters(3, 4, 5))
        keys = [fastpath.FlowKey(1, CLIENT, SERVER, n >> 16 or 1, n & 0xFFFF, 17) for n in range(fastpath.MAX_FLOWS)]
        assert all(fastpath.put_flow(fds.flows, key, action) for key in keys)
        assert fastpath.put_flow(fds.flows, fastpath.FlowKey(2, CLIENT, SERVER, 9, 9, 17), action) is False
        assert fastpath.put_flow(fds.flows, keys[0], action) is True  # replacing still works
        dump = fastpath.flow_counters(fds.flows)
        assert len(dump) == fastpath.MAX_FLOWS and set(dump) == set(keys)
        assert set(dump.values()) == {fastpath.Counters(3, 4, 5)}
        assert fastpath.get_flow(fds.flows, keys[7]) == action
        assert fastpath.delete_flow(fds.flows, keys[7]) and fastpath.get_flow(fds.flows, keys[7]) is None
        assert fastpath.return_counters(fds.returns) == {}  # an empty map dumps as nothing
        with pytest.raises(fastpath.FastPathError) as error:
            fastpath.put_flow(fds.encap, keys[0], action)  # a program, not a map
        assert error.value.errno == errno.EINVAL and "BPF_MAP_UPDATE_ELEM(flows)" in str(error.value)
    finally:
        fds.close()




if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    print(json.dumps(child(fastpath.FastPathFds.from_dict(json.loads(sys.argv[2])))))
