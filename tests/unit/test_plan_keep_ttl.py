"""The VPC router keeps TTL as it came (the hypervisor is no hop): its iptables script, loaded
in a real router between two namespaces, forwards every TTL unchanged, 1 and 255 included."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vpclab.model import load_lab
from vpclab.plan.compile import compile_lab
from vpclab.plan.ec2 import KEEP_TTL

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SENT = (1, 2, 64, 254, 255)

# A - R - B, R forwarding with the router's script loaded; A sends one UDP datagram per TTL and
# B reads each one's TTL off the wire.
SCRIPT = r"""
set -e
mount -t tmpfs none /run; mkdir -p /run/netns
for n in A R B; do ip netns add $n; done
ip link add a0 netns A type veth peer name ra netns R
ip link add b0 netns B type veth peer name rb netns R
ip -n A addr add 10.0.0.1/24 dev a0; ip -n A link set a0 up; ip -n A route add default via 10.0.0.254
ip -n B addr add 10.0.1.1/24 dev b0; ip -n B link set b0 up
ip -n R addr add 10.0.0.254/24 dev ra; ip -n R addr add 10.0.1.254/24 dev rb
ip -n R link set ra up; ip -n R link set rb up; ip -n B route add default via 10.0.1.254
ip netns exec R sysctl -qw net.ipv4.ip_forward=1
ip netns exec R iptables-nft-restore <<'EOF'
{rules}EOF
ip netns exec B {python} -c '
import socket
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800)); rx.bind(("b0", 0)); rx.settimeout(5)
seen = []
while len(seen) < {count}:
    frame = rx.recv(2000)
    if frame[23] == 17:
        seen.append(frame[22])
print(*seen)' &
sleep 1
ip netns exec A {python} -c '
import socket
for ttl in {sent}:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    s.sendto(b"x", ("10.0.1.1", 9))'
wait
"""


@pytest.mark.skipif(shutil.which("iptables-nft-restore") is None or shutil.which("unshare") is None,
                    reason="needs iptables (install.sh) and unshare")
def test_router_forwards_every_ttl_unchanged_from_1_to_255():
    script = SCRIPT.format(rules=KEEP_TTL, python=sys.executable, count=len(SENT), sent=SENT)
    result = subprocess.run(["unshare", "-Urnm", "--fork", "sh", "-c", script], capture_output=True,
                            text=True, timeout=30)
    if result.returncode != 0 and "Operation not permitted" in result.stderr and "unshare" in result.stderr:
        pytest.skip("no user namespaces here")
    assert result.returncode == 0, result.stderr
    assert [int(ttl) for ttl in result.stdout.split()] == list(SENT)


@pytest.mark.parametrize("example", ["basic-vpc.yaml", "gwlb-distributed.yaml"])
def test_every_vpc_router_and_nothing_else_keeps_ttl(example):
    wiring = compile_lab(load_lab(EXAMPLES / example))
    assert {ns.kind for ns in wiring.namespaces if ns.iptables} == {"router"}
    assert all(ns.iptables == KEEP_TTL for ns in wiring.namespaces if ns.kind == "router")
