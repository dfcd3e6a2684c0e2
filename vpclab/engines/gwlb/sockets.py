"""A GWLB node's links and sockets: endpoint veths with their receive rings, the uplink's
packet socket that sends AWS's outer header, and the UDP sockets GENEVE leaves from.

Why each link setting matters: node.py's docstring."""
from __future__ import annotations

import errno
import functools
import resource
import socket
import subprocess
from typing import Callable

from vpclab.engines.gwlb import outer
from vpclab.engines.gwlb.core import SRC_PORT_BITS
from vpclab.engines.gwlb.frames import ethernet_prefixes
from vpclab.engines.gwlb.ring import RxRing
from vpclab.engines.gwlb.spec import EndpointSpec
from vpclab.engines.io.geneve import GENEVE_PORT, vpce_id_to_int

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0  # <linux/in.h>; the socket module has them from 3.12

SOCKET_BUFFER = 4 << 20     # asked for; the kernel caps it at rmem_max/wmem_max
MAX_SRC_SOCKETS = 1 << SRC_PORT_BITS

NFT_TABLE = "vpclab_gwlb_node"  # netdev table: one ingress chain per endpoint veth


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


class NodeSockets:
    """NodeProcess's links and sockets (the state is NodeProcess's, from its `__init__`)."""

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
        """Best effort: see node.py's docstring for why each setting matters."""
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
