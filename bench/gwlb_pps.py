"""GWLB node and reference appliance throughput and latency, as ratios to baselines run alongside.

    python bench/gwlb_pps.py [--seconds 2] [--rounds 3] [--sizes 100,1400,8500] [--parts gwlb,appliance]

It re-executes itself in a sandbox (unshare: user, net, mount and PID
namespaces) and builds the topology of tests/lab/gwlb_harness.py: client ─
router ─ endpoint veth ─ GWLB node ─ GENEVE ─ appliance ─ back ─ router ─ server.

1. Through the GWLB: a client sends UDP packets of each size (the whole IP
   packet) to an echo server; the router sends both directions through the
   endpoint, so each round trip crosses the node and the appliance twice.
   Baseline: the same client, server and namespaces with the router's
   inspection rules removed (plain kernel forwarding, the node bypassed).
   The node runs twice: as a labs run it when `vpclab up` may load BPF (root),
   with its eBPF fast path for established flows, and on its Python data path
   alone, as in a rootless lab. The fast path needs a privileged load before
   the sandbox's user namespace, so this script loads it first when it can.
   - packets/s: closed loop, WINDOW packets in flight, echoed packets per second;
   - latency: one packet in flight, round-trip time median and 99th percentile.
   Each figure is the best of `--rounds` rounds, interleaved with its baseline's.
2. The reference appliance alone: a GWLB-like generator in the node's namespace
   sends GENEVE datagrams (one flow, 40 B header + inner packet of each size)
   to the appliance, closed loop as above. Baseline: a bare Python UDP echo
   (recvfrom/sendto, no parsing) on the same port and path.

The client, echo server and generator use recvmmsg/sendmmsg (ctypes) so that
they cost little next to the path they measure; the bare echo deliberately
does not (it is the baseline the issue names). Figures are printed only as
ratios, with the baseline's absolute value for scale. Every loop is bounded in
count and time.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "lab"))

from vpclab.engines.io.mmsg import MSG_WAITFORONE, MessageBatch  # noqa: E402

WINDOW = 32
ECHO_PORT = 7007
GENEVE_PORT = 6081
GENERATOR_PORT = 50000
MAX_BATCH = 64


# --- tools run inside namespaces (subcommands) -------------------------------------------

def tool_mmsg_echo(ip: str, port: int) -> None:
    """Echo every datagram back to its sender, in batches."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((ip, port))
    batch = MessageBatch(MAX_BATCH, 9000, names=True)
    fd = sock.fileno()
    while True:
        n = batch.recv(fd, MSG_WAITFORONE)
        if n:
            batch.echo(fd, 0, n, to_senders=True)


def tool_bare_echo(ip: str, port: int) -> None:
    """The baseline appliance: recvfrom, sendto, nothing else."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, port))
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        data, peer = recvfrom(65535)
        sendto(data, peer)


def tool_load(dst_ip: str, dst_port: int, payload_hex: str, seconds: float, window: int,
              bind_ip: str = "", bind_port: int = 0, reply_port: int = 0) -> dict:
    """Closed loop: keep `window` datagrams in flight for `seconds`; count replies.

    Replies come back to the sending socket, or with `reply_port` to a second
    socket bound there (the way a GWLB node gets its appliances' returns)."""
    payload = bytes.fromhex(payload_hex)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tx.bind((bind_ip, bind_port))
    tx.connect((dst_ip, dst_port))
    rx = tx
    if reply_port:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rx.bind((bind_ip, reply_port))
    for s in {tx, rx}:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 20_000))
    sender = MessageBatch(window, len(payload), payload)
    receiver = MessageBatch(MAX_BATCH, 65536)
    tx_fd, rx_fd = tx.fileno(), rx.fileno()
    # Warm up (flows, ARP, the appliance's reply sockets), then measure.
    received = refills = 0
    for phase, length in (("warmup", min(0.5, seconds / 4)), ("measure", seconds)):
        received = refills = 0
        sender.send(tx_fd, window)
        start = time.perf_counter()
        deadline = start + length
        while True:
            n = receiver.recv(rx_fd, MSG_WAITFORONE)
            now = time.perf_counter()
            if now >= deadline:
                break
            if n:
                received += n
                sender.send(tx_fd, n)
            else:  # 20 ms without a reply: whatever was in flight is lost; refill the window
                refills += 1
                sender.send(tx_fd, window)
        elapsed = now - start
        while receiver.recv(rx_fd, socket.MSG_DONTWAIT):  # drain stragglers, bounded by the socket
            pass
    return {"pps": received / elapsed, "refills": refills}


def tool_ping(dst_ip: str, dst_port: int, payload_hex: str, count: int, seconds: float,
              bind_ip: str = "", bind_port: int = 0, reply_port: int = 0) -> dict:
    """One datagram in flight: round-trip times in microseconds."""
    payload = bytes.fromhex(payload_hex)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tx.bind((bind_ip, bind_port))
    tx.connect((dst_ip, dst_port))
    rx = tx
    if reply_port:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rx.bind((bind_ip, reply_port))
    rx.settimeout(0.2)
    samples, lost = [], 0
    deadline = time.monotonic() + seconds
    for i in range(count):
        if time.monotonic() >= deadline:
            break
        start = time.perf_counter()
        tx.send(payload)
        try:
            rx.recv(65536)
        except OSError:
            lost += 1
            continue
        if i >= 20:  # the first ones set up flows and neighbours
            samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    if not samples:
        return {"median_us": float("nan"), "p99_us": float("nan"), "lost": lost}
    return {"median_us": statistics.median(samples),
            "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))], "lost": lost}


# --- packets ------------------------------------------------------------------------

def udp_payload(ip_size: int) -> bytes:
    """A UDP payload that makes an IPv4 packet of `ip_size` bytes."""
    return bytes(i & 0xFF for i in range(ip_size - 28))


def geneve_datagram(inner_size: int) -> bytes:
    from vpclab.engines.io.geneve import GwlbHeader, vpce_id_to_int
    from gwlb_harness import CLIENT_IP, ENDPOINT_ID, SERVER_IP
    payload = udp_payload(inner_size)
    src, dst = socket.inet_aton(CLIENT_IP), socket.inet_aton(SERVER_IP)
    inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, inner_size, 0, 0, 64, 17, 0, src, dst)
    inner += struct.pack("!HHHH", 40000, ECHO_PORT, 8 + len(payload), 0) + payload
    header = GwlbHeader(protocol=0x0800, endpoint_id=vpce_id_to_int(ENDPOINT_ID), flow_cookie=0x55908770)
    return header.raw + inner


# --- the bench ----------------------------------------------------------------------

def best(rounds: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """The best of interleaved rounds: highest rate, lowest median (noise only ever slows)."""
    load = max((r[0] for r in rounds), key=lambda x: x["pps"])
    ping = min((r[1] for r in rounds), key=lambda x: x["median_us"])
    return load, ping

class Bench:
    def __init__(self, workdir: str, seconds: float, rounds: int = 3, fast_path: dict | None = None) -> None:
        from gwlb_harness import Topology
        self.topology = Topology(workdir)
        self.seconds = seconds
        self.rounds = rounds
        self.fast_path = fast_path  # fds of a loaded instance, inherited

    def use_node(self, mode: str) -> None:
        """A fresh node, as `python` (its Python data path alone) or `fast` (with its fast path)."""
        self.topology.kill("node")
        self.topology.start_node(**({"fast_path": self.fast_path} if mode == "fast" else {}))

    def tool(self, ns: str, name: str, *args: object, timeout: float = 60) -> dict:
        argv = ["ip", "netns", "exec", ns, sys.executable, __file__, "--tool", name,
                json.dumps([*args])]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if result.returncode != 0:
            raise RuntimeError(f"{name} in {ns} failed:\n{result.stderr}")
        return json.loads(result.stdout)

    def background(self, name: str, ns: str, tool: str, *args: object) -> None:
        self.topology.spawn(name, ns, [sys.executable, __file__, "--tool", tool, json.dumps([*args])])
        time.sleep(0.3)

    def through_gwlb(self, sizes: list[int]) -> None:
        from gwlb_harness import SERVER_IP
        t = self.topology
        self.background("echo", "server", "mmsg_echo", SERVER_IP, ECHO_PORT)
        t.start_appliance()
        modes = ["kernel", "python"] + (["fast"] if self.fast_path else [])
        print(f"\n1. Through the GWLB (client → endpoint → node → appliance → node → server and back),\n"
              f"   vs plain kernel forwarding over the same namespaces; {WINDOW} packets in flight.")
        if not self.fast_path:
            print("   (no fast path: it needs BPF privileges here, see --help)")
        print(f"   {'size':>6}  {'node':>6}  {'pps ratio':>9}  {'baseline pps':>12}  {'rtt ratio':>9}  "
              f"{'baseline rtt':>12}  {'gwlb rtt':>9}  {'p99 gwlb/base':>13}")
        totals = {"encap": 0, "decap": 0, "fast encap": 0, "fast decap": 0}
        for size in sizes:
            payload = udp_payload(size).hex()
            rounds: dict[str, list] = {mode: [] for mode in modes}
            for _ in range(self.rounds):  # interleaved, so that a noisy moment hits every mode
                for mode in modes:
                    if mode == "kernel":
                        t.bypass()
                    else:
                        t.inspect()
                        self.use_node(mode)
                    load = self.tool("client", "load", SERVER_IP, ECHO_PORT, payload, self.seconds, WINDOW)
                    ping = self.tool("client", "ping", SERVER_IP, ECHO_PORT, payload, 3000, self.seconds / 2)
                    rounds[mode].append((load, ping))
                    if mode != "kernel":
                        self.count_node(totals)
            kload, kping = best(rounds["kernel"])
            target = "  (target ≥ 0.20)" if size == 100 else ""
            for mode in modes[1:]:
                gload, gping = best(rounds[mode])
                print(f"   {size:>5}B  {mode:>6}  {gload['pps'] / kload['pps']:>8.2f}x  {kload['pps']:>12,.0f}  "
                      f"{gping['median_us'] / kping['median_us']:>8.2f}x  {kping['median_us']:>9.0f} µs  "
                      f"{gping['median_us']:>6.0f} µs  {gping['p99_us'] / kping['p99_us']:>12.2f}x{target}")
        print("   node: " + ", ".join(f"{v:,} {k}" for k, v in totals.items())
              + f"; drops {self.node_snapshot()['drops'] or '{}'}")
        t.kill("node")
        t.kill("appl-1")
        t.kill("echo")

    def count_node(self, totals: dict[str, int]) -> None:
        """Add what the (fresh) node carried in one measurement."""
        io = self.node_snapshot()["io"]
        fast = io["fast_path"]
        totals["encap"] += io["encap_sent"]
        totals["decap"] += io["decap_sent"]
        totals["fast encap"] += fast.get("encap_hit", 0)
        totals["fast decap"] += fast.get("decap_hit", 0)

    def node_snapshot(self) -> dict:
        from gwlb_harness import control
        return control(self.topology.workdir, {"op": "snapshot"})["snapshot"]

    def appliance_alone(self, sizes: list[int]) -> None:
        from gwlb_harness import NODE_IP, appliance_ip
        t = self.topology
        target = appliance_ip(1)
        print(f"\n2. The reference appliance alone, driven by a GWLB-like generator ({WINDOW} in flight),\n"
              f"   vs a bare Python UDP echo (recvfrom/sendto) on the same port and path.")
        print(f"   {'inner':>6}  {'pps ratio':>9}  {'bare echo pps':>13}  {'rtt ratio':>9}")
        for size in sizes:
            datagram = geneve_datagram(size).hex()
            rounds: dict[str, list] = {"bare": [], "appliance": []}
            for _ in range(self.rounds):
                for mode in ("bare", "appliance"):
                    if mode == "bare":
                        self.background("bare", "appl-1", "bare_echo", "0.0.0.0", GENEVE_PORT)
                        reply_port = 0  # it answers the sender's port
                    else:
                        t.start_appliance()
                        reply_port = GENEVE_PORT  # §1.2: back to 6081, from the generator's port
                    args = (target, GENEVE_PORT, datagram)
                    load = self.tool("gwlb", "load", *args, self.seconds, WINDOW, NODE_IP, GENERATOR_PORT,
                                     reply_port)
                    ping = self.tool("gwlb", "ping", *args, 3000, self.seconds / 2, NODE_IP, GENERATOR_PORT,
                                     reply_port)
                    rounds[mode].append((load, ping))
                    t.kill("bare" if mode == "bare" else "appl-1")
            (bload, bping), (aload, aping) = best(rounds["bare"]), best(rounds["appliance"])
            print(f"   {size:>5}B  {aload['pps'] / bload['pps']:>8.2f}x  {bload['pps']:>13,.0f}  "
                  f"{aping['median_us'] / bping['median_us']:>8.2f}x  (target ≥ 0.75)")

    def run(self, sizes: list[int], parts: str = "gwlb,appliance") -> None:
        self.topology.build()
        try:
            if "gwlb" in parts.split(","):
                self.through_gwlb(sizes)
            if "appliance" in parts.split(","):
                self.appliance_alone(sizes)
        finally:
            self.topology.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement (max 30)")
    parser.add_argument("--sizes", default="100,1400,8500", help="IP packet sizes, bytes (68-8500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure, best kept (1-20)")
    parser.add_argument("--parts", default="gwlb,appliance",
                        help="which figures: gwlb (through the GWLB), appliance (alone), or both")
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    parser.add_argument("--fast-path-fds", help=argparse.SUPPRESS)
    parser.add_argument("--tool", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="?", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.tool:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        tool = globals()[f"tool_{options.tool}"]
        result = tool(*json.loads(options.args))
        print(json.dumps(result))
        return
    sizes = [int(s) for s in options.sizes.split(",")]
    if not all(68 <= s <= 8500 for s in sizes) or not 0 < options.seconds <= 30:
        parser.error("sizes must be 68-8500 bytes and --seconds 0-30")
    if not 1 <= options.rounds <= 20:
        parser.error("--rounds must be 1-20")
    if not set(options.parts.split(",")) <= {"gwlb", "appliance"}:
        parser.error("--parts is a comma-separated list of gwlb and appliance")
    if options.inside:
        fast_path = json.loads(options.fast_path_fds) if options.fast_path_fds else None
        Bench(options.inside, options.seconds, options.rounds, fast_path).run(sizes, options.parts)
        return
    from gwlb_harness import UNSHARE, sandbox_available
    if not sandbox_available():
        sys.exit("gwlb_pps: user namespaces are not available here")
    print(f"gwlb_pps: {os.cpu_count()} CPUs, {options.seconds:g} s per figure, sizes {sizes} "
          f"(whole IP packets)")
    from vpclab.engines.gwlb import fastpath
    reason = fastpath.unavailable_reason()
    fast_path = fastpath.load() if reason is None and "gwlb" in options.parts.split(",") else None
    print(f"gwlb_pps: fast path {'loaded' if fast_path else f'off ({reason})'}")
    with tempfile.TemporaryDirectory(prefix="gwlb-pps-") as workdir:
        command = [*UNSHARE, sys.executable, __file__, "--inside", workdir, "--seconds",
                   str(options.seconds), "--sizes", options.sizes, "--parts", options.parts,
                   "--rounds", str(options.rounds)]
        if fast_path is not None:
            command += ["--fast-path-fds", json.dumps(fast_path.to_dict())]
        code = subprocess.run(command, timeout=900, pass_fds=fast_path.all() if fast_path else ()).returncode
        sys.exit(code)


if __name__ == "__main__":
    main()
