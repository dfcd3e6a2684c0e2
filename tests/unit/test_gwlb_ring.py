"""The GWLB node's endpoint receive ring, over a plain buffer: geometry, slots, the drain."""
from __future__ import annotations

import struct

import pytest

from vpclab.engines.gwlb.frames import VNET_HDR_LEN
from vpclab.engines.gwlb.node import NodeProcess
from vpclab.engines.gwlb.sockets import _Endpoint
from vpclab.engines.gwlb.spec import EndpointSpec, NodeSpec
from vpclab.engines.gwlb.ring import (
    TP_STATUS_KERNEL, TP_STATUS_USER, TPACKET2_HDR, TPACKET2_HDRLEN, RxRing, ring_request,
)

ENDPOINT = "vpce-0123456789abcdef0"
SLOT = 512
MAC = 76  # where the kernel puts the frame in a slot with a virtio-net header (see ring.py)
ROUTER_MAC, NODE_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


@pytest.mark.parametrize("frame_size, frame_count, page, expected", [
    (1 << 14, 256, 4096, (1 << 14, 256, 1 << 14, 256)),
    (2048, 5, 4096, (4096, 3, 2048, 6)),      # 2 slots a block, count rounded up
    (1536, 8, 4096, (12288, 1, 1536, 8)),     # the smallest block of pages holding whole slots
    (4096, 3, 16384, (16384, 1, 4096, 4)),
])
def test_ring_request_geometry(frame_size, frame_count, page, expected):
    request = ring_request(frame_size, frame_count, page)
    assert struct.unpack("=IIII", request) == expected
    block_size, block_count, frame_size, frames = expected
    assert block_size % page == 0 and block_size % frame_size == 0 and frames * frame_size == block_size * block_count


@pytest.mark.parametrize("frame_size, frame_count", [(100, 4), (TPACKET2_HDRLEN, 4), (4096, 0)])
def test_ring_request_rejects_bad_geometry(frame_size, frame_count):
    with pytest.raises(ValueError):
        ring_request(frame_size, frame_count)


def udp_packet(payload: bytes = b"hello", src: bytes = bytes([10, 0, 1, 10]),
               dst: bytes = bytes([10, 0, 2, 10])) -> bytes:
    udp = struct.pack("!HHHH", 40000, 7007, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst) + udp


def fill(ring: RxRing, slot: int, frame: bytes, vnet: bytes = bytes(VNET_HDR_LEN),
         length: int | None = None) -> None:
    """Write a slot as the kernel does: header, virtio-net header, frame, then status USER."""
    offset = slot * ring.frame_size
    snaplen = min(len(frame), ring.frame_size - MAC)
    TPACKET2_HDR.pack_into(ring.view, offset, TP_STATUS_KERNEL, len(frame) if length is None else length,
                           snaplen, MAC, MAC + 14)
    ring.view[offset + MAC - VNET_HDR_LEN:offset + MAC] = vnet
    ring.view[offset + MAC:offset + MAC + snaplen] = frame[:snaplen]
    ring.words[offset >> 2] = TP_STATUS_USER | 0x20000000  # other bits (a timestamp source) may be set


def ether(packet: bytes, dst: bytes = NODE_MAC, ethertype: int = 0x0800) -> bytes:
    return dst + ROUTER_MAC + ethertype.to_bytes(2, "big") + packet


class Harness:
    def __init__(self, slots: int = 4) -> None:
        spec = NodeSpec.from_dict({
            "availability_zone": "us-east-1a", "node_ip": "10.1.0.5", "control_socket": "/tmp/x.sock",
            "targets": [{"id": "i-1", "ip": "10.1.0.10", "az": "us-east-1a", "healthy": True}]})
        self.process = NodeProcess(spec, clock=lambda: 100.0)
        endpoint = _Endpoint(EndpointSpec(ENDPOINT, "gwe0"))
        endpoint.own_mac = NODE_MAC
        endpoint.ring = self.ring = RxRing(bytearray(SLOT * slots), SLOT, slots)
        self.endpoint = endpoint
        self.process.endpoints[endpoint.endpoint_id] = endpoint
        self.process.node.attach_endpoint(endpoint.endpoint_id)
        self.sent: list[tuple[str, int, bytes]] = []
        self.process._sender = self._sender  # type: ignore[method-assign]

    def _sender(self, target_ip: str, port: int):
        return lambda datagram: self.sent.append((target_ip, port, bytes(datagram)))

    def drain(self) -> dict:
        self.process._drain_endpoint(self.endpoint, 100.0)
        return self.process.io

    def statuses(self) -> list[int]:
        return [self.ring.words[slot * SLOT >> 2] for slot in range(self.ring.frame_count)]


def test_drain_encapsulates_and_gives_every_slot_back():
    h = Harness()
    fill(h.ring, 0, ether(udp_packet(b"one")) + b"\0" * 6)  # link-layer padding is not carried
    fill(h.ring, 1, ether(udp_packet(b"two")))
    io = h.drain()
    assert io["rx_frames"] == io["encap_sent"] == 2 and h.ring.head == 2
    assert h.statuses() == [TP_STATUS_KERNEL] * 4
    assert [d[0] for d in h.sent] == ["10.1.0.10"] * 2
    assert h.sent[0][2][40:] == udp_packet(b"one") and h.sent[1][2][40:] == udp_packet(b"two")
    assert h.endpoint.peer_mac == ROUTER_MAC  # learned from the first frame


def test_drain_stops_at_a_kernel_slot_and_wraps_around():
    h = Harness()
    h.ring.head = 3
    fill(h.ring, 3, ether(udp_packet(b"a")))
    fill(h.ring, 0, ether(udp_packet(b"b")))
    fill(h.ring, 2, ether(udp_packet(b"not yet")))  # after a kernel slot: not reached
    h.drain()
    assert h.ring.head == 1 and len(h.sent) == 2
    assert h.statuses() == [TP_STATUS_KERNEL, TP_STATUS_KERNEL, TP_STATUS_USER | 0x20000000, TP_STATUS_KERNEL]
    h.drain()
    assert len(h.sent) == 2  # still waiting at slot 1


def test_drain_counts_and_drops_what_it_cannot_carry():
    h = Harness(slots=8)
    fill(h.ring, 0, ether(b"\x00\x01" * 14, ethertype=0x0806))                 # ARP
    fill(h.ring, 1, ether(udp_packet()[:10]))                                   # short
    fill(h.ring, 2, ether(udp_packet(), dst=b"\x01\x00\x5e\x00\x00\x01"))      # multicast
    fill(h.ring, 3, ether(udp_packet(b"x" * 1000)), length=40000)               # cut: longer than a slot
    fill(h.ring, 4, ether(udp_packet()), vnet=struct.pack("<BBHHHH", 1, 1, 0, 0, 34, 6))  # GSO
    fill(h.ring, 5, ether(udp_packet()), vnet=struct.pack("<BBHHHH", 1, 0, 0, 0, 34, 400))  # bad offsets
    fill(h.ring, 6, ether(b"\x45" + bytes(30)))                                 # malformed inner
    io = h.drain()
    assert (io["rx_not_ip"], io["rx_short"], io["rx_not_unicast"], io["rx_gso"],
            io["rx_bad_offload_header"]) == (1, 1, 1, 2, 1)
    assert io["rx_frames"] == 7 and io["encap_sent"] == 0 and not h.sent
    assert h.process.node.drops == {"malformed_inner": 1}
    assert h.statuses() == [TP_STATUS_KERNEL] * 8


def test_drain_completes_a_partial_checksum_in_the_ring():
    h = Harness()
    packet = bytearray(udp_packet(b"abc"))
    pseudo = sum(struct.unpack("!4H", bytes(packet[12:20]))) + 17 + len(packet) - 20
    while pseudo >> 16:
        pseudo = (pseudo & 0xFFFF) + (pseudo >> 16)
    struct.pack_into("!H", packet, 26, pseudo)
    fill(h.ring, 0, ether(bytes(packet)), vnet=struct.pack("<BBHHHH", 1, 0, 0, 0, 14 + 20, 6))
    io = h.drain()
    assert io["checksums_completed"] == 1 and io["encap_sent"] == 1
    udp = h.sent[0][2][40 + 20:]
    words = sum(struct.unpack("!4H", bytes(packet[12:20]))) + 17 + len(udp)
    words += sum(struct.unpack(f"!{(len(udp) + 1) // 2}H", udp + b"\0" * (len(udp) % 2)))
    while words >> 16:
        words = (words & 0xFFFF) + (words >> 16)
    assert words == 0xFFFF  # the receiver's check passes


def test_drain_takes_at_most_a_batch():
    h = Harness(slots=80)
    for slot in range(80):
        fill(h.ring, slot, ether(udp_packet()))
    assert h.drain()["rx_frames"] == 64 and h.ring.head == 64
    assert h.drain()["rx_frames"] == 80 and h.ring.head == 0
