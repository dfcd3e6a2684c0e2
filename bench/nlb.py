"""NLB and PrivateLink forwarding, as ratios to a direct path measured in the same run.

    python bench/nlb.py [--seconds 2] [--rounds 3]

It brings up a real lab (`vpclab up`, in its own sandbox) with a target
instance, a client in the target's VPC, an internal NLB whose node sits in a
third subnet, and a consumer VPC whose client reaches the NLB through an
interface endpoint. Three paths to the same target server:

- direct: client -> VPC router -> target;
- NLB: client -> VPC router -> target, the router dispatching for the NLB node itself (its
  fast path: nftables DNAT/SNAT and conntrack in the router, one forwarding pass; engines.nlb
  router_fastpath_ruleset); clients the router does not fast-path (from the internet, through a
  Proxy Protocol v2 listener, in a VPC whose routes send flows through the router twice) take
  client -> router -> NLB node (DNAT/SNAT) -> router -> target;
- endpoint: consumer -> its router -> endpoint ENI -> provider router -> target, the provider's
  router dispatching for the NLB node (its fast path, with a conntrack zone per endpoint link;
  two forwarding passes). Before it did (the ENI's veth ended in the node: three passes), this
  path measured 0.71x direct in new connections/s and 0.80x in throughput; with it, 0.81-0.86x
  and 0.84-0.93x (kernel 6.18, 2 shared CPUs, load 2.5, rounds as noisy as ever: 0.63-1.33).
  Proxy Protocol v2 listeners and unknown segments still take the node: consumer -> its router ->
  provider router -> NLB node -> provider router -> target.

For each, a client inside the lab's namespaces measures:
- new TCP connections per second: connect, close, repeat, for `--seconds`, against a
  server that accepts and closes;
- bulk throughput: one TCP stream of 1 MiB writes for `--seconds` into a server that
  discards.

Each figure is the best of `--rounds` rounds, interleaved path by path, and is printed
as a ratio to the direct path, with the direct path's absolute value for scale, under the
kernel release it ran on (the cost of a base chain or a conntrack zone differs between
kernels). The target: the NLB and the endpoint paths at least 0.8x direct (the kernel
forwards). Each ratio is followed by the range of the rounds' own ratios (each round
against its own direct run), which shows the noise of a busy machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAB = """
lab: {region: us-east-1, account: "111111111111"}
vpcs:
  provider-vpc: {CidrBlock: 10.0.0.0/16}
  consumer-vpc: {CidrBlock: 10.0.0.0/16, Account: "222222222222"}
subnets:
  targets: {VpcId: provider-vpc, AvailabilityZone: a, CidrBlock: 10.0.1.0/24}
  clients: {VpcId: provider-vpc, AvailabilityZone: a, CidrBlock: 10.0.2.0/24}
  nodes: {VpcId: provider-vpc, AvailabilityZone: a, CidrBlock: 10.0.3.0/24}
  consumers: {VpcId: consumer-vpc, AvailabilityZone: a, CidrBlock: 10.0.1.0/24}
security_groups:
  open:
    VpcId: provider-vpc
    SecurityGroupIngress: [{IpProtocol: tcp, FromPort: 5001, ToPort: 5002, CidrIp: 0.0.0.0/0}]
instances:
  target:
    SubnetId: targets
    PrivateIpAddress: 10.0.1.10
    SecurityGroupIds: [open]
    DefaultServices: false
    Run: ["python3 @SINK@"]
  client: {SubnetId: clients, PrivateIpAddress: 10.0.2.10, DefaultServices: false}
  consumer: {SubnetId: consumers, PrivateIpAddress: 10.0.1.20, DefaultServices: false}
load_balancers:
  bench-nlb:
    Type: network
    Scheme: internal
    SubnetMappings: [{SubnetId: nodes, PrivateIPv4Address: 10.0.3.5}]
target_groups:
  sink:
    {Protocol: TCP, Port: 5001, VpcId: provider-vpc, TargetType: ip, HealthCheckPort: "5002", Targets: [10.0.1.10]}
  accept:
    {Protocol: TCP, Port: 5002, VpcId: provider-vpc, TargetType: ip, Targets: [10.0.1.10]}
listeners:
  sink-listener: {LoadBalancerArn: bench-nlb, Protocol: TCP, Port: 5001, DefaultActions: [{Type: forward, TargetGroupArn: sink}]}
  accept-listener: {LoadBalancerArn: bench-nlb, Protocol: TCP, Port: 5002, DefaultActions: [{Type: forward, TargetGroupArn: accept}]}
vpc_endpoint_services:
  bench: {NetworkLoadBalancerArns: [bench-nlb], AcceptanceRequired: false, AllowedPrincipals: ["*"]}
vpc_endpoints:
  bench-endpoint:
    VpcEndpointType: Interface
    ServiceName: bench
    VpcId: consumer-vpc
    SubnetIds: [consumers]
    SubnetConfigurations: [{SubnetId: consumers, Ipv4: 10.0.1.50}]
"""

# The target's servers: 5001 discards a stream, 5002 accepts and closes (threads: both at once).
SINK = (
    "import socket, threading\n"
    "def serve(port, each):\n"
    "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "    s.bind((\"0.0.0.0\", port)); s.listen(1024)\n"
    "    while True:\n"
    "        c, _ = s.accept(); each(c)\n"
    "def drain(c):\n"
    "    def run():\n"
    "        buf = bytearray(1 << 20)\n"
    "        while c.recv_into(buf): pass\n"
    "        c.close()\n"
    "    threading.Thread(target=run, daemon=True).start()\n"
    "threading.Thread(target=serve, args=(5001, drain), daemon=True).start()\n"
    "serve(5002, lambda c: c.close())\n"
)

CLIENT = """
import json, socket, sys, time
dst, seconds = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + seconds
conns = 0
while time.monotonic() < end and conns < 10_000_000:
    s = socket.create_connection((dst, 5002), timeout=2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00")
    s.close()
    conns += 1
cps = conns / seconds
s = socket.create_connection((dst, 5001), timeout=5)
chunk = b"x" * (1 << 20)
sent, start = 0, time.monotonic()
end = start + seconds
while time.monotonic() < end:
    s.sendall(chunk)
    sent += len(chunk)
elapsed = time.monotonic() - start
s.close()
print(json.dumps({"connections_per_second": cps, "bytes_per_second": sent / elapsed}))
"""


def vpclab(env: dict, *args: str, timeout: float = 120) -> str:
    result = subprocess.run([sys.executable, "-m", "vpclab", *args], env=env, text=True, capture_output=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"vpclab {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def measure(env: dict, node: str, dst: str, seconds: float) -> dict:
    out = vpclab(env, "exec", "--lab", "bench-nlb", node, "--", "python3", "-c", CLIENT, dst, str(seconds),
                 timeout=seconds * 4 + 30)
    return json.loads(out)


def wait_reachable(env: dict, node: str, dst: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    probe = f"import socket; socket.create_connection(('{dst}', 5002), timeout=1).close()"
    while time.monotonic() < deadline:
        r = subprocess.run([sys.executable, "-m", "vpclab", "exec", "--lab", "bench-nlb", node, "--",
                            "python3", "-c", probe], env=env, capture_output=True, timeout=30)
        if r.returncode == 0:
            return
        time.sleep(0.5)
    raise SystemExit(f"{dst} not reachable from {node}")


KEYS = ("connections_per_second", "bytes_per_second")


def spread(rounds: list[dict], path: str, key: str) -> str:
    """The noise: the lowest and highest ratio of one round's figure to that round's direct path."""
    ratios = sorted(r[path][key] / r["direct"][key] for r in rounds)
    return f"{ratios[0]:.2f}-{ratios[-1]:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    paths = {"direct": ("client", "10.0.1.10"), "nlb": ("client", "10.0.3.5"),
             "endpoint": ("consumer", "10.0.1.50")}
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, VPCLAB_HOME=home, PYTHONPATH=str(ROOT))
        lab_file = Path(home) / "bench-nlb.yaml"
        sink = Path(home) / "sink.py"
        sink.write_text(SINK)
        lab_file.write_text(LAB.replace("@SINK@", str(sink)))
        vpclab(env, "up", str(lab_file), "--name", "bench-nlb")
        try:
            for node, dst in paths.values():
                wait_reachable(env, node, dst)
            rounds = [{path: measure(env, node, dst, args.seconds) for path, (node, dst) in paths.items()}
                      for _ in range(args.rounds)]
        finally:
            vpclab(env, "down", "--lab", "bench-nlb")
    best = {path: {key: max(r[path][key] for r in rounds) for key in KEYS} for path in paths}
    direct = best["direct"]
    print(f"kernel {platform.release()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"direct path: {direct['connections_per_second']:.0f} new connections/s, "
          f"{direct['bytes_per_second'] * 8 / 1e9:.2f} Gbit/s (best of {args.rounds} x {args.seconds:g} s)")
    for path in ("nlb", "endpoint"):
        ratios = [f"{best[path][key] / direct[key]:.2f}x direct (rounds {spread(rounds, path, key)})"
                  for key in KEYS]
        print(f"{path:9s} new connections/s {ratios[0]}, throughput {ratios[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
