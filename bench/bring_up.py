"""Benchmark: how long `vpclab up` and `down` take, against a bare baseline in the same run.

For each lab (examples/basic-vpc.yaml, a generated lab of 3 VPCs and 30
instances, examples/gwlb-two-vpc.yaml: two GWLB nodes with their eBPF fast paths, two
appliances, and the two transit gateway labs, examples/gwlb-centralized-tgw.yaml and
examples/gwlb-ingress-egress.yaml, whose target is up in under 2 s) it times `vpclab up` and `vpclab down`, then times a bare shell
script that creates the same number of namespaces and veth links in a sandbox
and tears them down. It prints the times and two ratios to that baseline:
`up` end to end (a Python start, loading and checking the lab file, then the
daemon's work), and the daemon's fabric work alone (namespaces, links,
addresses, routes, rules, rulesets), and the services' start within `up`
(GWLB nodes, appliances: each a Python process that must answer). Targets: the
30-instance lab is up within 3x its bare baseline; a GWLB lab is up in under 2 s.

    python3 bench/bring_up.py [--runs N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vpclab.model import load_lab  # noqa: E402
from vpclab.plan.compile import compile_lab  # noqa: E402


def generated_lab(vpcs: int = 3, per_vpc: int = 10) -> str:
    lines = ["vpcs:"]
    for v in range(vpcs):
        lines += [f"  vpc{v}:", f"    CidrBlock: 10.{v}.0.0/16", "    EnableDnsHostnames: true"]
    lines.append("subnets:")
    for v in range(vpcs):
        for s, az in enumerate("ab"):
            lines += [f"  vpc{v}-{az}:", f"    VpcId: vpc{v}", f"    AvailabilityZone: {az}",
                      f"    CidrBlock: 10.{v}.{s + 1}.0/24"]
    lines.append("internet_gateways:")
    lines += [f"  igw{v}:\n    VpcId: vpc{v}" for v in range(vpcs)]
    lines.append("route_tables:")
    for v in range(vpcs):
        lines += [f"  rt{v}:", f"    VpcId: vpc{v}", "    Main: true", "    Routes:",
                  "      - DestinationCidrBlock: 0.0.0.0/0", f"        GatewayId: igw{v}"]
    lines.append("security_groups:")
    for v in range(vpcs):
        lines += [f"  web{v}:", f"    VpcId: vpc{v}", "    SecurityGroupIngress:",
                  "      - {IpProtocol: tcp, FromPort: 80, ToPort: 80, CidrIp: 0.0.0.0/0}"]
    lines.append("instances:")
    for v in range(vpcs):
        for i in range(per_vpc):
            lines += [f"  vm{v}-{i}:", f"    SubnetId: vpc{v}-{'ab'[i % 2]}",
                      f"    AssociatePublicIpAddress: {'true' if i == 0 else 'false'}",
                      f"    SecurityGroupIds: [web{v}]"]
    lines += ["internet:", "  hosts:", "    client: {}", "    server: {}"]
    return "\n".join(lines) + "\n"


def bare_script(namespaces: int, links: int) -> str:
    """Namespaces held by sleeping processes, veth pairs between them, then teardown."""
    return f"""
set -e
pids=""
for i in $(seq {namespaces}); do unshare -n sleep infinity & pids="$pids $!"; done
set -- $pids
n=0
for i in $(seq {links}); do
  a=$(eval echo \\${{$(( (n % $#) + 1 ))}}); b=$(eval echo \\${{$(( ((n + 1) % $#) + 1 ))}})
  echo "link add name v$i netns $a type veth peer name p$i netns $b"
  n=$((n + 1))
done > /tmp/vpclab-bench-links.batch
ip -batch /tmp/vpclab-bench-links.batch
kill $pids
"""


def time_bare(namespaces: int, links: int) -> float:
    started = time.perf_counter()
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--net", "--pid", "--fork",
                    "--mount-proc", "sh", "-c", bare_script(namespaces, links)], check=True,
                   capture_output=True)
    return time.perf_counter() - started


def time_vpclab(path: Path, env: dict) -> tuple[float, float, float, float]:
    """`up` end to end, the daemon's own fabric work and services' start within it, and `down`."""
    cli = [sys.executable, "-m", "vpclab"]
    started = time.perf_counter()
    result = subprocess.run(cli + ["up", str(path), "--name", "bench"], env=env, capture_output=True, text=True)
    up = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"vpclab up {path.name} failed:\n{result.stderr}")
    status = json.loads(subprocess.run(cli + ["status", "--lab", "bench", "--json"], env=env, check=True,
                                       capture_output=True).stdout)
    started = time.perf_counter()
    subprocess.run(cli + ["down", "--lab", "bench"], env=env, check=True, capture_output=True)
    daemon = status["daemon"]
    return up, daemon["fabric_seconds"], daemon["services_seconds"], time.perf_counter() - started


def time_python_start() -> float:
    """What any Python command costs here before it does anything."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="vpclab-bench-")
    env = dict(os.environ, VPCLAB_HOME=home, PYTHONPATH=str(ROOT))
    generated = Path(home) / "generated-30.yaml"
    generated.write_text(generated_lab())
    python = statistics.median(time_python_start() for _ in range(5))
    print(f"python start: {python:.3f} s (paid once by every `vpclab` command)")
    print(f"{'lab':<27} {'ns':>4} {'links':>5} {'up s':>7} {'fabric s':>8} {'svcs s':>7} {'down s':>7} "
          f"{'bare s':>7} {'up/bare':>8} {'fabric/bare':>11}")
    for path in (ROOT / "examples" / "basic-vpc.yaml", generated, ROOT / "examples" / "gwlb-two-vpc.yaml",
                 ROOT / "examples" / "gwlb-centralized-tgw.yaml", ROOT / "examples" / "gwlb-ingress-egress.yaml"):
        wiring = compile_lab(load_lab(path, "bench"))
        ns, links = len(wiring.namespaces), len(wiring.links)
        runs = []
        for _ in range(args.runs):
            runs.append((*time_vpclab(path, env), time_bare(ns, links)))
        up, fabric, services, down, bare = (statistics.median(r[i] for r in runs) for i in range(5))
        print(f"{path.name:<27} {ns:>4} {links:>5} {up:>7.3f} {fabric:>8.3f} {services:>7.3f} {down:>7.3f} "
              f"{bare:>7.3f} {up / bare:>7.2f}x {fabric / bare:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
