"""GENEVE as the AWS Gateway Load Balancer speaks it (RFC 8926, reference §1).

Every GWLB datagram carries a 40-byte GENEVE header: version 0, VNI 0, and three
class-0x0108 options in order: endpoint ID (type 1, 8 B), attachment ID (type 2,
8 B) and flow cookie (type 3, 4 B). `encode` writes exactly that; `decode` accepts
any RFC 8926 header that carries the three options, keeps the received header
bytes in `GwlbHeader.raw` (appliances echo them byte for byte), and returns the
inner packet's offset so callers can slice or memoryview it without a copy.

`decode` raises only `GeneveError`, whose `reason` is a short stable name used as
a drop counter key.

`parse_inner` reads the addresses, protocol and ports of the inner IP packet,
which the node needs for flow keys and the appliance for its rules.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

GENEVE_PORT = 6081
GWLB_OPTION_CLASS = 0x0108
OPT_ENDPOINT_ID = 1
OPT_ATTACHMENT_ID = 2
OPT_FLOW_COOKIE = 3
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
HEADER_LEN = 40
OVERHEAD = 20 + 8 + HEADER_LEN  # outer IPv4 + UDP + GENEVE: 68 B

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1

# The whole §1.1 header in one struct: flags word, protocol, VNI<<8|reserved,
# then option header + value three times.
_GWLB = struct.Struct("!HHIIQIQII")
_FLAGS_WORD = 0x0800  # version 0, 8 words of options, O=0, C=0
_OPT1 = GWLB_OPTION_CLASS << 16 | OPT_ENDPOINT_ID << 8 | 2
_OPT2 = GWLB_OPTION_CLASS << 16 | OPT_ATTACHMENT_ID << 8 | 2
_OPT3 = GWLB_OPTION_CLASS << 16 | OPT_FLOW_COOKIE << 8 | 1

_BASE = struct.Struct("!BBHI")
_OPT_HEADER = struct.Struct("!HBB")
_U64_AT = struct.Struct("!Q")
_U32_AT = struct.Struct("!I")


class GeneveError(ValueError):
    """A datagram the GWLB data plane must drop; `reason` is a counter key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class GwlbHeader:
    """The GWLB fields of a GENEVE header, plus its exact bytes on the wire.

    Built from fields, `raw` is the canonical 40-byte §1.1 encoding. Decoded,
    `raw` is the header as received (extra options and flag bits included), so
    echoing it returns exactly what GWLB sent.
    """

    protocol: int
    endpoint_id: int
    flow_cookie: int
    attachment_id: int = 0
    raw: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in (ETH_P_IP, ETH_P_IPV6):
            raise ValueError(f"protocol must be 0x0800 or 0x86DD, got {self.protocol:#06x}")
        if not 0 <= self.endpoint_id <= _U64:
            raise ValueError(f"endpoint_id out of 64-bit range: {self.endpoint_id}")
        if not 0 <= self.attachment_id <= _U64:
            raise ValueError(f"attachment_id out of 64-bit range: {self.attachment_id}")
        if not 0 <= self.flow_cookie <= _U32:
            raise ValueError(f"flow_cookie out of 32-bit range: {self.flow_cookie}")
        if not self.raw:
            object.__setattr__(self, "raw", _GWLB.pack(
                _FLAGS_WORD, self.protocol, 0,
                _OPT1, self.endpoint_id, _OPT2, self.attachment_id, _OPT3, self.flow_cookie))

    @property
    def vpce_id(self) -> str:
        return int_to_vpce_id(self.endpoint_id)


def encode(header: GwlbHeader, inner: bytes | bytearray | memoryview) -> bytes:
    """The GENEVE payload of the outer UDP datagram: `header.raw` + `inner`."""
    return header.raw + inner


# Decoded 40-byte headers by their bytes. A flow repeats the same header for
# every packet, so most decodes are one dict lookup and build no new object.
# Only headers that passed full validation get in; bounded by clearing.
_decoded: dict[bytes, GwlbHeader] = {}
_DECODED_MAX = 1 << 15


def decode(datagram: bytes | bytearray | memoryview) -> tuple[GwlbHeader, int]:
    """Validate a GENEVE payload; return its GWLB header and the inner packet offset.

    Drops, by `GeneveError.reason`:
    `truncated` (shorter than its header), `bad_version`, `control_packet` (O=1),
    `bad_protocol` (not IPv4/IPv6), `bad_vni` (not 0), `bad_option_length` (an
    option runs past the options area), `critical_option` (unknown option with
    the critical bit), `missing_gwlb_options`, `bad_gwlb_option_length` (not
    8/8/4 B), `duplicate_gwlb_option`. Unknown non-critical options are skipped.
    """
    head = datagram[:HEADER_LEN]
    if type(head) is not bytes:
        head = bytes(head)
    header = _decoded.get(head)
    if header is not None:
        return header, HEADER_LEN
    header = _decode_slow(datagram)
    if len(header.raw) == HEADER_LEN:
        if len(_decoded) >= _DECODED_MAX:
            _decoded.clear()
        _decoded[header.raw] = header
    return header, len(header.raw)


def _decode_slow(datagram: bytes | bytearray | memoryview) -> GwlbHeader:
    size = len(datagram)
    if size < 8:
        raise GeneveError("truncated")
    first, flags, protocol, vni_word = _BASE.unpack_from(datagram)
    if first >> 6:
        raise GeneveError("bad_version")
    if flags & 0x80:
        raise GeneveError("control_packet")
    if protocol != ETH_P_IP and protocol != ETH_P_IPV6:
        raise GeneveError("bad_protocol")
    if vni_word >> 8:
        raise GeneveError("bad_vni")
    header_len = 8 + (first & 0x3F) * 4
    if size < header_len:
        raise GeneveError("truncated")

    endpoint_id = attachment_id = flow_cookie = None
    pos = 8
    # Options and their lengths are whole 4-byte words, so an option header
    # always fits; only its value can overrun.
    while pos < header_len:
        opt_class, opt_type, opt_len = _OPT_HEADER.unpack_from(datagram, pos)
        words = opt_len & 0x1F
        value = pos + 4
        pos = value + words * 4
        if pos > header_len:
            raise GeneveError("bad_option_length")
        if opt_class == GWLB_OPTION_CLASS and OPT_ENDPOINT_ID <= opt_type <= OPT_FLOW_COOKIE:
            if opt_type == OPT_ENDPOINT_ID:
                if words != 2:
                    raise GeneveError("bad_gwlb_option_length")
                if endpoint_id is not None:
                    raise GeneveError("duplicate_gwlb_option")
                endpoint_id = _U64_AT.unpack_from(datagram, value)[0]
            elif opt_type == OPT_ATTACHMENT_ID:
                if words != 2:
                    raise GeneveError("bad_gwlb_option_length")
                if attachment_id is not None:
                    raise GeneveError("duplicate_gwlb_option")
                attachment_id = _U64_AT.unpack_from(datagram, value)[0]
            else:
                if words != 1:
                    raise GeneveError("bad_gwlb_option_length")
                if flow_cookie is not None:
                    raise GeneveError("duplicate_gwlb_option")
                flow_cookie = _U32_AT.unpack_from(datagram, value)[0]
        elif opt_type & 0x80:
            raise GeneveError("critical_option")
    if endpoint_id is None or attachment_id is None or flow_cookie is None:
        raise GeneveError("missing_gwlb_options")
    return GwlbHeader(protocol=protocol, endpoint_id=endpoint_id, flow_cookie=flow_cookie,
                      attachment_id=attachment_id, raw=bytes(datagram[:header_len]))


_VPCE_ID = re.compile(r"vpce-([0-9a-f]{17})")


def vpce_id_to_int(vpce_id: str) -> int:
    """`vpce-0123456789abcdef0` → its value as GENEVE option 1 carries it."""
    match = _VPCE_ID.fullmatch(vpce_id)
    if match is None:
        raise ValueError(f"not a GWLB endpoint ID (vpce- and 17 hex digits): {vpce_id!r}")
    value = int(match.group(1), 16)
    if value > _U64:
        raise ValueError(f"endpoint ID does not fit 64 bits: {vpce_id!r}")
    return value


def int_to_vpce_id(value: int) -> str:
    """Option 1's value → `vpce-` and 17 hex digits, the way AWS and gwlbtun print it."""
    if not 0 <= value <= _U64:
        raise ValueError(f"endpoint ID out of 64-bit range: {value}")
    return f"vpce-{value:017x}"


# --- the inner packet ------------------------------------------------------

IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10

_IP4 = struct.Struct("!BxHxxHxB2x4s4s")  # ver/ihl, total length, flags/frag, proto, src, dst
_IP4_PORTS = struct.Struct("!xxHxxHxB2x4s4sHH")  # the same without ver/ihl, plus ports after 20 B
_IP6 = struct.Struct("!4xHBx16s16s")     # payload length, next header, src, dst
_PORTS = struct.Struct("!HH")
_IP6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options
_IP6_FRAGMENT = 44
_IP6_AH = 51

InnerInfo = tuple[int, bytes, bytes, int, int, int, int]


def parse_inner(packet: bytes | bytearray | memoryview) -> InnerInfo | None:
    """`(proto, src, dst, sport, dport, tcp_flags, ip_length)` of an IP packet, or None.

    Addresses are the raw 4 or 16 bytes. Ports and flags are 0 for protocols
    other than TCP/UDP and for non-first fragments, which carry no ports.
    `ip_length` is the length the IP header declares: anything after it is
    link-layer padding. None means malformed: not IPv4/IPv6, or a header
    (IP, IPv6 extension, TCP, UDP) that its own lengths say is cut short.
    """
    size = len(packet)
    if size < 20:
        return None
    if packet[0] == 0x45 and size >= 24:
        # IPv4 without options, most packets: one unpack reads the ports too.
        length, frag, proto, src, dst, sport, dport = _IP4_PORTS.unpack_from(packet)
        if length < 20 or length > size:
            return None
        if frag & 0x1FFF:
            return proto, src, dst, 0, 0, 0, length
        if proto == IPPROTO_TCP:
            return (proto, src, dst, sport, dport, packet[33], length) if length >= 40 else None
        if proto == IPPROTO_UDP:
            return (proto, src, dst, sport, dport, 0, length) if length >= 28 else None
        return proto, src, dst, 0, 0, 0, length
    version = packet[0] >> 4
    if version == 4:
        ver_ihl, length, frag, proto, src, dst = _IP4.unpack_from(packet)
        l4 = (ver_ihl & 0x0F) * 4
        if l4 < 20 or length < l4 or length > size:
            return None
        if frag & 0x1FFF:
            return proto, src, dst, 0, 0, 0, length
    elif version == 6:
        if size < 40:
            return None
        payload_len, proto, src, dst = _IP6.unpack_from(packet)
        length = 40 + payload_len
        if length > size:
            return None
        l4 = 40
        for _ in range(8):
            if proto in _IP6_EXTENSIONS:
                if l4 + 8 > length:
                    return None
                proto, ext_len = packet[l4], packet[l4 + 1]
                l4 += (ext_len + 1) * 8
            elif proto == _IP6_FRAGMENT:
                if l4 + 8 > length:
                    return None
                proto = packet[l4]
                offset = (packet[l4 + 2] << 8 | packet[l4 + 3]) >> 3
                l4 += 8
                if offset:
                    return proto, src, dst, 0, 0, 0, length
            elif proto == _IP6_AH:
                if l4 + 8 > length:
                    return None
                proto, ext_len = packet[l4], packet[l4 + 1]
                l4 += (ext_len + 2) * 4
            else:
                break
        else:
            return None
        if l4 > length:
            return None
    else:
        return None
    if proto == IPPROTO_TCP:
        if l4 + 20 > length:
            return None
        sport, dport = _PORTS.unpack_from(packet, l4)
        return proto, src, dst, sport, dport, packet[l4 + 13], length
    if proto == IPPROTO_UDP:
        if l4 + 8 > length:
            return None
        sport, dport = _PORTS.unpack_from(packet, l4)
        return proto, src, dst, sport, dport, 0, length
    return proto, src, dst, 0, 0, 0, length


_TCP_SEQ = struct.Struct("!IIB")  # sequence number, acknowledgment number, data offset
_IP4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IP6_HEADER = struct.Struct("!IHBB16s16s")
_TCP_HEADER = struct.Struct("!HHIIBBHHH")


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071: the ones' complement of the 16-bit ones' complement sum of `data`.

    Python's big integers sum it in C: the sum is the value of the bytes, read
    as one big-endian number, modulo 0xFFFF (because 2**16 = 1 mod 0xFFFF).
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8  # an odd final byte is the high half of a zero-padded word
    if value == 0:
        return 0xFFFF
    rest = value % 0xFFFF
    return 0xFFFF - rest if rest else 0  # rest 0: the sum is 0xFFFF


def tcp_sequence(packet: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """`(seq, ack, length)` of a TCP segment in an IP packet, or None.

    `length` is the sequence space the segment takes: its data, plus one each
    for SYN and FIN. IPv4, or IPv6 whose first next header is TCP; None for
    anything else, or a segment its own lengths say is cut short.
    """
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4 and packet[9] == IPPROTO_TCP:
        l4, length = (packet[0] & 0x0F) * 4, packet[2] << 8 | packet[3]
    elif version == 6 and len(packet) >= 40 and packet[6] == IPPROTO_TCP:
        l4, length = 40, 40 + (packet[4] << 8 | packet[5])
    else:
        return None
    if l4 < 20 or l4 + 20 > length or length > len(packet):
        return None
    seq, ack, offset = _TCP_SEQ.unpack_from(packet, l4 + 4)
    data = length - l4 - (offset >> 4) * 4
    if data < 0:
        return None
    flags = packet[l4 + 13]
    return seq, ack, data + bool(flags & TCP_SYN) + bool(flags & TCP_FIN)


def tcp_reset(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int | None = None) -> bytes:
    """A TCP RST from `src:sport` to `dst:dport` (raw 4- or 16-byte addresses).

    It carries `seq`, and with `ack` the ACK flag and that acknowledgment
    number, as RFC 9293 §3.10.7.1 builds a reset for a segment. No options, no
    data; IPv4 with DF set and TTL 64, or IPv6 with hop limit 64.
    """
    flags = TCP_RST if ack is None else TCP_RST | TCP_ACK
    segment = bytearray(_TCP_HEADER.pack(sport, dport, seq & 0xFFFFFFFF, (ack or 0) & 0xFFFFFFFF,
                                         0x50, flags, 0, 0, 0))
    if len(src) == 4:
        ip = bytearray(_IP4_HEADER.pack(0x45, 0, 40, 0, 0x4000, 64, IPPROTO_TCP, 0, src, dst))
        ip[10:12] = internet_checksum(ip).to_bytes(2, "big")
        pseudo = src + dst + bytes((0, IPPROTO_TCP, 0, 20))
    else:
        ip = bytearray(_IP6_HEADER.pack(6 << 28, 20, IPPROTO_TCP, 64, src, dst))
        pseudo = src + dst + bytes((0, 0, 0, 20, 0, 0, 0, IPPROTO_TCP))
    segment[16:18] = internet_checksum(pseudo + segment).to_bytes(2, "big")
    return bytes(ip + segment)
