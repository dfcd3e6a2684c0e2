"""GENEVE as GWLB speaks it: reference §1.1 bytes, RFC 8926 drops, interop with scapy and tshark."""
from __future__ import annotations

import shutil
import struct
import subprocess

import pytest
from hypothesis import given, strategies as st

from vpclab.engines.io.geneve import (
    ETH_P_IP, ETH_P_IPV6, GENEVE_PORT, HEADER_LEN, OVERHEAD, GeneveError, GwlbHeader, decode, encode,
    int_to_vpce_id, parse_inner, vpce_id_to_int,
)

# A TCP SYN 10.0.1.10:40000 -> 10.0.2.20:80, valid checksums.
INNER_SYN = bytes.fromhex(
    "4500002800010000400663b20a00010a0a000214"
    "9c400050000000000000000050022000dc340000")
CAPTURED = bytes.fromhex(
    "0800 0800 0000 0000"
    "0108 0102 07db54041f7d24ae"
    "0108 0202 0000000000000000"
    "0108 0301 55908770") + INNER_SYN


def option(cls: int, typ: int, value: bytes) -> bytes:
    assert len(value) % 4 == 0
    return struct.pack("!HBB", cls, typ, len(value) // 4) + value


GWLB_OPTIONS = (option(0x0108, 1, bytes(8)), option(0x0108, 2, bytes(8)), option(0x0108, 3, bytes(4)))


def geneve(options: bytes, *, first: int | None = None, flags: int = 0, protocol: int = ETH_P_IP,
           vni: int = 0) -> bytes:
    if first is None:
        first = len(options) // 4
    return struct.pack("!BBHI", first, flags, protocol, vni << 8) + options


def reason_of(datagram: bytes) -> str:
    with pytest.raises(GeneveError) as caught:
        decode(datagram)
    return caught.value.reason


# --- the captured bytes -------------------------------------------------------

def test_captured_gwlb_datagram_decodes():
    header, offset = decode(CAPTURED)
    assert offset == HEADER_LEN == 40
    assert header.protocol == ETH_P_IP
    assert header.endpoint_id == 0x07DB54041F7D24AE
    assert header.vpce_id == "vpce-007db54041f7d24ae"
    assert header.attachment_id == 0
    assert header.flow_cookie == 0x55908770
    assert CAPTURED[offset:] == INNER_SYN


def test_captured_gwlb_datagram_reencodes_byte_identical():
    header, offset = decode(CAPTURED)
    rebuilt = GwlbHeader(protocol=ETH_P_IP, endpoint_id=header.endpoint_id, flow_cookie=header.flow_cookie)
    assert encode(rebuilt, CAPTURED[offset:]) == CAPTURED
    assert encode(header, CAPTURED[offset:]) == CAPTURED
    assert rebuilt == header


def test_encoding_is_40_bytes_with_options_1_2_3_of_class_0x0108():
    header = GwlbHeader(protocol=ETH_P_IPV6, endpoint_id=1, attachment_id=2, flow_cookie=3)
    raw = encode(header, b"")
    assert len(raw) == 40 and OVERHEAD == 68
    assert raw[0] == 0x08 and raw[1] == 0 and raw[2:4] == b"\x86\xdd" and raw[4:8] == bytes(4)
    assert [raw[8:12], raw[20:24], raw[32:36]] == [
        bytes.fromhex("01080102"), bytes.fromhex("01080202"), bytes.fromhex("01080301")]
    assert struct.unpack("!Q", raw[12:20]) == (1,)
    assert struct.unpack("!Q", raw[24:32]) == (2,)
    assert struct.unpack("!I", raw[36:40]) == (3,)


def test_header_rejects_out_of_range_fields():
    for bad in (dict(protocol=0x6558), dict(endpoint_id=1 << 64), dict(endpoint_id=-1),
                dict(attachment_id=1 << 64), dict(flow_cookie=1 << 32)):
        fields = dict(protocol=ETH_P_IP, endpoint_id=1, flow_cookie=1) | bad
        with pytest.raises(ValueError):
            GwlbHeader(**fields)


def test_decode_accepts_memoryview_and_bytearray_without_copying_inner():
    view = memoryview(bytearray(CAPTURED))
    header, offset = decode(view)
    assert header.flow_cookie == 0x55908770
    assert view[offset:] == INNER_SYN


# --- RFC 8926 and gwlbtun drops ------------------------------------------------

def test_every_short_prefix_is_truncated():
    for size in range(40):
        assert reason_of(CAPTURED[:size]) == "truncated"


def test_unknown_version_is_dropped():
    assert reason_of(bytes([0x48]) + CAPTURED[1:]) == "bad_version"


def test_control_packet_is_dropped_distinctly():
    assert reason_of(CAPTURED[:1] + b"\x80" + CAPTURED[2:]) == "control_packet"


def test_protocol_other_than_ipv4_or_ipv6_is_dropped():
    assert reason_of(geneve(b"".join(GWLB_OPTIONS), protocol=0x6558)) == "bad_protocol"


def test_nonzero_vni_is_dropped():
    assert reason_of(geneve(b"".join(GWLB_OPTIONS), vni=5)) == "bad_vni"


def test_unknown_critical_option_is_dropped():
    critical = option(0xFFFF, 0x80 | 7, bytes(4))
    assert reason_of(geneve(b"".join(GWLB_OPTIONS) + critical, flags=0x40)) == "critical_option"


def test_critical_bit_on_a_gwlb_class_option_type_is_unknown_and_dropped():
    assert reason_of(geneve(b"".join(GWLB_OPTIONS) + option(0x0108, 0x81, bytes(4)))) == "critical_option"


def test_unknown_noncritical_option_is_skipped_and_kept_in_raw():
    extra = option(0x0101, 0x05, b"abcdefgh")
    datagram = geneve(GWLB_OPTIONS[0] + extra + GWLB_OPTIONS[1] + GWLB_OPTIONS[2]) + INNER_SYN
    header, offset = decode(datagram)
    assert offset == 52 and datagram[offset:] == INNER_SYN
    assert header.raw == datagram[:52]  # echoing it returns exactly what was received


def test_gwlb_options_in_another_order_decode():
    header, offset = decode(geneve(GWLB_OPTIONS[2] + GWLB_OPTIONS[0] + GWLB_OPTIONS[1]) + INNER_SYN)
    assert offset == 40 and header.flow_cookie == 0


def test_option_running_past_the_options_area_is_dropped():
    long = struct.pack("!HBB", 0x0101, 1, 3) + bytes(4)  # claims 12 B of value, has 4
    assert reason_of(geneve(b"".join(GWLB_OPTIONS) + long) + INNER_SYN) == "bad_option_length"


def test_options_length_past_the_datagram_is_truncated():
    assert reason_of(geneve(b"".join(GWLB_OPTIONS), first=0x0A)) == "truncated"


@pytest.mark.parametrize("missing", [0, 1, 2])
def test_any_missing_gwlb_option_is_dropped(missing):
    options = b"".join(o for i, o in enumerate(GWLB_OPTIONS) if i != missing)
    assert reason_of(geneve(options) + INNER_SYN) == "missing_gwlb_options"


def test_no_options_at_all_is_missing_gwlb_options():
    assert reason_of(geneve(b"") + INNER_SYN) == "missing_gwlb_options"


@pytest.mark.parametrize("index,value", [(0, bytes(4)), (1, bytes(12)), (2, bytes(8))])
def test_gwlb_option_with_wrong_length_is_dropped(index, value):
    options = list(GWLB_OPTIONS)
    options[index] = option(0x0108, index + 1, value)
    assert reason_of(geneve(b"".join(options)) + INNER_SYN) == "bad_gwlb_option_length"


def test_repeated_gwlb_option_is_dropped():
    assert reason_of(geneve(b"".join(GWLB_OPTIONS) + GWLB_OPTIONS[2])) == "duplicate_gwlb_option"


# --- properties ------------------------------------------------------------------

headers = st.builds(
    lambda protocol, endpoint, attachment, cookie: GwlbHeader(
        protocol=protocol, endpoint_id=endpoint, attachment_id=attachment, flow_cookie=cookie),
    st.sampled_from([ETH_P_IP, ETH_P_IPV6]), st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1))


@given(headers, st.binary(max_size=64))
def test_encode_decode_round_trip(header, inner):
    datagram = encode(header, inner)
    decoded, offset = decode(datagram)
    assert decoded == header and decoded.raw == datagram[:40]
    assert datagram[offset:] == inner
    assert decode(memoryview(datagram))[0] == header


@given(st.binary(max_size=120))
def test_arbitrary_bytes_raise_only_geneve_error(data):
    try:
        header, offset = decode(data)
    except GeneveError as error:
        assert error.reason.isidentifier()
    else:
        assert 8 <= offset <= len(data) and header.raw == data[:offset]


@given(headers, st.binary(min_size=1, max_size=40), st.data())
def test_garbled_headers_raise_only_geneve_error(header, inner, data):
    datagram = bytearray(encode(header, inner))
    for _ in range(data.draw(st.integers(1, 4))):
        datagram[data.draw(st.integers(0, 39))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(datagram)))
    try:
        decode(bytes(datagram[:cut]))
    except GeneveError:
        pass


# --- endpoint IDs -----------------------------------------------------------------

def test_vpce_id_round_trip():
    assert vpce_id_to_int("vpce-0123456789abcdef0") == 0x0123456789ABCDEF0
    assert int_to_vpce_id(0x0123456789ABCDEF0) == "vpce-0123456789abcdef0"
    assert int_to_vpce_id(0x07DB54041F7D24AE) == "vpce-007db54041f7d24ae"


@pytest.mark.parametrize("bad", ["vpce-123", "vpce-1123456789abcdef0", "vpce-0123456789ABCDEF0",
                                 "vpc-0123456789abcdef0", "vpce-0123456789abcdef0 "])
def test_malformed_vpce_ids_are_rejected(bad):
    with pytest.raises(ValueError):
        vpce_id_to_int(bad)


@given(st.integers(0, 2**64 - 1))
def test_vpce_id_conversion_is_a_bijection(value):
    assert vpce_id_to_int(int_to_vpce_id(value)) == value


# --- the inner packet -------------------------------------------------------------

def test_parse_inner_reads_tcp_five_tuple_and_flags():
    proto, src, dst, sport, dport, flags, length = parse_inner(INNER_SYN)
    assert (proto, src, dst, sport, dport, flags, length) == (
        6, bytes([10, 0, 1, 10]), bytes([10, 0, 2, 20]), 40000, 80, 0x02, 40)


def test_parse_inner_reports_declared_length_under_padding():
    assert parse_inner(INNER_SYN + bytes(6))[6] == 40


def test_parse_inner_ipv6_udp_behind_extension_headers():
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
    packet = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop()
                   / IPv6ExtHdrDestOpt() / UDP(sport=5353, dport=53) / b"q")
    proto, src, dst, sport, dport, flags, length = parse_inner(packet)
    assert (proto, sport, dport, length) == (17, 5353, 53, len(packet))
    assert src == bytes.fromhex("20010db8000000000000000000000001")


def test_parse_inner_non_first_fragments_have_no_ports():
    from scapy.layers.inet import IP, UDP, fragment
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
    v4 = fragment(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / bytes(3000), fragsize=1000)
    assert parse_inner(bytes(v4[0]))[3:5] == (1, 2)
    assert parse_inner(bytes(v4[1]))[:5] == (17, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 0, 0)
    v6 = fragment6(IPv6(src="::1", dst="::2") / IPv6ExtHdrFragment() / UDP(sport=1, dport=2) / bytes(3000),
                   1280)
    assert parse_inner(bytes(v6[0]))[:5] == (17, bytes(15) + b"\x01", bytes(15) + b"\x02", 1, 2)
    assert parse_inner(bytes(v6[1]))[3:5] == (0, 0)


@pytest.mark.parametrize("packet", [
    b"", bytes(19), bytes([0x45]) + bytes(19)[1:] + bytes(4),  # total length 0 < header
    bytes([0x35]) + INNER_SYN[1:],                       # version 3
    bytes([0x44]) + INNER_SYN[1:],                       # IHL 4
    INNER_SYN[:30],                                      # shorter than its total length
    INNER_SYN[:2] + b"\x00\x1e" + INNER_SYN[4:30],       # TCP header cut to 10 B
    bytes([0x60]) + bytes(30),                           # IPv6 shorter than 40 B
])
def test_parse_inner_rejects_malformed(packet):
    assert parse_inner(packet) is None


@given(st.binary(max_size=80))
def test_parse_inner_never_raises(data):
    parse_inner(data)
    parse_inner(bytes([0x45]) + data)
    parse_inner(bytes([0x60]) + data)


# --- interop ----------------------------------------------------------------------

def test_scapy_parses_our_encoding_with_three_amazon_options():
    from scapy.contrib.geneve import GENEVE
    from scapy.layers.inet import IP, TCP
    header = GwlbHeader(protocol=ETH_P_IP, endpoint_id=0x0123456789ABCDEF, attachment_id=0, flow_cookie=0xCAFE)
    parsed = GENEVE(encode(header, INNER_SYN))
    assert (parsed.version, parsed.optionlen, parsed.oam, parsed.critical, parsed.vni) == (0, 8, 0, 0, 0)
    assert parsed.proto == ETH_P_IP
    assert [(o.classid, o.type, o.length) for o in parsed.options] == [
        (0x0108, 1, 2), (0x0108, 2, 2), (0x0108, 3, 1)]
    assert parsed.options[0].data == (0x0123456789ABCDEF).to_bytes(8, "big")
    assert parsed.options[2].data == (0xCAFE).to_bytes(4, "big")
    assert parsed[TCP].dport == 80 and parsed[IP].src == "10.0.1.10"


def test_scapy_built_gwlb_packets_decode():
    from scapy.contrib.geneve import GENEVE, GeneveOptions
    from scapy.layers.inet import IP, ICMP
    built = bytes(GENEVE(proto=ETH_P_IP, options=[
        GeneveOptions(classid=0x0108, type=1, data=(42).to_bytes(8, "big")),
        GeneveOptions(classid=0x0108, type=2, data=bytes(8)),
        GeneveOptions(classid=0x0108, type=3, data=(7).to_bytes(4, "big")),
    ]) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP())
    header, offset = decode(built)
    assert (header.endpoint_id, header.flow_cookie, offset) == (42, 7, 40)


def _pcap(frames: list[bytes]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # LINKTYPE_ETHERNET
    for i, frame in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)
    return b"".join(out)


def _frame(geneve_payload: bytes) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    outer = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
             / IP(src="10.1.1.50", dst="10.1.1.60", ttl=255, id=0, flags=0)
             / UDP(sport=50001, dport=GENEVE_PORT) / geneve_payload)
    return bytes(outer)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decodes_our_geneve_without_warnings(tmp_path):
    header = GwlbHeader(protocol=ETH_P_IP, endpoint_id=vpce_id_to_int("vpce-0123456789abcdef0"),
                        flow_cookie=0x55908770)
    path = tmp_path / "gwlb.pcap"
    path.write_bytes(_pcap([_frame(encode(header, INNER_SYN)), _frame(CAPTURED)]))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no user profile surprises
    checks = ["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE"]

    def tshark(*args: str) -> str:
        return subprocess.run(["tshark", "-r", str(path), *checks, *args], capture_output=True, text=True,
                              check=True, env=env, timeout=60).stdout

    verbose = tshark("-V")
    assert verbose.count("Generic Network Virtualization Encapsulation, VNI: 0x000000") == 2
    for option_type in (1, 2, 3):
        assert verbose.count(f"Class: Amazon.com, Inc. (0x0108) Type: 0x0{option_type} (Non-critical)") == 2
    assert verbose.count("Transmission Control Protocol, Src Port: 40000, Dst Port: 80") == 2
    assert "Malformed" not in verbose and "[Checksum Status: Bad]" not in verbose
    expert = tshark("-q", "-z", "expert")
    assert "Warnings (" not in expert and "Errors (" not in expert
