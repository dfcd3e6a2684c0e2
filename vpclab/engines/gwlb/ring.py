"""A PACKET_MMAP receive ring (TPACKET_V2) for an AF_PACKET socket.

The kernel copies each frame straight into a shared ring of fixed-size slots
instead of cloning an skb onto the socket's queue, and the reader takes frames
without a recv() system call: a slot is the reader's while its status word has
TP_STATUS_USER, and goes back to the kernel when the reader writes
TP_STATUS_KERNEL (0). epoll reports the socket readable while the slot the
kernel filled last is still the reader's, so slots must be given back in ring
order. V2, not V3: V3 hands over whole blocks, after a retire timeout when
traffic is light, which costs latency.

A slot: `struct tpacket2_hdr` (status, len, snaplen, mac, net, ...), then the
frame at offset `mac`. With PACKET_VNET_HDR set on the socket before the ring,
the kernel writes the virtio-net header in the VNET_HDR_LEN bytes before `mac`.
A frame longer than the slot is cut to `snaplen` (< len): the reader must
count and drop it.
"""
from __future__ import annotations

import mmap
import socket
import struct

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V2 = 1
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TPACKET_ALIGNMENT = 16

# tp_status, tp_len, tp_snaplen, tp_mac, tp_net (then tp_sec, tp_nsec, vlan: unused)
TPACKET2_HDR = struct.Struct("=IIIHH")
TPACKET2_HDRLEN = 32 + 20  # TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) + sizeof(struct sockaddr_ll)

FRAME_SIZE = 1 << 14  # one slot holds any frame up to 16 KB, past the 9,001 B MTU
FRAME_COUNT = 256     # frames waiting at most (4 MB): past any burst measured, and the old socket queue


def ring_request(frame_size: int, frame_count: int, page_size: int = mmap.PAGESIZE) -> bytes:
    """`struct tpacket_req` for PACKET_RX_RING. The kernel wants blocks of whole pages
    holding whole slots: the smallest such block, and the slot count rounded up to fill it."""
    if frame_size < TPACKET2_HDRLEN + 64 or frame_size % TPACKET_ALIGNMENT or frame_count < 1:
        raise ValueError(f"bad ring geometry: {frame_count} slots of {frame_size} B")
    block_size = max(page_size, frame_size)
    while block_size % frame_size or block_size % page_size:
        block_size += page_size
    per_block = block_size // frame_size
    block_count = -(-frame_count // per_block)
    return struct.pack("=IIII", block_size, block_count, frame_size, block_count * per_block)


class RxRing:
    """A ring of `frame_count` slots of `frame_size` bytes over `buffer` (the mapping,
    or any writable buffer in tests). `open` sets one up on an AF_PACKET socket."""

    __slots__ = ("map", "view", "words", "frame_size", "frame_count", "head")

    def __init__(self, buffer: mmap.mmap | bytearray, frame_size: int, frame_count: int) -> None:
        if len(buffer) < frame_size * frame_count:
            raise ValueError("the buffer is smaller than the ring")
        self.map = buffer
        self.view = memoryview(buffer)
        self.words = self.view.cast("I")  # status words: words[slot offset >> 2]
        self.frame_size = frame_size
        self.frame_count = frame_count
        self.head = 0  # the next slot to read

    @classmethod
    def open(cls, sock: socket.socket, frame_size: int = FRAME_SIZE, frame_count: int = FRAME_COUNT) -> RxRing:
        """Give `sock` a receive ring. Set PACKET_VNET_HDR first, if wanted (EBUSY after),
        and bind after, so that no frame arrives before the ring."""
        request = ring_request(frame_size, frame_count)
        block_size, block_count, frame_size, frame_count = struct.unpack("=IIII", request)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
        mapping = mmap.mmap(sock.fileno(), block_size * block_count,
                            mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        return cls(mapping, frame_size, frame_count)

    def close(self) -> None:
        """Unmap (before closing the socket: the mapping holds a duplicate of its fd)."""
        self.words.release()
        self.view.release()
        if isinstance(self.map, mmap.mmap):
            try:
                self.map.close()
            except BufferError:
                pass  # a slice still alive somewhere: the mapping goes with it
