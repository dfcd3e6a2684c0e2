"""The eBPF fast path's pure parts: map codecs (fastpath.c's struct layouts), the flow
key of an inner packet, and the eligibility predicate the programs apply."""
from __future__ import annotations

import os
import shutil
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpclab.engines.io.geneve import GwlbHeader
from vpclab.engines.gwlb.fastpath import (
    COUNTER_SLOTS, COUNTERS, FLOW_KEY, FLOW_VALUE, GENEVE_LEN, MAX_INNER, RETURN_VALUE, Counters, FastPathFds,
    FlowAction, FlowKey, ReturnAction, fast_path_eligible, flow_key, load, possible_cpus, sum_counters,
    unavailable_reason, verified_insns,
)

GENEVE = GwlbHeader(protocol=0x0800, endpoint_id=0x0123456789ABCDEF, flow_cookie=0x55908770).raw
ROUTER_MAC, NODE_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def ipv4(proto: int, payload: bytes, *, src="10.0.1.10", dst="10.0.2.10", frag=0, ihl=5,
         total: int | None = None) -> bytes:
    options = bytes(4 * (ihl - 5))
    length = 20 + len(options) + len(payload) if total is None else total
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, length, 1, frag, 64, proto, 0,
                         bytes(int(x) for x in src.split(".")), bytes(int(x) for x in dst.split(".")))
    return header + options + payload


def udp(sport=40000, dport=7, data=b"hello", **kw) -> bytes:
    return ipv4(17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data, **kw)


def tcp(flags: int, sport=40000, dport=80, data=b"", **kw) -> bytes:
    return ipv4(6, struct.pack("!HHIIBBHHH", sport, dport, 1, 2, 5 << 4, flags, 65535, 0, 0) + data, **kw)


def test_struct_sizes_match_fastpath_c():
    # fastpath.c: flow_key 20 B, flow_value 80 B (u64s 8-aligned at 56), return_value 48 B
    assert (FLOW_KEY.size, FLOW_VALUE.size, RETURN_VALUE.size) == (20, 80, 48)
    assert len(GENEVE) == GENEVE_LEN
    assert len(COUNTERS) <= COUNTER_SLOTS and len(set(COUNTERS)) == len(COUNTERS)


def test_flow_key_layout():
    key = FlowKey(7, "10.0.1.10", "10.0.2.10", 40000, 7, 17)
    raw = key.pack()
    assert raw == struct.pack("=I", 7) + bytes([10, 0, 1, 10, 10, 0, 2, 10]) + struct.pack("!HH", 40000, 7) \
        + bytes([17, 0, 0, 0])
    assert FlowKey.unpack(raw) == key


def test_flow_action_layout():
    action = FlowAction(3, "10.1.0.5", "10.1.0.10", 50123, GENEVE, Counters(5, 600, 123456789))
    raw = action.pack()
    assert raw[:4] == struct.pack("=I", 3)
    assert raw[4:8] == bytes([10, 1, 0, 5]) and raw[8:12] == bytes([10, 1, 0, 10])
    assert raw[12:14] == struct.pack("!H", 50123) and raw[14:16] == b"\0\0"
    assert raw[16:56] == GENEVE
    assert struct.unpack("=QQQ", raw[56:]) == (5, 600, 123456789)
    assert FlowAction.unpack(raw) == action


def test_return_action_layout():
    action = ReturnAction(4, "10.1.0.10", 50123, ROUTER_MAC, NODE_MAC)
    raw = action.pack()
    assert raw[:12] == struct.pack("=I", 4) + bytes([10, 1, 0, 10]) + struct.pack("!H", 50123) + b"\0\0"
    assert raw[12:24] == ROUTER_MAC + NODE_MAC and raw[24:] == bytes(24)
    assert ReturnAction.unpack(raw) == action


def test_codecs_refuse_bad_lengths():
    with pytest.raises(ValueError):
        FlowAction(1, "10.1.0.5", "10.1.0.10", 1, GENEVE[:39]).pack()
    with pytest.raises(ValueError):
        ReturnAction(1, "10.1.0.10", 1, ROUTER_MAC[:5], NODE_MAC).pack()


@given(ifindex=st.integers(0, 2**32 - 1), src=st.binary(min_size=4, max_size=4), dst=st.binary(min_size=4, max_size=4),
       sport=st.integers(0, 65535), dport=st.integers(0, 65535), proto=st.sampled_from([6, 17]))
def test_flow_key_roundtrip(ifindex, src, dst, sport, dport, proto):
    key = FlowKey(ifindex, ".".join(map(str, src)), ".".join(map(str, dst)), sport, dport, proto)
    assert FlowKey.unpack(key.pack()) == key


def test_flow_key_of_a_packet():
    assert flow_key(9, udp(40000, 7)) == FlowKey(9, "10.0.1.10", "10.0.2.10", 40000, 7, 17)
    assert flow_key(9, tcp(0x10, 1234, 443, src="192.168.0.1", dst="10.9.9.9")) == \
        FlowKey(9, "192.168.0.1", "10.9.9.9", 1234, 443, 6)
    # its packing is what the programs build from the frame: ifindex, then bytes 12..24 of the packet
    packet = udp(40000, 7)
    assert flow_key(9, packet).pack() == struct.pack("=I", 9) + packet[12:24] + bytes([17, 0, 0, 0])


@pytest.mark.parametrize("packet", [
    ipv4(1, b"\x08\x00" + bytes(6)),          # ICMP
    udp(ihl=6),                               # options: the port bytes are elsewhere
    bytes(10),                                # short
    b"\x60" + bytes(47),                      # IPv6
])
def test_no_flow_key(packet):
    assert flow_key(1, packet) is None


def test_eligible():
    assert fast_path_eligible(udp())
    assert fast_path_eligible(udp(data=b""))                         # 28 bytes: the smallest UDP
    assert fast_path_eligible(tcp(0x10))                             # ACK
    assert fast_path_eligible(tcp(0x18, data=b"x" * 100))            # PSH|ACK with data
    assert fast_path_eligible(tcp(0x10 | 0x20 | 0x40 | 0x80))        # URG, ECE, CWR do not matter
    assert fast_path_eligible(udp(data=bytes(MAX_INNER - 28)))       # exactly 8,500 bytes


@pytest.mark.parametrize("packet, why", [
    (tcp(0x02), "SYN"),
    (tcp(0x12), "SYN|ACK"),
    (tcp(0x11), "FIN|ACK"),
    (tcp(0x04), "RST"),
    (tcp(0x14), "RST|ACK"),
    (udp(frag=0x2000), "more fragments"),
    (udp(frag=0x0001), "a fragment offset"),
    (udp(ihl=6), "IP options"),
    (udp(data=bytes(MAX_INNER - 27)), "8,501 bytes"),
    (udp()[:-1], "shorter than its total length"),
    (udp() + b"\0\0", "trailing bytes (Ethernet padding)"),
    (ipv4(1, bytes(8)), "ICMP"),
    (ipv4(47, bytes(8)), "GRE"),
    (ipv4(17, bytes(4)), "UDP header cut"),
    (ipv4(6, bytes(19)), "TCP header cut"),
    (b"\x60" + bytes(59), "IPv6"),
    (b"", "empty"),
])
def test_not_eligible(packet, why):
    assert not fast_path_eligible(packet), why


def test_eligible_packets_accept_dont_fragment():
    assert fast_path_eligible(udp(frag=0x4000))  # DF only


def test_per_cpu_counters():
    assert possible_cpus("0-1\n") == 2
    assert possible_cpus("0") == 1
    assert possible_cpus("0,2-3") == 3
    assert sum_counters(struct.pack("=3Q", 1, 2, 40), 3) == 43


def test_fds_roundtrip_through_json_config():
    fds = FastPathFds(encap=10, decap=11, ring_filter=12, flows=13, returns=14, counters=15, config=16)
    assert FastPathFds.from_dict(fds.to_dict()) == fds
    assert fds.all() == (10, 11, 12, 13, 14, 15, 16)
    with pytest.raises(KeyError):
        FastPathFds.from_dict({"encap": 1})


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("clang") is None,
                    reason="only where install.sh could build and load it: root, with clang")
def test_install_sh_built_a_fast_path_this_machine_can_load():
    """The fast path's lab tests skip when it is unavailable; here, that would hide a broken build."""
    assert unavailable_reason() is None


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("clang") is None,
                    reason="only where install.sh could build and load it: root, with clang")
def test_the_verifier_walks_few_instructions():
    """Each lab node loads its own instance: a byte-by-byte tail of the checksum once made
    the verifier walk ~259,000 instructions (0.4 s a load); the chunked sum walks ~1,400."""
    fds = load()
    try:
        walked = {name: verified_insns(getattr(fds, name)) for name in ("encap", "decap", "ring_filter")}
    finally:
        fds.close()
    assert all(0 < n < 10_000 for n in walked.values()), walked
