"""PROXY protocol v2 as an NLB writes it, byte for byte (aws-behaviour.md §3.5)."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpclab.engines.io.proxy_protocol import (
    AWS_HEADER_LENGTH,
    SIGNATURE,
    ProxyProtocolError,
    bytes_needed,
    crc32c,
    local_header,
    parse_header,
    proxy_header,
)

# The real header of reference §3.5: a consumer reaching an endpoint service through PrivateLink.
AWS_PRIVATELINK_HEADER = bytes.fromhex(
    "0d0a0d0a000d0a515549540a" "21" "11" "0054"
    "ac1f0771" "ac1f0a1f" "c8f2" "0050"
    "03" "0004" "e8d6892d"
    "ea" "0017" "01" + b"vpce-08d2bf15fac5001c9".hex() +
    "04" "0024" + "00" * 36
)
CONSUMER = ("172.31.7.113", 51442)
ENDPOINT_ENI = ("172.31.10.31", 80)
VPCE = "vpce-08d2bf15fac5001c9"


def zero_crc(header: bytes, at: int) -> bytes:
    return header[:at] + bytes(4) + header[at + 4:]


# ---------------------------------------------------------------- encoding


def test_privatelink_header_matches_aws_bytes():
    assert len(AWS_PRIVATELINK_HEADER) == 100
    header = proxy_header(CONSUMER, ENDPOINT_ENI, vpc_endpoint_id=VPCE)
    assert header.hex() == AWS_PRIVATELINK_HEADER.hex()
    assert header[31:35] == bytes.fromhex("e8d6892d")


def test_reference_crc_is_crc32c_of_the_header_with_the_checksum_zeroed():
    assert crc32c(zero_crc(AWS_PRIVATELINK_HEADER, 31)) == 0xE8D6892D


def test_crc32c_matches_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")


@pytest.mark.parametrize("src, dst, protocol", [
    (CONSUMER, ENDPOINT_ENI, "tcp"),
    (("198.51.100.7", 1), ("10.0.1.10", 53), "udp"),
    (("2001:db8::1", 40000), ("2001:db8:1::a", 443), "tcp"),
    (("::1", 5), ("::2", 6), "udp"),
])
@pytest.mark.parametrize("vpce", [None, VPCE])
def test_header_is_padded_to_100_bytes(src, dst, protocol, vpce):
    header = proxy_header(src, dst, protocol=protocol, vpc_endpoint_id=vpce)
    assert len(header) == AWS_HEADER_LENGTH
    assert struct.unpack("!H", header[14:16])[0] == 84
    parsed = parse_header(header)
    assert parsed.tlvs[0][0] == 0x03 and parsed.tlvs[-1] == (0x04, bytes(len(parsed.tlvs[-1][1])))
    assert parsed.crc_ok


@pytest.mark.parametrize("src, dst, protocol, family", [
    (CONSUMER, ENDPOINT_ENI, "tcp", 0x11),
    (CONSUMER, ENDPOINT_ENI, "udp", 0x12),
    (("2001:db8::1", 1), ("2001:db8::2", 2), "tcp", 0x21),
    (("2001:db8::1", 1), ("2001:db8::2", 2), "UDP", 0x22),
])
def test_family_byte_names_address_family_and_transport(src, dst, protocol, family):
    header = proxy_header(src, dst, protocol=protocol)
    assert header[12] == 0x21 and header[13] == family


def test_header_without_endpoint_id_has_only_crc_and_noop():
    header = proxy_header(CONSUMER, ENDPOINT_ENI)
    assert [kind for kind, _ in parse_header(header).tlvs] == [0x03, 0x04]
    assert header[35:38] == bytes.fromhex("04003e")  # 100 - 35 - 3 = 62 bytes of padding


def test_health_check_header_is_local_without_addresses():
    header = local_header()
    assert header[:16] == SIGNATURE + bytes.fromhex("20110054")
    assert header[16:19] == bytes.fromhex("030004")
    assert crc32c(zero_crc(header, 19)) == int.from_bytes(header[19:23], "big")
    assert header[23:26] == bytes.fromhex("04004a")  # a 74-byte NOOP
    assert header[26:] == bytes(74) and len(header) == 100
    parsed = parse_header(header)
    assert parsed.is_local and parsed.source is None and parsed.destination is None
    assert parsed.crc_ok is True


def test_mixed_ip_versions_and_unknown_protocols_are_refused():
    with pytest.raises(ValueError):
        proxy_header(("10.0.0.1", 1), ("::1", 2))
    with pytest.raises(ValueError):
        proxy_header(CONSUMER, ENDPOINT_ENI, protocol="sctp")
    with pytest.raises(ValueError):
        proxy_header(CONSUMER, ENDPOINT_ENI, vpc_endpoint_id="vpce-" + "0" * 60)  # cannot fit in 100 bytes


# ---------------------------------------------------------------- decoding


def test_parse_reads_the_aws_header():
    parsed = parse_header(AWS_PRIVATELINK_HEADER + b"GET / HTTP/1.1\r\n\r\n")
    assert (parsed.command, parsed.family_name, parsed.protocol) == ("PROXY", "TCP4", "tcp")
    assert parsed.source == CONSUMER and parsed.destination == ENDPOINT_ENI
    assert parsed.vpc_endpoint_id == VPCE
    assert parsed.crc_ok is True
    assert parsed.header_length == 100 and parsed.raw == AWS_PRIVATELINK_HEADER


def test_data_without_the_signature_is_not_a_header():
    assert parse_header(b"GET / HTTP/1.1\r\n\r\n") is None
    assert parse_header(b"\r\n\r\nGET") is None
    assert parse_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n") is None  # version 1 is not ours


def test_a_corrupted_header_parses_with_a_bad_crc():
    corrupted = bytearray(AWS_PRIVATELINK_HEADER)
    corrupted[17] ^= 0x01  # the consumer's address
    assert parse_header(bytes(corrupted)).crc_ok is False


def test_header_without_crc_has_no_crc_verdict():
    # haproxy's minimal LOCAL header: UNSPEC, nothing follows.
    parsed = parse_header(SIGNATURE + bytes.fromhex("20000000"))
    assert parsed.is_local and parsed.crc_ok is None and parsed.tlvs == () and parsed.header_length == 16


def test_local_header_with_addresses_is_accepted():
    addresses = bytes(12)
    crc_tlv = bytes.fromhex("030004") + bytes(4)
    body = addresses + crc_tlv
    raw = SIGNATURE + bytes([0x20, 0x11]) + struct.pack("!H", len(body)) + body
    raw = raw[:31] + crc32c(raw).to_bytes(4, "big")
    parsed = parse_header(raw)
    assert parsed.is_local and parsed.crc_ok is True


@pytest.mark.parametrize("raw, message", [
    (SIGNATURE + bytes.fromhex("11110000"), "version"),
    (SIGNATURE + bytes.fromhex("22110000"), "command"),
    (SIGNATURE + bytes.fromhex("21410000"), "family"),
    (SIGNATURE + bytes.fromhex("2111000400000000"), "too short"),
    (SIGNATURE + bytes.fromhex("2111000e") + bytes(12) + b"\x04\x00", "truncated TLV"),
    (SIGNATURE + bytes.fromhex("2111000f") + bytes(12) + b"\x04\x00\x05", "overruns"),
    (SIGNATURE + bytes.fromhex("21110010") + bytes(12) + b"\x03\x00\x01\x00", "CRC32C TLV"),
    (SIGNATURE + bytes.fromhex("21110011") + bytes(12) + b"\xea\x00\x02\x01\xff", "ASCII"),
])
def test_malformed_headers_raise_proxy_protocol_error(raw, message):
    with pytest.raises(ProxyProtocolError, match=message):
        parse_header(raw)


@pytest.mark.parametrize("cut", [0, 1, 11, 12, 15, 16, 50, 99])
def test_truncated_header_raises(cut):
    with pytest.raises(ProxyProtocolError):
        parse_header(AWS_PRIVATELINK_HEADER[:cut])


def test_bytes_needed_guides_a_stream_reader():
    assert bytes_needed(b"") == 16
    assert bytes_needed(b"\r\n\r\n") == 16
    assert bytes_needed(AWS_PRIVATELINK_HEADER[:15]) == 16
    assert bytes_needed(AWS_PRIVATELINK_HEADER[:16]) == 100
    assert bytes_needed(AWS_PRIVATELINK_HEADER + b"data") == 100
    assert bytes_needed(b"G") is None
    assert bytes_needed(b"\r\n\r\nGET") is None


# ---------------------------------------------------------------- properties

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
endpoint_ids = st.none() | st.text("0123456789abcdef", min_size=8, max_size=17).map(lambda s: "vpce-" + s)


@given(
    addresses=st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)),
    src_port=ports,
    dst_port=ports,
    protocol=st.sampled_from(["tcp", "udp"]),
    vpce=endpoint_ids,
)
def test_encode_then_parse_round_trips(addresses, src_port, dst_port, protocol, vpce):
    src, dst = (addresses[0], src_port), (addresses[1], dst_port)
    header = proxy_header(src, dst, protocol=protocol, vpc_endpoint_id=vpce)
    parsed = parse_header(header + b"payload")
    assert len(header) == 100
    assert (parsed.command, parsed.protocol) == ("PROXY", protocol)
    assert (parsed.source, parsed.destination) == (src, dst)
    assert parsed.vpc_endpoint_id == vpce
    assert parsed.crc_ok is True and parsed.raw == header


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_proxy_protocol_error(data):
    for candidate in (data, SIGNATURE + data, SIGNATURE + data[:1] + b"\x11" + data[2:]):
        try:
            parse_header(candidate)
        except ProxyProtocolError:
            pass


@given(
    st.sampled_from([AWS_PRIVATELINK_HEADER, local_header(), proxy_header(("::1", 1), ("::2", 2))]),
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 255),
)
def test_truncated_or_garbled_headers_raise_only_proxy_protocol_error(header, cut, at, value):
    garbled = bytearray(header)
    garbled[at] = value
    for candidate in (header[:cut], bytes(garbled), bytes(garbled)[:cut]):
        try:
            parse_header(candidate)
        except ProxyProtocolError:
            pass
