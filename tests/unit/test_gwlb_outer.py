"""The outer IPv4/UDP header a GWLB node writes itself (reference §1.1): TTL 255, ID 0, DF clear."""
from __future__ import annotations

import struct

from hypothesis import given, strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from vpclab.engines.io.geneve import internet_checksum
from vpclab.engines.gwlb.outer import OuterHeader, arp_reply_mac, arp_request, next_hop

OWN, ROUTER = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def kernel_finishes(frame: bytes) -> bytes:
    """What the kernel does with a NEEDS_CSUM frame: checksum from csum_start into csum_offset."""
    flags, _gso, _hdr_len, _gso_size, start, offset = struct.unpack_from("<BBHHHH", frame)
    assert flags == 1
    packet = bytearray(frame[10:])
    check = internet_checksum(packet[start:]) or 0xFFFF
    struct.pack_into("!H", packet, start + offset, check)
    return bytes(packet)


@given(st.binary(max_size=1500), st.integers(49152, 65535))
def test_outer_header_is_ttl_255_id_0_df_clear_with_valid_checksums(datagram, port):
    frame = kernel_finishes(OuterHeader(OWN, ROUTER, "10.0.5.5", "10.0.5.10", port).frame(datagram))
    packet = Ether(frame)
    ip, udp = packet[IP], packet[UDP]
    assert (packet.dst, packet.src) == ("02:00:00:00:00:02", "02:00:00:00:00:01")
    assert (ip.ttl, ip.id, int(ip.flags), ip.frag, ip.tos, ip.ihl) == (255, 0, 0, 0, 0, 5)
    assert (ip.src, ip.dst, udp.sport, udp.dport, udp.len) == ("10.0.5.5", "10.0.5.10", port, 6081, 8 + len(datagram))
    assert bytes(udp.payload) == datagram
    rebuilt = Ether(frame)
    del rebuilt[IP].chksum, rebuilt[UDP].chksum
    rebuilt = Ether(bytes(rebuilt))
    assert (ip.chksum, udp.chksum) == (rebuilt[IP].chksum, rebuilt[UDP].chksum)


def test_arp_request_and_the_routers_reply():
    request = Ether(arp_request(OWN, "10.0.5.5", "10.0.5.1"))
    assert request.dst == "ff:ff:ff:ff:ff:ff" and request[ARP].op == 1
    assert (request[ARP].psrc, request[ARP].pdst, request[ARP].hwsrc) == ("10.0.5.5", "10.0.5.1", "02:00:00:00:00:01")
    reply = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") /
                  ARP(op=2, hwsrc="02:00:00:00:00:02", psrc="10.0.5.1", hwdst="02:00:00:00:00:01", pdst="10.0.5.5"))
    assert arp_reply_mac(reply, "10.0.5.5", "10.0.5.1") == ROUTER
    assert arp_reply_mac(reply, "10.0.5.5", "10.0.5.9") is None  # not the address asked about
    assert arp_reply_mac(bytes(request), "10.0.5.5", "10.0.5.1") is None  # a request, not a reply
    assert arp_reply_mac(b"short", "10.0.5.5", "10.0.5.1") is None


def test_next_hop_is_the_gateway_of_the_longest_matching_route_or_the_address_on_link():
    text = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
            "eth0\t00000000\t0105000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
            "eth0\t0005000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
            "eth1\t0006000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    assert next_hop(text, "eth0", "10.0.5.10") == "10.0.5.10"  # its own subnet: on link
    assert next_hop(text, "eth0", "10.0.7.10") == "10.0.5.1"  # elsewhere: the default gateway
    assert next_hop(text, "eth0", "10.0.6.10") == "10.0.5.1"  # eth1's subnet is not eth0's
    assert next_hop(text.replace("eth0\t00000000", "eth9\t00000000"), "eth0", "10.0.7.10") is None
