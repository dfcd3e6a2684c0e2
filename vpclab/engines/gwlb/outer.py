"""The outer headers of the GENEVE a GWLB node sends, as AWS's are (reference §1.1), sans-IO.

A UDP socket cannot send them: the kernel owns its IPv4 header, and with DF clear it
gives every datagram an IP ID of its own, even through a raw socket (IP_HDRINCL fills
in a zero ID). So the node writes whole frames to a packet socket on its uplink:

    virtio-net header | Ethernet (to the VPC router) | IPv4 (TTL 255, ID 0, DF clear) | UDP | GENEVE

The virtio-net header asks the kernel to finish the UDP checksum (NEEDS_CSUM over the
UDP header and payload, whose checksum field holds the pseudo-header sum); with tx
offload off on the uplink it does so in software before the frame leaves, so the
checksum on the wire is complete. The eBPF fast path writes the same header (fastpath.c).

The next hop's MAC (the VPC router answers ARP for every address) is learned with an ARP
request of the node's own.
"""
from __future__ import annotations

import struct
from ipaddress import IPv4Address

from vpclab.engines.io.geneve import GENEVE_PORT

TTL = 255
ETH_P_ARP = 0x0806
VNET_HDR_LEN = 10
# struct virtio_net_hdr (little-endian): NEEDS_CSUM, no GSO, header length, gso_size 0,
# checksum from the UDP header (Ethernet 14 + IPv4 20) into its field at offset 6.
_VNET = struct.pack("<BBHHHH", 1, 0, 14 + 20 + 8, 0, 14 + 20, 6)
_IP_UDP = struct.Struct("!BBHHHBBH4s4sHHHH")
_ARP = struct.Struct("!6s6sHHHBBH6s4s6s4s")
BROADCAST = b"\xff" * 6


def _fold(value: int) -> int:
    while value > 0xFFFF:
        value = (value & 0xFFFF) + (value >> 16)
    return value


def _words(packed: bytes) -> int:
    return sum(struct.unpack(f"!{len(packed) // 2}H", packed))


class OuterHeader:
    """What goes in front of one flow's GENEVE datagrams: node → target, from `src_port` to 6081."""

    __slots__ = ("_fixed", "_addresses", "_ip_sum", "_pseudo_sum", "_src_port")

    def __init__(self, own_mac: bytes, router_mac: bytes, src_ip: str, dst_ip: str, src_port: int) -> None:
        src, dst = IPv4Address(src_ip).packed, IPv4Address(dst_ip).packed
        self._fixed = _VNET + router_mac + own_mac + b"\x08\x00"
        self._addresses = src, dst
        addresses = _words(src + dst)
        self._ip_sum = 0x4500 + (TTL << 8 | 17) + addresses  # ID 0, flags and offset 0 (DF clear)
        self._pseudo_sum = addresses + 17
        self._src_port = src_port

    def frame(self, datagram: bytes) -> bytes:
        """The frame to write to the packet socket (virtio-net header first)."""
        udp_len = 8 + len(datagram)
        total = 20 + udp_len
        ip_check = ~_fold(self._ip_sum + total) & 0xFFFF
        src, dst = self._addresses
        return (self._fixed + _IP_UDP.pack(0x45, 0, total, 0, 0, TTL, 17, ip_check, src, dst,
                                           self._src_port, GENEVE_PORT, udp_len,
                                           _fold(self._pseudo_sum + udp_len))
                + datagram)


def arp_request(own_mac: bytes, own_ip: str, target_ip: str) -> bytes:
    """An Ethernet frame asking who has `target_ip`."""
    return _ARP.pack(BROADCAST, own_mac, ETH_P_ARP, 1, 0x0800, 6, 4, 1, own_mac,
                     IPv4Address(own_ip).packed, bytes(6), IPv4Address(target_ip).packed)


def arp_reply_mac(frame: bytes, own_ip: str, target_ip: str) -> bytes | None:
    """The MAC in an ARP reply to our request for `target_ip`, or None if `frame` is not one."""
    if len(frame) < _ARP.size:
        return None
    (_, _, ethertype, htype, ptype, hlen, plen, op, sha, spa, _, tpa) = _ARP.unpack_from(frame)
    if (ethertype, htype, ptype, hlen, plen, op) != (ETH_P_ARP, 1, 0x0800, 6, 4, 2):
        return None
    if spa != IPv4Address(target_ip).packed or tpa != IPv4Address(own_ip).packed:
        return None
    return sha


def next_hop(proc_net_route: str, ifname: str, dst: str) -> str | None:
    """Where a packet to `dst` goes first out of `ifname`, from /proc/net/route's text: the
    gateway of the longest matching route, or `dst` itself on a link route; None without one."""
    address = int(IPv4Address(dst))
    best: tuple[int, str] | None = None
    for line in proc_net_route.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[0] != ifname:
            continue
        net, gateway, mask = (int.from_bytes(bytes.fromhex(fields[i]), "little") for i in (1, 2, 7))
        if address & mask != net:
            continue
        length = bin(mask).count("1")
        if best is None or length > best[0]:
            best = (length, str(IPv4Address(gateway)) if gateway else dst)
    return None if best is None else best[1]
