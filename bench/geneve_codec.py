"""GENEVE codec and GWLB core throughput, as ratios to a bare-struct baseline run alongside.

    python bench/geneve_codec.py [--packet-size 1400] [--seconds 0.5]

The baseline is the least work any codec must do per packet: one
`struct.unpack_from` of the 40 header bytes plus one concatenation of a
prebuilt header with the inner packet. Figures are packets per second on one
core; compare ratios across machines, not the raw numbers.
"""
from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpclab.engines.appliance.core import Appliance  # noqa: E402
from vpclab.engines.io.geneve import GwlbHeader, decode, encode  # noqa: E402
from vpclab.engines.gwlb import GwlbConfig, GwlbNode  # noqa: E402


def rate(step: Callable[[], object], seconds: float) -> float:
    """Best-of-5 operations per second of `step`, called in batches of 1000."""
    best = 0.0
    for _ in range(5):
        count, start = 0, time.perf_counter()
        deadline = start + seconds / 5
        while True:
            for _ in range(1000):
                step()
            count += 1000
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def inner_tcp(size: int, src: bytes = bytes([10, 0, 1, 10]), sport: int = 40000, flags: int = 0x10) -> bytes:
    payload = bytes(max(0, size - 40))
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0, 64, 6, 0,
                     src, bytes([198, 51, 100, 7]))
    return ip + struct.pack("!HHIIBBHHH", sport, 443, 0, 0, 0x50, flags, 8192, 0, 0) + payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packet-size", type=int, default=1400, help="inner IP packet bytes")
    parser.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = parser.parse_args()

    inner = inner_tcp(args.packet_size)
    header = GwlbHeader(protocol=0x0800, endpoint_id=0x0123456789ABCDEF, flow_cookie=0x55908770)
    datagram = encode(header, inner)
    raw, layout = header.raw, struct.Struct("!HHIIQIQII")

    node = GwlbNode(GwlbConfig(availability_zone="a"), endpoints=[header.endpoint_id])
    node.register("i-1", "10.9.0.10")
    node.set_target_health("i-1", True, 0)
    sent = node.from_endpoint(inner, header.endpoint_id, 0)
    appliance = Appliance()
    # New flows (a SYN each, from a fresh source) over four healthy targets: target choice at work.
    chooser = GwlbNode(GwlbConfig(availability_zone="a"), endpoints=[header.endpoint_id])
    for i in range(4):
        chooser.register(f"i-{i}", f"10.9.0.{10 + i}")
        chooser.set_target_health(f"i-{i}", True, 0)
    syns = [inner_tcp(40, src=bytes([10, 1, n >> 8 & 0xFF, n & 0xFF]), sport=1024 + n % 50000, flags=0x02)
            for n in range(1 << 16)]
    cursor = [0]

    def new_flow() -> None:
        i = cursor[0] = (cursor[0] + 1) & 0xFFFF
        if i == 0:  # every source used: let all flows idle out, so each SYN starts a flow again
            chooser.expire(1e9 * (1 + chooser.new_flow_count))
        chooser.from_endpoint(syns[i], header.endpoint_id, 1)

    def baseline() -> None:
        layout.unpack_from(datagram)
        raw + inner

    def codec() -> None:
        encode(header, inner)
        decode(datagram)

    base = rate(baseline, args.seconds)
    print(f"inner packet {len(inner)} B; baseline (struct.unpack_from + concat): {base:,.0f}/s")
    for name, step in [
        ("codec encode+decode", codec),
        ("gwlb node from_endpoint", lambda: node.from_endpoint(inner, header.endpoint_id, 1)),
        ("gwlb node from_appliance", lambda: node.from_appliance(sent.datagram, sent.target_ip, 1)),
        ("appliance handle", lambda: appliance.handle(sent.datagram, 1)),
        ("gwlb node new flow, 4 tgts", new_flow),
    ]:
        ops = rate(step, args.seconds)
        print(f"{name:26s} {ops:>12,.0f}/s  {ops / base:5.2f}x baseline")


if __name__ == "__main__":
    main()
