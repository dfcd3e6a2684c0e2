"""One Gateway Load Balancer node (one per AZ): the I/O shell around `GwlbNode`.

    python -m vpclab.engines.gwlb.node [--after-go] CONFIG.json

`--after-go`: wait for a line on stdin before reading CONFIG.json (EOF: exit 0), so
that the daemon can start the interpreter before the lab's fabric is complete.

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

The data path is in datapath.py, the fast path's flows in fastpath_flows.py, the links and
sockets in sockets.py, and CONFIG.json's validation in spec.py.

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

import functools
import json
import os
import signal
import socket
import sys
import time
from typing import Any, Callable

from vpclab.engines.gwlb import fastpath
from vpclab.engines.gwlb.core import GwlbNode
from vpclab.engines.gwlb.datapath import NodeDataPath
from vpclab.engines.gwlb.fastpath_flows import _FastPath
from vpclab.engines.gwlb.sockets import MAX_SRC_SOCKETS, NodeSockets, _Endpoint
from vpclab.engines.gwlb.spec import EndpointSpec, NodeSpec, _ipv4, format_mac
from vpclab.engines.io.control import ControlServer
from vpclab.engines.io.epoll_loop import EpollLoop
from vpclab.engines.io.geneve import GENEVE_PORT

TICK = 1.0                  # expire() and housekeeping period, seconds


class NodeProcess(NodeDataPath, NodeSockets):
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
    if args[:1] == ["--after-go"]:  # started early (daemon/early_nodes.py): imports done, wait
        args = args[1:]
        if not sys.stdin.buffer.readline():
            return 0  # never released: not needed after all
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m vpclab.engines.gwlb.node [--after-go] CONFIG.json", file=sys.stderr)
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
