"""One Gateway Load Balancer node (one per AZ): the I/O shell around `GwlbNode`.

    python -m vpclab.engines.gwlb.node CONFIG.json

CONFIG.json:

    {"availability_zone": "us-east-1a",
     "attributes": {"tcp.idle_timeout.seconds": 350, ...},   # AWS keys, see GwlbConfig
     "node_ip": "10.1.0.5",                                  # the GWLB ENI's IP, on `uplink`
     "uplink": "eth0",                                       # optional, default eth0
     "endpoints": [{"id": "vpce-0...", "ifname": "gwe-0...", "peer_mac": "02:..."}],
     "targets": [{"id": "i-0...", "ip": "10.1.0.10", "az": "us-east-1a", "healthy": true}],
     "control_socket": "/path/to/node.sock"}

`peer_mac` is optional (learned from the first frame the router sends);
`fast_path` is optional (see "Fast path" below); a target's `healthy` is
optional (absent: `initial`, no new flows while another target is healthy).

What the fabric must set up in the node's namespace (and why):

- `uplink` holds `node_ip`, with routes to the appliances.
- One veth per endpoint, its peer in the consumer VPC's router namespace. The
  node side carries an address (a link-local /30 such as 169.254.x.2) only so
  that its kernel answers ARP; the router routes inspected traffic `via` that
  address on the veth, so frames arrive unicast to the node side's MAC. Both
  ends up, MTU at least 8,500 (packets up to 8,500 B pass; larger are dropped).
- The router side of each endpoint veth needs `ethtool -K PEER tx off`.
  With tx offload on, the router hands over TCP super-packets (GSO, up to
  64 KB) that the node cannot pass on: they are dropped and counted as
  `rx_gso`, as is any frame longer than a ring slot (16 KB). Partial
  checksums (CHECKSUM_PARTIAL) are completed here either way, from the
  virtio-net header the kernel writes before each frame (PACKET_VNET_HDR).
- At startup the node itself turns tx offload off on `uplink` (so the outer
  UDP checksums it sends are complete on the wire, as AWS's are) and on its
  endpoint veths, sets `forwarding=0` on the endpoint veths (the node's kernel
  must never route inspected traffic around the node, whatever `ip_forward`
  the namespace inherited) and `disable_ipv6=1` on them (no router
  solicitations or MLD leaking into GENEVE). Failures are listed in the
  snapshot's `io.setup_warnings`; the fabric may do the same itself.

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

Fast path. With `fast_path` in CONFIG.json (the fds of an eBPF instance that a
privileged parent loaded, passed down with the process), the node attaches
fastpath.c's programs to its endpoint veths and uplink, and hands each flow's
directions to them once the core has encapsulated a packet of it (`_FastPath`).
The ring then sees only what the programs leave alone (SYN, FIN, RST, fragments,
IPv6, other protocols, unknown flows), and the core stays the only decider:
what the programs carried is folded into its flow table every tick, flows it
forgets leave the maps, and a target change empties them. Measured: a 100 B round
trip through node and appliance 0.26x kernel forwarding, against 0.11x without.

Tried and measured no better: the returning GENEVE off a ring on the uplink
too (a BPF filter for node_ip:6081, an nft netdev drop so the kernel skips its
IP/UDP input). The kernel work it saves is what checking the outer IPv4 and
UDP checksums in Python costs.

Control: a Unix stream socket speaking JSON lines, one response per request:
`{"op": "snapshot"}`, `{"op": "set_target_health", "target": ID, "healthy": B}`,
`{"op": "set_target_state", "target": ID, "state": S}`,
`{"op": "register", "target": ID, "ip": IP, "az": AZ}`,
`{"op": "deregister", "target": ID}`,
`{"op": "attach_endpoint", "id": VPCE, "ifname": IF, "peer_mac": MAC}`,
`{"op": "detach_endpoint", "id": VPCE}`,
`{"op": "modify", "attributes": {...}}`. Responses are `{"ok": true, ...}` or
`{"ok": false, "error": "..."}`.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from typing import Any, Callable, Mapping

from vpclab.engines.io.control import ControlServer
from vpclab.engines.io.epoll_loop import EpollLoop
from vpclab.engines.io.geneve import GENEVE_PORT, internet_checksum, vpce_id_to_int
from vpclab.engines.gwlb.core import SRC_PORT_BITS, Decap, Encap, GwlbConfig, GwlbNode, Reset
from vpclab.engines.gwlb import fastpath, outer
from vpclab.engines.gwlb.ring import TP_STATUS_KERNEL, TP_STATUS_USER, TPACKET2_HDR, RxRing

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
VNET_HDR_LEN = 10           # struct virtio_net_hdr, prepended to every frame in and out
ETH_HLEN = 14
IP_OFFSET = VNET_HDR_LEN + ETH_HLEN
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0  # <linux/in.h>; the socket module has them from 3.12

BATCH = 64                # packets read from one socket before the others get a turn
RX_BUFFER = 65536            # room for any UDP datagram
SOCKET_BUFFER = 4 << 20     # asked for; the kernel caps it at rmem_max/wmem_max
MAX_SRC_SOCKETS = 1 << SRC_PORT_BITS
TICK = 1.0                  # expire() and housekeeping period, seconds

NFT_TABLE = "vpclab_gwlb_node"  # netdev table: one ingress chain per endpoint veth

_ZERO_VNET_HDR = bytes(VNET_HDR_LEN)  # no checksum to finish, no segmentation
_NO_SENDERS: dict = {}
_SLOT_HEADER = TPACKET2_HDR.unpack_from


# --- configuration ----------------------------------------------------------------

def parse_mac(text: str) -> bytes:
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {text!r}") from None


def format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass(frozen=True)
class EndpointSpec:
    id: str
    ifname: str
    peer_mac: bytes | None = None

    @classmethod
    def from_dict(cls, where: str, data: Any) -> EndpointSpec:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected an object, got {data!r}")
        _no_unknown(where, data, {"id", "ifname", "peer_mac"})
        endpoint_id = data.get("id")
        try:
            vpce_id_to_int(endpoint_id)
        except (ValueError, TypeError):
            raise ValueError(f"{where}.id: not a GWLB endpoint ID: {endpoint_id!r}") from None
        ifname = data.get("ifname")
        if not isinstance(ifname, str) or not 0 < len(ifname) < 16 or "/" in ifname:
            raise ValueError(f"{where}.ifname: not an interface name: {ifname!r}")
        peer_mac = data.get("peer_mac")
        try:
            mac = None if peer_mac is None else parse_mac(peer_mac)
        except ValueError as error:
            raise ValueError(f"{where}.peer_mac: {error}") from None
        return cls(endpoint_id, ifname, mac)


@dataclass(frozen=True)
class TargetSpec:
    id: str
    ip: str
    az: str | None = None
    healthy: bool | None = None

    @classmethod
    def from_dict(cls, where: str, data: Any) -> TargetSpec:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected an object, got {data!r}")
        _no_unknown(where, data, {"id", "ip", "az", "healthy"})
        target_id = data.get("id")
        if not isinstance(target_id, str) or not target_id:
            raise ValueError(f"{where}.id: expected a target ID, got {target_id!r}")
        az = data.get("az")
        if az is not None and not isinstance(az, str):
            raise ValueError(f"{where}.az: expected a string, got {az!r}")
        healthy = data.get("healthy")
        if healthy is not None and not isinstance(healthy, bool):
            raise ValueError(f"{where}.healthy: expected true, false or null, got {healthy!r}")
        return cls(target_id, _ipv4(f"{where}.ip", data.get("ip")), az, healthy)


@dataclass(frozen=True)
class NodeSpec:
    """The node's CONFIG.json, validated; ValueError names the bad field."""

    availability_zone: str
    node_ip: str
    control_socket: str
    attributes: Mapping[str, Any]
    endpoints: tuple[EndpointSpec, ...] = ()
    targets: tuple[TargetSpec, ...] = ()
    uplink: str = "eth0"
    fast_path: fastpath.FastPathFds | None = None
    hash_seed: int = 0  # the load balancer's: its nodes, and a node restarted, pick alike

    @classmethod
    def from_dict(cls, data: Any) -> NodeSpec:
        if not isinstance(data, Mapping):
            raise ValueError("config: expected a JSON object")
        _no_unknown("config", data, {"availability_zone", "attributes", "node_ip", "endpoints",
                                     "targets", "control_socket", "uplink", "fast_path", "hash_seed"})
        az = data.get("availability_zone", "")
        if not isinstance(az, str):
            raise ValueError(f"config.availability_zone: expected a string, got {az!r}")
        control = data.get("control_socket")
        if not isinstance(control, str) or not control:
            raise ValueError("config.control_socket: a path is required")
        attributes = data.get("attributes") or {}
        if not isinstance(attributes, Mapping):
            raise ValueError("config.attributes: expected an object")
        uplink = data.get("uplink", "eth0")
        if not isinstance(uplink, str) or not 0 < len(uplink) < 16:
            raise ValueError(f"config.uplink: not an interface name: {uplink!r}")
        endpoints = tuple(EndpointSpec.from_dict(f"config.endpoints[{i}]", e)
                          for i, e in enumerate(_list("config.endpoints", data.get("endpoints"))))
        targets = tuple(TargetSpec.from_dict(f"config.targets[{i}]", t)
                        for i, t in enumerate(_list("config.targets", data.get("targets"))))
        for name, items in (("endpoints", [e.id for e in endpoints]), ("targets", [t.id for t in targets])):
            duplicates = sorted({i for i in items if items.count(i) > 1})
            if duplicates:
                raise ValueError(f"config.{name}: duplicate id(s) {', '.join(duplicates)}")
        hash_seed = data.get("hash_seed", 0)
        if type(hash_seed) is not int or not 0 <= hash_seed < 1 << 63:
            raise ValueError(f"config.hash_seed: expected a non-negative integer, got {hash_seed!r}")
        fast_path = None
        if data.get("fast_path") is not None:
            try:
                fast_path = fastpath.FastPathFds.from_dict(data["fast_path"])
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"config.fast_path: expected the fds of a loaded instance ({error})") from None
        spec = cls(availability_zone=az, node_ip=_ipv4("config.node_ip", data.get("node_ip")),
                   control_socket=control, attributes=dict(attributes), endpoints=endpoints,
                   targets=targets, uplink=uplink, fast_path=fast_path, hash_seed=hash_seed)
        try:
            spec.gwlb_config()
        except (ValueError, TypeError) as error:
            raise ValueError(f"config.attributes: {error}") from None
        return spec

    def gwlb_config(self, attributes: Mapping[str, Any] | None = None) -> GwlbConfig:
        return GwlbConfig.from_attributes(self.attributes if attributes is None else attributes,
                                          availability_zone=self.availability_zone, hash_seed=self.hash_seed)


def _no_unknown(where: str, data: Mapping, known: set[str]) -> None:
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _list(where: str, value: Any) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list")
    return value


def _ipv4(where: str, value: Any) -> str:
    try:
        address = ip_address(value)
    except (ValueError, TypeError):
        raise ValueError(f"{where}: not an IP address: {value!r}") from None
    if not isinstance(address, IPv4Address):
        raise ValueError(f"{where}: GENEVE to appliances is IPv4 only, got {value!r}")
    return str(address)


# --- checksums and frames (pure) ------------------------------------------------------

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


def _nft_chain(ifname: str) -> str:
    return "endpoint_" + ifname.encode().hex()  # any interface name, as a plain nft identifier


def kernel_ip_drop(ifname: str) -> str:
    """The nft script of `NodeProcess._drop_kernel_ip_input` on endpoint veth `ifname`."""
    chain = _nft_chain(ifname)
    return (f"add table netdev {NFT_TABLE}\n"
            f"add chain netdev {NFT_TABLE} {chain} "
            f"{{ type filter hook ingress device \"{ifname}\" priority 0; policy accept; }}\n"
            f"flush chain netdev {NFT_TABLE} {chain}\n"
            f"add rule netdev {NFT_TABLE} {chain} meta protocol {{ ip, ip6 }} drop\n")


def ethernet_prefixes(peer_mac: bytes, own_mac: bytes) -> tuple[bytes, bytes]:
    """What goes in front of an inner IPv4 / IPv6 packet sent to the router side."""
    return (_ZERO_VNET_HDR + peer_mac + own_mac + ETH_P_IP.to_bytes(2, "big"),
            _ZERO_VNET_HDR + peer_mac + own_mac + ETH_P_IPV6.to_bytes(2, "big"))


# --- the process -------------------------------------------------------------------

class _Endpoint:
    __slots__ = ("spec", "endpoint_id", "ifindex", "sock", "ring", "send", "own_mac", "peer_mac", "prefix4",
                 "prefix6", "rx_frames", "tx_frames")

    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec
        self.endpoint_id = vpce_id_to_int(spec.id)
        self.ifindex = 0
        self.sock: socket.socket | None = None
        self.ring: RxRing | None = None
        self.send: Callable[[bytes], int] | None = None  # sock.send, looked up once
        self.own_mac = b""
        self.peer_mac: bytes | None = None
        self.prefix4: bytes | None = None  # None until the peer's MAC is known
        self.prefix6: bytes | None = None
        self.rx_frames = 0
        self.tx_frames = 0

    def set_peer_mac(self, mac: bytes) -> None:
        self.peer_mac = mac
        self.prefix4, self.prefix6 = ethernet_prefixes(mac, self.own_mac)

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()  # first: the mapping holds a duplicate of the socket's fd
        if self.sock is not None:
            self.sock.close()


class _FastPath:
    """The flows this node hands to its eBPF fast path (fastpath.py), kept in step with
    the core: a flow's directions are installed once the core has picked its target,
    what they carry is folded back into the core's flow table and counters every tick,
    they leave when the core forgets the flow, and all leave whenever targets change
    (`GwlbNode.generation`), so that each flow's next packet is revalidated here.

    Packets the programs leave alone (SYN, FIN, RST, fragments, IP options, IPv6, other
    protocols, unknown flows, and TCP while `send_tcp_reset` is on) keep taking the ring
    and the sockets, so the core still sees everything it decides on."""

    def __init__(self, fds: fastpath.FastPathFds, node: GwlbNode, node_ip: str, uplink_ifindex: int) -> None:
        self.fds = fds
        self.node = node
        self.node_ip = node_ip
        self.uplink_ifindex = uplink_ifindex
        self.links: dict[int, int] = {}  # ifindex → tcx link fd (closing it detaches)
        self.flows: dict[fastpath.FlowKey, bytes] = {}  # → its flow's GENEVE header
        self.returns: dict[bytes, set[fastpath.FlowKey]] = {}  # header → the directions installed
        self.seen: dict[fastpath.FlowKey, fastpath.Counters] = {}  # counters already folded in
        self.generation = node.generation
        self.installed = 0
        self.map_full = 0
        fastpath.set_node_ip(fds.config, node_ip)
        self._clear()  # an instance outlives a node that crashed: start empty
        self.links[uplink_ifindex] = fastpath.attach_tc(fds.decap, uplink_ifindex)

    def _clear(self) -> None:
        for key in fastpath.flow_counters(self.fds.flows):
            fastpath.delete_flow(self.fds.flows, key)
        for header in fastpath.return_counters(self.fds.returns):
            fastpath.delete_return(self.fds.returns, header)

    def attach_endpoint(self, ifindex: int, sock: socket.socket) -> None:
        """The ring filter first: once the program takes a flow, the ring must not see it."""
        fastpath.attach_socket_filter(sock, self.fds.ring_filter)
        self.links[ifindex] = fastpath.attach_tc(self.fds.encap, ifindex)

    def detach_endpoint(self, ifindex: int) -> None:
        link = self.links.pop(ifindex, None)
        if link is not None:
            os.close(link)
        for key in [k for k in self.flows if k.ifindex == ifindex]:
            self._remove(key)

    def install(self, endpoint: _Endpoint, ifindex: int, inner: memoryview, encap: Encap) -> None:
        """After the core encapsulated `inner`: hand its direction of the flow over."""
        self.check_generation()
        key = fastpath.flow_key(ifindex, inner)
        if (key is None or ifindex not in self.links or endpoint.peer_mac is None
                or not self.node.may_offload(key.proto)):
            return
        header = encap.datagram[:fastpath.GENEVE_LEN]
        installed = self.flows.get(key)
        if installed == header:
            return
        if installed is not None:  # the 5-tuple is a new flow now (reused after a RST)
            self._remove(key)
        action = fastpath.FlowAction(self.uplink_ifindex, self.node_ip, encap.target_ip, encap.src_port, header)
        if not fastpath.put_flow(self.fds.flows, key, action):
            self.map_full += 1
            return
        self.flows[key] = header
        self.seen[key] = fastpath.Counters()
        keys = self.returns.get(header)
        if keys is None:
            back = fastpath.ReturnAction(ifindex, encap.target_ip, encap.src_port, endpoint.peer_mac,
                                         endpoint.own_mac)
            if not fastpath.put_return(self.fds.returns, header, back):
                self.map_full += 1  # its returns keep taking the socket
            keys = self.returns[header] = set()
        keys.add(key)
        self.installed += 1

    def fold_in(self) -> None:
        """Give the core what the programs carried since the last call: packets, bytes
        and the latest time, which keeps busy flows from idling out."""
        self.check_generation()
        self._fold_in()

    def _fold_in(self) -> None:
        for key, counters in fastpath.flow_counters(self.fds.flows).items():
            header = self.flows.get(key)
            if header is None:
                fastpath.delete_flow(self.fds.flows, key)  # raced its removal
                continue
            before = self.seen[key]
            if counters.packets == before.packets:
                continue
            self.seen[key] = counters
            if not self.node.flow_seen(header, counters.last_seen_ns / 1e9, counters.packets - before.packets,
                                       counters.bytes - before.bytes):
                self._remove(key)

    def prune(self) -> None:
        """After the core's `expire`: forget the flows it forgot (and all of them if a
        deregistration delay just ended)."""
        self.check_generation()
        for header in [h for h in self.returns if not self.node.has_flow(h)]:
            for key in list(self.returns.get(header, ())):
                self._remove(key)

    def check_generation(self) -> None:
        if self.node.generation != self.generation:
            self.generation = self.node.generation
            self._fold_in()
            for key in list(self.flows):
                self._remove(key)

    def _remove(self, key: fastpath.FlowKey) -> None:
        header = self.flows.pop(key)
        self.seen.pop(key, None)
        fastpath.delete_flow(self.fds.flows, key)
        keys = self.returns.get(header)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.returns[header]
                fastpath.delete_return(self.fds.returns, header)

    def snapshot(self) -> dict:
        return {"flows": len(self.flows), "installed": self.installed, "map_full": self.map_full,
                **fastpath.read_counters(self.fds.counters)}

    def close(self) -> None:
        for link in self.links.values():
            os.close(link)
        self.links.clear()


class NodeProcess:
    """A `GwlbNode` served over sockets. `__init__` does no I/O; `start` opens everything."""

    def __init__(self, spec: NodeSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock
        self.attributes = dict(spec.attributes)
        self.node = GwlbNode(spec.gwlb_config(), first_cookie=int.from_bytes(os.urandom(4), "big"))
        now = clock()
        for target in spec.targets:
            self.node.register(target.id, target.ip, target.az, now)
            if target.healthy is not None:
                self.node.set_target_health(target.id, target.healthy, now)
        self.endpoints: dict[int, _Endpoint] = {}
        self.fast: _FastPath | None = None
        self.fast_path_off = "not given" if spec.fast_path is None else ""  # why not, when not
        self.loop: EpollLoop | None = None
        self._geneve: socket.socket | None = None
        # target IP → source port → send() of a UDP socket bound to node_ip:port, connected to target:6081
        self._senders: dict[str, dict[int, Callable[[bytes], int]]] = {}
        self._src_sockets: list[socket.socket] = []
        self._uplink_tx: tuple[socket.socket, bytes] | None = None  # a packet socket, its MAC
        self._next_hop_macs: dict[str, bytes] = {}  # next hop IP → its MAC (the router's)
        self._max_src_sockets = MAX_SRC_SOCKETS
        self._control: ControlServer | None = None
        self.io: dict[str, int] = dict.fromkeys((
            "rx_frames", "rx_not_ip", "rx_not_unicast", "rx_short", "rx_gso", "rx_bad_offload_header",
            "rx_errors", "checksums_completed", "encap_sent", "geneve_received", "decap_sent",
            "decap_no_endpoint", "decap_peer_mac_unknown", "tx_errors", "src_port_fallback"), 0)
        self.setup_warnings: list[str] = []

    # --- setup ---------------------------------------------------------------

    def start(self) -> None:
        self._raise_fd_limit()
        self.loop = EpollLoop(TICK, self.clock)
        self._setup_link(self.spec.uplink, endpoint=False)
        try:
            self._uplink_tx = self._open_uplink_tx()
        except OSError as error:
            self.setup_warnings.append(f"outer IPv4 header left to the kernel (its IP ID): {error}")
        for target in self.spec.targets:  # learn the next hops now, not on a flow's first packet
            self._next_hop_mac(target.ip)
        if self.spec.fast_path is not None:
            try:
                self.fast = _FastPath(self.spec.fast_path, self.node, self.spec.node_ip,
                                      socket.if_nametoindex(self.spec.uplink))
            except OSError as error:
                self.fast_path_off = str(error)
                self.setup_warnings.append(f"fast path off: {error}")
        geneve = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        geneve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tune_udp(geneve)
        geneve.bind((self.spec.node_ip, GENEVE_PORT))
        self._geneve = geneve
        self.loop.watch(geneve, functools.partial(self._drain_geneve, geneve))
        for endpoint in self.spec.endpoints:
            self.attach_endpoint(endpoint)
        self.loop.stop_on(signal.SIGTERM, signal.SIGINT)
        self._open_control()  # last: a connectable control socket means "ready"

    def _open_uplink_tx(self) -> tuple[socket.socket, bytes]:
        """The packet socket that sends GENEVE with AWS's outer header (outer.py), and its MAC."""
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
        try:
            tx.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)  # the kernel finishes the UDP checksum
            try:
                tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            except OSError:
                pass
            tx.bind((self.spec.uplink, 0))
            tx.setblocking(False)
        except OSError:
            tx.close()
            raise
        return tx, tx.getsockname()[4]

    def _next_hop_mac(self, target_ip: str) -> bytes | None:
        """The MAC GENEVE to `target_ip` goes to (the VPC router's, in a lab), by our own ARP
        request (bounded: 5 x 0.2 s), remembered per next hop; None if nobody answered."""
        uplink, node_ip = self.spec.uplink, self.spec.node_ip
        try:
            with open("/proc/net/route") as f:
                hop = outer.next_hop(f.read(), uplink, target_ip)
        except (OSError, ValueError):
            return None
        if hop is None or hop in self._next_hop_macs:
            return self._next_hop_macs.get(hop) if hop is not None else None
        mac = None
        try:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(outer.ETH_P_ARP)) as arp:
                arp.bind((uplink, outer.ETH_P_ARP))
                arp.settimeout(0.2)
                own_mac = arp.getsockname()[4]
                for _ in range(5):
                    arp.send(outer.arp_request(own_mac, node_ip, hop))
                    try:
                        while mac is None:
                            mac = outer.arp_reply_mac(arp.recv(128), node_ip, hop)
                        break
                    except socket.timeout:
                        continue
        except OSError:
            return None
        if mac is not None:
            self._next_hop_macs[hop] = mac
        return mac

    def _outer_send(self, target_ip: str, port: int) -> Callable[[bytes], int] | None:
        """Send with AWS's outer header, or None (the kernel's header, and a warning)."""
        mac = None if self._uplink_tx is None else self._next_hop_mac(target_ip)
        if mac is None:
            if self._uplink_tx is not None:
                self.setup_warnings.append(f"outer IPv4 header to {target_ip} left to the kernel "
                                           f"(its IP ID): no ARP reply for its next hop")
            return None
        tx, own_mac = self._uplink_tx
        frame, send = outer.OuterHeader(own_mac, mac, self.spec.node_ip, target_ip, port).frame, tx.send
        return lambda datagram: send(frame(datagram))

    def _raise_fd_limit(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = MAX_SRC_SOCKETS + 1024
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
                soft = wanted
            except (ValueError, OSError):
                pass
        if soft != resource.RLIM_INFINITY:
            self._max_src_sockets = max(0, min(MAX_SRC_SOCKETS, soft - 256))

    def _setup_link(self, ifname: str, endpoint: bool) -> None:
        """Best effort: see the module docstring for why each setting matters."""
        try:
            result = subprocess.run(["ethtool", "-K", ifname, "tx", "off"], capture_output=True,
                                    text=True, timeout=10)
            if result.returncode != 0:
                self.setup_warnings.append(f"ethtool -K {ifname} tx off: {result.stderr.strip()}")
        except (OSError, subprocess.TimeoutExpired) as error:
            self.setup_warnings.append(f"ethtool -K {ifname} tx off: {error}")
        if endpoint:
            self._drop_kernel_ip_input(ifname)
            for path in (f"/proc/sys/net/ipv4/conf/{ifname}/forwarding",
                         f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"):
                value = "0" if path.endswith("forwarding") else "1"
                try:
                    with open(path, "w") as f:
                        f.write(value)
                except OSError as error:
                    if not (value == "1" and error.errno == errno.ENOENT):  # no IPv6 in this kernel
                        self.setup_warnings.append(f"{path} = {value}: {error.strerror}")

    def _drop_kernel_ip_input(self, ifname: str) -> None:
        """Best effort: an nftables netdev ingress rule on an endpoint veth drops its IP
        frames once the node's AF_PACKET socket has its copy (taps run before ingress
        hooks), so the node's kernel never routes them, not even to refuse them."""
        self._nft(kernel_ip_drop(ifname), f"nft ingress drop on {ifname}")

    def _undo_kernel_ip_input(self, ifname: str) -> None:
        self._nft(f"delete chain netdev {NFT_TABLE} {_nft_chain(ifname)}\n", None)

    def _nft(self, script: str, what: str | None) -> None:
        try:
            result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True,
                                    timeout=10)
            error = result.stderr.strip() if result.returncode != 0 else None
        except (OSError, subprocess.TimeoutExpired) as exc:
            error = str(exc)
        if error is not None and what is not None:
            self.setup_warnings.append(f"{what}: {error}")

    def _tune_udp(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)  # as GWLB sends (§1.1)
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)  # DF clear
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            except OSError:
                pass

    # --- endpoints -------------------------------------------------------------

    def attach_endpoint(self, spec: EndpointSpec) -> None:
        endpoint_id = vpce_id_to_int(spec.id)
        if endpoint_id in self.endpoints:
            raise ValueError(f"endpoint {spec.id} is already attached")
        if any(e.spec.ifname == spec.ifname for e in self.endpoints.values()):
            raise ValueError(f"interface {spec.ifname} already serves another endpoint")
        endpoint = _Endpoint(spec)
        self._setup_link(spec.ifname, endpoint=True)
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # receives nothing until bound
        ring = None
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)  # before the ring, or EBUSY
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # not our own writes
            ring = RxRing.open(sock)
            if self.fast is not None:
                self._attach_fast_path(spec.ifname, sock)
            sock.bind((spec.ifname, ETH_P_ALL))
            sock.setblocking(False)
            endpoint.own_mac = sock.getsockname()[4]
            endpoint.ifindex = socket.if_nametoindex(spec.ifname)
        except OSError:
            if ring is not None:
                ring.close()
            sock.close()
            raise
        endpoint.sock = sock
        endpoint.ring = ring
        endpoint.send = sock.send
        if spec.peer_mac is not None:
            endpoint.set_peer_mac(spec.peer_mac)
        self.endpoints[endpoint_id] = endpoint
        self.node.attach_endpoint(endpoint_id)
        self.loop.watch(sock, functools.partial(self._drain_endpoint, endpoint))

    def detach_endpoint(self, vpce_id: str) -> None:
        endpoint = self.endpoints.pop(vpce_id_to_int(vpce_id), None)
        if endpoint is None:
            raise ValueError(f"endpoint {vpce_id} is not attached")
        self.node.detach_endpoint(endpoint.endpoint_id)
        if self.fast is not None:
            self.fast.detach_endpoint(endpoint.ifindex)
        if endpoint.sock is not None:
            self.loop.unwatch(endpoint.sock)
            endpoint.close()
        self._undo_kernel_ip_input(endpoint.spec.ifname)

    def _attach_fast_path(self, ifname: str, sock: socket.socket) -> None:
        assert self.fast is not None
        try:
            self.fast.attach_endpoint(socket.if_nametoindex(ifname), sock)
        except OSError as error:  # this endpoint's flows stay on the slow path
            self.setup_warnings.append(f"fast path off on {ifname}: {error}")

    # --- the data path -----------------------------------------------------------

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

    def _sender(self, target_ip: str, port: int) -> Callable[[bytes], int]:
        """How to send GENEVE from `node_ip:port` to `target_ip:6081`.

        Through the uplink's packet socket, with AWS's outer header, when it opened;
        else a socket bound to the port and connected to the target: connected, the
        kernel keeps the route instead of looking it up per packet (measured
        faster than sendto). Either way that socket exists, since appliances that
        swap the ports answer to it. Sockets for two targets share a port (SO_REUSEADDR).
        Without one (fd limit, port taken) it goes from 6081, which appliances
        answer just the same, since they reply to 6081 (§1.2)."""
        senders = self._senders.setdefault(target_ip, {})
        if len(self._src_sockets) < self._max_src_sockets:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self._tune_udp(sock)
                sock.bind((self.spec.node_ip, port))
                sock.connect((target_ip, GENEVE_PORT))
            except OSError:
                sock.close()
            else:
                self._src_sockets.append(sock)
                # An appliance that swaps the ports answers here, not on 6081 (§1.2: accept it).
                self.loop.watch(sock, functools.partial(self._drain_geneve, sock))
                send = senders[port] = self._outer_send(target_ip, port) or sock.send
                return send
        self.io["src_port_fallback"] += 1
        send = self._outer_send(target_ip, GENEVE_PORT)
        if send is not None:
            senders[port] = send
            return send
        geneve, address = self._geneve, (target_ip, GENEVE_PORT)
        assert geneve is not None
        send = senders[port] = lambda datagram: geneve.sendto(datagram, address)
        return send

    # --- control -----------------------------------------------------------------

    def _open_control(self) -> None:
        self._control = ControlServer(self.loop, self.spec.control_socket, self.control)

    def control(self, request: Any) -> dict:
        """Serve one control request; never raises."""
        if not isinstance(request, dict):
            return {"ok": False, "error": "a request is a JSON object with an 'op'"}
        op = request.get("op")
        handler = self._OPS.get(op) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown op {op!r}; ops: {', '.join(sorted(self._OPS))}"}
        try:
            return {"ok": True, **(handler(self, request, self.clock()) or {})}
        except (ValueError, TypeError, KeyError, OSError) as error:
            return {"ok": False, "error": f"{op}: {error}"}
        finally:
            self._with_fast_path(_FastPath.check_generation)  # a target change empties the fast path

    def _op_snapshot(self, request: dict, now: float) -> dict:
        return {"snapshot": self.snapshot(now)}

    def _op_set_target_health(self, request: dict, now: float) -> dict:
        healthy = request.get("healthy")
        if not isinstance(healthy, bool):
            raise ValueError("healthy must be true or false")
        return {"applied": self.node.set_target_health(_target_id(request), healthy, now)}

    def _op_set_target_state(self, request: dict, now: float) -> dict:
        return {"applied": self.node.set_target_state(_target_id(request), request.get("state"), now)}

    def _op_register(self, request: dict, now: float) -> None:
        az = request.get("az")
        if az is not None and not isinstance(az, str):
            raise ValueError("az must be a string")
        self.node.register(_target_id(request), _ipv4("ip", request.get("ip")), az, now)

    def _op_deregister(self, request: dict, now: float) -> None:
        target_id = _target_id(request)
        if target_id not in {t.id for t in self.node.targets()}:
            raise ValueError(f"target {target_id} is not registered")
        self.node.deregister(target_id, now)

    def _op_attach_endpoint(self, request: dict, now: float) -> None:
        self.attach_endpoint(EndpointSpec.from_dict(
            "endpoint", {k: v for k, v in request.items() if k != "op"}))

    def _op_detach_endpoint(self, request: dict, now: float) -> None:
        vpce_id = request.get("id")
        if not isinstance(vpce_id, str):
            raise ValueError("id must be a vpce- ID")
        self.detach_endpoint(vpce_id)

    def _op_modify(self, request: dict, now: float) -> dict:
        changes = request.get("attributes")
        if not isinstance(changes, dict) or not changes:
            raise ValueError("attributes must be a non-empty object of AWS attribute keys")
        merged = {**self.attributes, **changes}
        self.node.reconfigure(self.spec.gwlb_config(merged))
        self.attributes = merged
        return {"attributes": merged}

    _OPS: dict[str, Callable[[NodeProcess, dict, float], dict | None]] = {
        "snapshot": _op_snapshot,
        "set_target_health": _op_set_target_health,
        "set_target_state": _op_set_target_state,
        "register": _op_register,
        "deregister": _op_deregister,
        "attach_endpoint": _op_attach_endpoint,
        "detach_endpoint": _op_detach_endpoint,
        "modify": _op_modify,
    }

    def _expire(self, now: float) -> None:
        """The core's `expire`, with what the fast path carried folded in first."""
        self._with_fast_path(_FastPath.fold_in)
        self.node.expire(now)
        self._with_fast_path(_FastPath.prune)

    def _with_fast_path(self, step: Callable[[_FastPath], None]) -> None:
        if self.fast is not None:
            try:
                step(self.fast)
            except OSError as error:
                self._fast_path_failed(error)

    def _fast_path_failed(self, error: OSError) -> None:
        """A bpf(2) call failed where none should: carry on without the fast path,
        never without the node. The ring filters go too, or they would keep hiding
        the flows still in the maps."""
        fast, self.fast = self.fast, None
        self.fast_path_off = f"off after an error: {error}"
        self.setup_warnings.append(f"fast path {self.fast_path_off}")
        if fast is not None:
            fast.close()
        for endpoint in self.endpoints.values():
            try:
                fastpath.detach_socket_filter(endpoint.sock)
            except OSError:
                pass

    def snapshot(self, now: float | None = None) -> dict:
        self._expire(self.clock() if now is None else now)
        snapshot = self.node.snapshot()
        snapshot["io"] = {
            **self.io,
            "src_sockets": len(self._src_sockets),
            "endpoints": {e.spec.id: {"ifname": e.spec.ifname, "rx_frames": e.rx_frames,
                                      "tx_frames": e.tx_frames,
                                      "peer_mac": format_mac(e.peer_mac) if e.peer_mac else None}
                          for e in self.endpoints.values()},
            "setup_warnings": list(self.setup_warnings),
            "fast_path": self.fast.snapshot() if self.fast is not None else {"off": self.fast_path_off},
        }
        snapshot["attributes"] = dict(self.attributes)
        return snapshot

    # --- the loop -------------------------------------------------------------------

    def run(self) -> None:
        assert self.loop is not None
        self.loop.run(self._tick)

    def close(self) -> None:
        if self.fast is not None:
            self.fast.close()
        if self._control is not None:
            self._control.close()
        for endpoint in self.endpoints.values():
            endpoint.close()
        socks = [self._geneve, *self._src_sockets, self._uplink_tx and self._uplink_tx[0]]
        for sock in socks:
            if sock is not None:
                sock.close()
        if self.loop is not None:
            self.loop.close()


def _target_id(request: dict) -> str:
    target_id = request.get("target", request.get("id"))
    if not isinstance(target_id, str) or not target_id:
        raise ValueError("target must be a target ID")
    return target_id


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m vpclab.engines.gwlb.node CONFIG.json", file=sys.stderr)
        return 2
    try:
        with open(args[0]) as f:
            spec = NodeSpec.from_dict(json.load(f))
    except (OSError, ValueError) as error:
        print(f"gwlb node: {args[0]}: {error}", file=sys.stderr)
        return 2
    process = NodeProcess(spec)
    try:
        process.start()
    except (OSError, ValueError) as error:
        print(f"gwlb node: cannot start: {error}", file=sys.stderr)
        process.close()
        return 1
    for warning in process.setup_warnings:
        print(f"gwlb node: warning: {warning}", file=sys.stderr)
    print(f"gwlb node {spec.availability_zone or '-'} on {spec.node_ip}: "
          f"{len(process.endpoints)} endpoint(s), {len(spec.targets)} target(s)", file=sys.stderr)
    try:
        process.run()
    finally:
        process.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
