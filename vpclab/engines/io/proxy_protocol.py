"""PROXY protocol version 2 as an AWS Network Load Balancer writes it (reference §3.5).

A sans-IO codec. Every header AWS sends is exactly 100 bytes:

- `proxy_header(src, dst, vpc_endpoint_id=...)`: the PROXY command (0x21) with
  the family (0x11 TCP4, 0x12 UDP4, 0x21 TCP6, 0x22 UDP6), both addresses and
  ports, then TLVs in AWS's order: CRC32C (type 0x03), the AWS TLV 0xEA with
  subtype 0x01 and the VPC endpoint id in ASCII (PrivateLink traffic only), and
  a NOOP (type 0x04) of zeros that pads the header to 100 bytes.
- `local_header()`: what a health check sends first: LOCAL (0x20), family 0x11,
  no addresses, CRC32C, then a NOOP with a 74-byte value (16 + 7 + 77 = 100).

The CRC32C (Castagnoli, reflected, init and final xor 0xFFFFFFFF) covers the
whole header with its own value zeroed, and is stored big-endian.

`parse_header` is strict and raises only `ProxyProtocolError`; `bytes_needed`
tells a stream reader how much to buffer before parsing.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
FIXED_LENGTH = 16  # signature, version/command, family, length
AWS_HEADER_LENGTH = 100  # AWS pads every header to this with a NOOP TLV
MAX_HEADER_LENGTH = FIXED_LENGTH + 0xFFFF

VERSION = 0x2
COMMAND_LOCAL = 0x0
COMMAND_PROXY = 0x1
COMMANDS = {COMMAND_LOCAL: "LOCAL", COMMAND_PROXY: "PROXY"}

FAMILY_UNSPEC = 0x00
FAMILY_TCP4, FAMILY_UDP4 = 0x11, 0x12
FAMILY_TCP6, FAMILY_UDP6 = 0x21, 0x22
FAMILY_UNIX_STREAM, FAMILY_UNIX_DGRAM = 0x31, 0x32
FAMILY_NAMES = {
    FAMILY_UNSPEC: "UNSPEC",
    FAMILY_TCP4: "TCP4",
    FAMILY_UDP4: "UDP4",
    FAMILY_TCP6: "TCP6",
    FAMILY_UDP6: "UDP6",
    FAMILY_UNIX_STREAM: "UNIX_STREAM",
    FAMILY_UNIX_DGRAM: "UNIX_DGRAM",
}
# Bytes of address block per address family (the family byte's high nibble).
_ADDRESS_LENGTH = {0x0: 0, 0x1: 12, 0x2: 36, 0x3: 216}

TLV_CRC32C = 0x03
TLV_NOOP = 0x04
TLV_AWS = 0xEA
AWS_SUBTYPE_VPCE_ID = 0x01

Address = tuple[str, int]

_FIXED = struct.Struct("!12sBBH")
_TLV = struct.Struct("!BH")
_PORTS = struct.Struct("!HH")
_CRC = struct.Struct("!I")
_CRC_TLV_LENGTH = _TLV.size + _CRC.size


class ProxyProtocolError(ValueError):
    """A PROXY v2 header that is truncated or malformed."""


# ---------------------------------------------------------------- CRC32C


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32C (Castagnoli) of `data`; pass a previous result as `value` to continue it."""
    table = _CRC32C_TABLE
    crc = value ^ 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ---------------------------------------------------------------- encoding


def _tlv(kind: int, value: bytes) -> bytes:
    return _TLV.pack(kind, len(value)) + value


def _build(command: int, family: int, addresses: bytes, tlvs: bytes) -> bytes:
    """A header of `addresses` and `tlvs`, then CRC32C, NOOP-padded to 100 bytes.

    The CRC TLV comes first among the TLVs, as AWS sends it.
    """
    unpadded = FIXED_LENGTH + len(addresses) + _CRC_TLV_LENGTH + len(tlvs)
    padding = AWS_HEADER_LENGTH - unpadded - _TLV.size
    if padding < 0:
        raise ValueError(f"a {unpadded}-byte header cannot be padded to {AWS_HEADER_LENGTH} bytes")
    crc_at = FIXED_LENGTH + len(addresses) + _TLV.size
    header = bytearray(
        _FIXED.pack(SIGNATURE, VERSION << 4 | command, family, AWS_HEADER_LENGTH - FIXED_LENGTH)
        + addresses
        + _tlv(TLV_CRC32C, bytes(_CRC.size))
        + tlvs
        + _tlv(TLV_NOOP, bytes(padding))
    )
    _CRC.pack_into(header, crc_at, crc32c(header))
    return bytes(header)


def proxy_header(
    src: Address,
    dst: Address,
    *,
    protocol: str = "tcp",
    vpc_endpoint_id: str | None = None,
) -> bytes:
    """The 100-byte PROXY header an NLB puts before a connection's first bytes.

    `src` is the client's (IP, port), `dst` the address it connected to; both
    IPv4 or both IPv6. `protocol` is "tcp" or "udp". `vpc_endpoint_id` (traffic
    through an endpoint service) adds the AWS TLV 0xEA/0x01.
    """
    source, destination = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if source.version != destination.version:
        raise ValueError(f"source {source} and destination {destination} are of different IP versions")
    transport = {"tcp": 0x1, "udp": 0x2}.get(protocol.lower())
    if transport is None:
        raise ValueError(f"protocol must be tcp or udp, not {protocol!r}")
    family = (0x1 if source.version == 4 else 0x2) << 4 | transport
    addresses = source.packed + destination.packed + _PORTS.pack(src[1], dst[1])
    tlvs = b""
    if vpc_endpoint_id is not None:
        try:
            tlvs = _tlv(TLV_AWS, bytes([AWS_SUBTYPE_VPCE_ID]) + vpc_endpoint_id.encode("ascii"))
        except UnicodeEncodeError:
            raise ValueError(f"VPC endpoint id {vpc_endpoint_id!r} is not ASCII") from None
    return _build(COMMAND_PROXY, family, addresses, tlvs)


def local_header() -> bytes:
    """The 100-byte LOCAL header an NLB health check sends when proxy_protocol_v2 is on."""
    return _build(COMMAND_LOCAL, FAMILY_TCP4, b"", b"")


# ---------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A decoded PROXY v2 header and its exact bytes.

    `source` and `destination` are None for LOCAL, UNSPEC and UNIX headers.
    `crc_ok` is None when the header has no CRC32C TLV.
    """

    command: str  # "PROXY" or "LOCAL"
    family: int  # the family/protocol byte, e.g. 0x11 for TCP over IPv4
    source: Address | None
    destination: Address | None
    tlvs: tuple[tuple[int, bytes], ...]
    vpc_endpoint_id: str | None
    crc_ok: bool | None
    header_length: int
    raw: bytes

    @property
    def is_local(self) -> bool:
        return self.command == "LOCAL"

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES.get(self.family, f"0x{self.family:02x}")

    @property
    def protocol(self) -> str | None:
        """The transport, "tcp" or "udp"; None when unspecified."""
        return {0x1: "tcp", 0x2: "udp"}.get(self.family & 0x0F)


def bytes_needed(data: bytes | bytearray) -> int | None:
    """How many bytes a PROXY v2 header at the start of `data` needs.

    None when `data` cannot start one. While `data` is a prefix of the signature
    or shorter than the fixed part, the answer is 16; after that it is the
    header's full length.
    """
    if len(data) < len(SIGNATURE):
        return FIXED_LENGTH if SIGNATURE.startswith(bytes(data)) else None
    if not data.startswith(SIGNATURE):
        return None
    if len(data) < FIXED_LENGTH:
        return FIXED_LENGTH
    return FIXED_LENGTH + int.from_bytes(data[14:16], "big")


def parse_header(data: bytes | bytearray) -> ProxyHeader | None:
    """Decode the PROXY v2 header at the start of `data` (bytes after it are ignored).

    Returns None when `data` does not start with the v2 signature. Raises
    `ProxyProtocolError` when it is truncated (including a bare prefix of the
    signature) or malformed; never anything else.
    """
    data = bytes(data)
    needed = bytes_needed(data)
    if needed is None:
        return None
    if len(data) < needed:
        raise ProxyProtocolError(f"truncated PROXY v2 header: {len(data)} of {needed} bytes")
    _, version_command, family, _ = _FIXED.unpack_from(data)
    if version_command >> 4 != VERSION:
        raise ProxyProtocolError(f"unsupported PROXY protocol version {version_command >> 4}")
    command = COMMANDS.get(version_command & 0x0F)
    if command is None:
        raise ProxyProtocolError(f"unknown PROXY v2 command 0x{version_command & 0x0F:x}")
    if family not in FAMILY_NAMES:
        raise ProxyProtocolError(f"unknown PROXY v2 address family 0x{family:02x}")
    raw = data[:needed]
    address_length = _ADDRESS_LENGTH[family >> 4]
    if command == "LOCAL":
        # A receiver ignores a LOCAL header's addresses. AWS sends family 0x11
        # with none (TLVs right after the fixed part); others may send them.
        try:
            tlvs = _parse_tlvs(raw, FIXED_LENGTH)
        except ProxyProtocolError:
            if needed < FIXED_LENGTH + address_length:
                raise
            tlvs = _parse_tlvs(raw, FIXED_LENGTH + address_length)
        source = destination = None
    else:
        if needed < FIXED_LENGTH + address_length:
            raise ProxyProtocolError(
                f"PROXY v2 header of {needed} bytes is too short for {FAMILY_NAMES[family]} addresses"
            )
        source, destination = _addresses(family, raw)
        tlvs = _parse_tlvs(raw, FIXED_LENGTH + address_length)
    return ProxyHeader(
        command=command,
        family=family,
        source=source,
        destination=destination,
        tlvs=tuple((kind, value) for kind, value, _ in tlvs),
        vpc_endpoint_id=_vpc_endpoint_id(tlvs),
        crc_ok=_crc_ok(raw, tlvs),
        header_length=needed,
        raw=raw,
    )


def _addresses(family: int, raw: bytes) -> tuple[Address | None, Address | None]:
    size = {0x1: 4, 0x2: 16}.get(family >> 4)
    if size is None:  # UNSPEC, UNIX
        return None, None
    at = FIXED_LENGTH
    source = ipaddress.ip_address(raw[at:at + size])
    destination = ipaddress.ip_address(raw[at + size:at + 2 * size])
    source_port, destination_port = _PORTS.unpack_from(raw, at + 2 * size)
    return (str(source), source_port), (str(destination), destination_port)


def _parse_tlvs(raw: bytes, at: int) -> list[tuple[int, bytes, int]]:
    """(type, value, offset of the value) for each TLV from `at` to the end of `raw`."""
    tlvs = []
    while at < len(raw):
        if len(raw) - at < _TLV.size:
            raise ProxyProtocolError(f"truncated TLV at byte {at}")
        kind, length = _TLV.unpack_from(raw, at)
        start = at + _TLV.size
        if start + length > len(raw):
            raise ProxyProtocolError(f"TLV 0x{kind:02x} at byte {at} overruns the header")
        if kind == TLV_CRC32C and length != _CRC.size:
            raise ProxyProtocolError(f"CRC32C TLV of length {length}, not 4")
        tlvs.append((kind, raw[start:start + length], start))
        at = start + length
    return tlvs


def _vpc_endpoint_id(tlvs: list[tuple[int, bytes, int]]) -> str | None:
    for kind, value, _ in tlvs:
        if kind == TLV_AWS and value[:1] == bytes([AWS_SUBTYPE_VPCE_ID]):
            try:
                return value[1:].decode("ascii")
            except UnicodeDecodeError:
                raise ProxyProtocolError("AWS VPC endpoint id TLV is not ASCII") from None
    return None


def _crc_ok(raw: bytes, tlvs: list[tuple[int, bytes, int]]) -> bool | None:
    found = [(value, at) for kind, value, at in tlvs if kind == TLV_CRC32C]
    if not found:
        return None
    if len(found) > 1:
        raise ProxyProtocolError("more than one CRC32C TLV")
    value, at = found[0]
    zeroed = raw[:at] + bytes(_CRC.size) + raw[at + _CRC.size:]
    return crc32c(zeroed) == _CRC.unpack(value)[0]
