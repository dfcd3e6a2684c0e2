"""A GWLB node's data path: endpoint rings to GENEVE, GENEVE back out endpoint veths.

Data path. Each endpoint veth has an AF_PACKET socket (ETH_P_ALL, outgoing
frames ignored, virtio-net header on) with a PACKET_MMAP receive ring (ring.py):
the kernel copies each frame into the ring instead of queueing an skb clone,
and the node reads it there with no recv() per frame (measured: about 10 %
less CPU per round trip, node and whole path alike). Inner IP packets go
through `GwlbNode.from_endpoint` and out as GENEVE over UDP from the flow's source port
to `target:6081`, written with their outer IPv4 and UDP headers as AWS's are (TTL 255,
ID 0, DF clear: outer.py) to a packet socket on `uplink`, addressed to the next hop's MAC
(the VPC router's, learned by an ARP request of the node's own at startup or on a
target's first use). Without an ARP reply a UDP socket sends them and the kernel picks
the IP ID; `io.setup_warnings` says so. Each (target, source port) in use also
has a UDP socket bound to `node_ip:port` and connected to `target:6081`, created on first use
(ports span 2**14; the fd limit caps the pool, and past it datagrams leave from
6081, which appliances answer the same way). Measured on this kernel, a pool of
bound UDP sockets beats one raw IPPROTO_RAW socket that builds the outer
IPv4/UDP header itself, which needs a per-packet UDP checksum in Python: the
raw socket was 10-35 % slower at 100-1,400 B and about 35 % slower at 8,500 B.
The kernel owns the outer header (TTL 255 and DF clear are set per socket; the
kernel's IP ID is replaced: see below). Returning datagrams arrive on `node_ip:6081` (and, from
appliances that swap the ports, on the sender sockets), go through
`GwlbNode.from_appliance`, and their inner packet goes back out its endpoint
veth as an Ethernet frame to the router side's MAC, as do the TCP RSTs the core
makes (`send_tcp_reset.on_idle_timeout.enabled`). Rings and sockets are
drained in batches of up to 64 packets per readiness; once a second `expire`
ends idle flows and samples the Peak*PerSecond rates.
"""
from __future__ import annotations

import socket

from vpclab.engines.gwlb.core import Decap, Encap, Reset
from vpclab.engines.gwlb.frames import (
    ETH_HLEN, ETH_P_IP, ETH_P_IPV6, VIRTIO_NET_HDR_F_NEEDS_CSUM, VNET_HDR_LEN, finish_vnet_frame,
)
from vpclab.engines.gwlb.ring import TP_STATUS_KERNEL, TP_STATUS_USER, TPACKET2_HDR
from vpclab.engines.gwlb.sockets import _Endpoint

BATCH = 64                # packets read from one socket before the others get a turn
RX_BUFFER = 65536            # room for any UDP datagram

_NO_SENDERS: dict = {}
_SLOT_HEADER = TPACKET2_HDR.unpack_from


class NodeDataPath:
    """NodeProcess's data path: what each socket's readiness does (the state is NodeProcess's)."""

    def _drain_endpoint(self, endpoint: _Endpoint, now: float) -> None:
        """Frames from the router (in the endpoint's receive ring) → GENEVE to the flow's appliance."""
        ring = endpoint.ring
        view, words, frame_size, frame_count = ring.view, ring.words, ring.frame_size, ring.frame_count
        slot = ring.head
        slot_header = _SLOT_HEADER
        from_endpoint, endpoint_id = self.node.from_endpoint, endpoint.endpoint_id
        senders, no_senders, io, fast = self._senders, _NO_SENDERS, self.io, self.fast
        received = sent = 0
        for _ in range(BATCH):
            offset = slot * frame_size
            status = offset >> 2
            if not words[status] & TP_STATUS_USER:
                break
            slot = slot + 1 if slot + 1 < frame_count else 0
            received += 1
            try:
                _, length, snaplen, mac, _ = slot_header(view, offset)
                mac += offset  # from the slot's start to the ring's
                if snaplen < length:
                    io["rx_gso"] += 1  # longer than a slot: only a GSO super-packet can be
                    continue
                if snaplen < ETH_HLEN + 20:
                    io["rx_short"] += 1
                    continue
                ethertype = view[mac + 12] << 8 | view[mac + 13]
                if ethertype != ETH_P_IP and ethertype != ETH_P_IPV6:
                    io["rx_not_ip"] += 1  # ARP and friends: the kernel answers those itself
                    continue
                if view[mac] & 1:
                    io["rx_not_unicast"] += 1  # the router's own multicast/broadcast, never routed traffic
                    continue
                vnet = mac - VNET_HDR_LEN
                if view[vnet] & VIRTIO_NET_HDR_F_NEEDS_CSUM or view[vnet + 1]:  # may also say DATA_VALID
                    reason = finish_vnet_frame(view[vnet:mac + snaplen], VNET_HDR_LEN + snaplen)
                    if reason is not None:
                        io[reason] += 1
                        continue
                    io["checksums_completed"] += 1
                if endpoint.prefix4 is None:
                    endpoint.set_peer_mac(bytes(view[mac + 6:mac + 12]))
                inner = view[mac + ETH_HLEN:mac + snaplen]
                result = from_endpoint(inner, endpoint_id, now)
                if type(result) is Encap:
                    target_ip, src_port, datagram = result
                    send = senders.get(target_ip, no_senders).get(src_port)
                    if send is None:
                        send = self._sender(target_ip, src_port)
                    try:
                        send(datagram)
                        sent += 1
                    except OSError:
                        io["tx_errors"] += 1
                    if fast is not None:
                        try:
                            fast.install(endpoint, endpoint.ifindex, inner, result)
                        except OSError as error:
                            self._fast_path_failed(error)
                            fast = None
                elif type(result) is Reset:
                    self._to_endpoint(endpoint, result.packet)
            finally:
                words[status] = TP_STATUS_KERNEL  # the slot is the kernel's again
        ring.head = slot
        endpoint.rx_frames += received
        io["rx_frames"] += received
        io["encap_sent"] += sent

    def _drain_geneve(self, sock: socket.socket, now: float) -> None:
        """GENEVE back from appliances → inner packets out their endpoint veth."""
        # recvfrom's bytes rather than recvfrom_into a buffer: the core looks the flow up
        # by the header's bytes, which a view would have to copy out first (measured).
        recvfrom = sock.recvfrom
        from_appliance, endpoints, io = self.node.from_appliance, self.endpoints, self.io
        to_endpoint = self._to_endpoint
        received = sent = 0
        for _ in range(BATCH):
            try:
                datagram, address = recvfrom(RX_BUFFER)
            except BlockingIOError:
                break
            except OSError:
                io["rx_errors"] += 1
                break
            received += 1
            result = from_appliance(datagram, address[0], now)
            if type(result) is Decap:
                endpoint = endpoints.get(result[0])
                if endpoint is None:
                    io["decap_no_endpoint"] += 1
                elif to_endpoint(endpoint, result[1]):
                    sent += 1
        io["geneve_received"] += received
        io["decap_sent"] += sent

    def _to_endpoint(self, endpoint: _Endpoint, packet: bytes | memoryview) -> bool:
        """Send an IP packet out of an endpoint veth to the router; False if it could not go."""
        if endpoint.prefix4 is None:
            self.io["decap_peer_mac_unknown"] += 1
            return False
        try:
            endpoint.send((endpoint.prefix4 if packet[0] < 0x60 else endpoint.prefix6) + packet)
        except OSError:
            self.io["tx_errors"] += 1
            return False
        endpoint.tx_frames += 1
        return True

    def _tick(self, now: float) -> None:
        """Housekeeping, once a second: idle flows out, and the RSTs that end them."""
        self._expire(now)
        for reset in self.node.take_resets():
            endpoint = self.endpoints.get(reset.endpoint_id)
            if endpoint is not None:
                self._to_endpoint(endpoint, reset.packet)
