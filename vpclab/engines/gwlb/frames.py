"""The frames on a GWLB node's endpoint veths: virtio-net header, Ethernet, checksums (pure)."""
from __future__ import annotations

from vpclab.engines.io.geneve import internet_checksum

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
VNET_HDR_LEN = 10           # struct virtio_net_hdr, prepended to every frame in and out
ETH_HLEN = 14
IP_OFFSET = VNET_HDR_LEN + ETH_HLEN
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1

_ZERO_VNET_HDR = bytes(VNET_HDR_LEN)  # no checksum to finish, no segmentation


def ip_packet_end(buf: bytes | bytearray | memoryview, start: int, limit: int) -> int:
    """Where the IP packet at `start` ends by its own length field; -1 if that passes `limit`."""
    if limit - start < 20:
        return -1
    version = buf[start] >> 4
    if version == 4:
        end = start + (buf[start + 2] << 8 | buf[start + 3])
    elif version == 6 and limit - start >= 40:
        end = start + 40 + (buf[start + 4] << 8 | buf[start + 5])
    else:
        return -1
    return end if end <= limit else -1


def finish_partial_checksum(buf: bytearray | memoryview, start: int, field: int, end: int) -> None:
    """Complete a CHECKSUM_PARTIAL packet, as the kernel's skb_checksum_help would.

    The 16-bit field at `field` holds the pseudo-header sum; the checksum covers
    `buf[start:end]` (the field included).
    """
    checksum = internet_checksum(memoryview(buf)[start:end])
    if checksum == 0 and field - start == 6:
        checksum = 0xFFFF  # UDP sends a computed 0 as all ones (RFC 768)
    buf[field] = checksum >> 8
    buf[field + 1] = checksum & 0xFF


def finish_vnet_frame(buf: bytearray | memoryview, length: int) -> str | None:
    """Act on the virtio-net header in front of a received frame; None when the
    frame is ready, else the reason to drop it (a counter key)."""
    if buf[1]:
        return "rx_gso"  # a GSO super-packet: the router-side veth has tx offload on
    if buf[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        csum_start = VNET_HDR_LEN + (buf[6] | buf[7] << 8)    # from the frame's first byte,
        field = csum_start + (buf[8] | buf[9] << 8)           # little-endian on every host we run
        end = ip_packet_end(buf, IP_OFFSET, length)
        if end < 0 or not IP_OFFSET + 20 <= csum_start <= field <= end - 2:
            return "rx_bad_offload_header"
        finish_partial_checksum(buf, csum_start, field, end)
    return None


def ethernet_prefixes(peer_mac: bytes, own_mac: bytes) -> tuple[bytes, bytes]:
    """What goes in front of an inner IPv4 / IPv6 packet sent to the router side."""
    return (_ZERO_VNET_HDR + peer_mac + own_mac + ETH_P_IP.to_bytes(2, "big"),
            _ZERO_VNET_HDR + peer_mac + own_mac + ETH_P_IPV6.to_bytes(2, "big"))
