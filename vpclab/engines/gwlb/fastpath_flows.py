"""The flows a GWLB node hands to its eBPF fast path (fastpath.py, fastpath.c).

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
"""
from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from vpclab.engines.gwlb import fastpath
from vpclab.engines.gwlb.core import Encap, GwlbNode

if TYPE_CHECKING:
    from vpclab.engines.gwlb.sockets import _Endpoint


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
