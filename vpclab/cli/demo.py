"""`vpclab demo`: bring up the richest example lab, send real traffic through it, tear it down."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from vpclab.cli.main import render_status
from vpclab.daemon.client import Lab, LabError
from vpclab.model import load_lab

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO_LAB = "vpclab-demo"


def _run(lab: Lab, node: str, command: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(lab.nsenter(node) + ["sh", "-c", command], capture_output=True, text=True,
                          timeout=timeout)


class Steps:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.failed = 0

    def expect(self, title: str, node: str, command: str, ok: bool, shows: str | None = None) -> str:
        """Run a command in a node; `ok` says whether AWS would let it succeed."""
        print(f"\n== {title}\n   {node}$ {command}")
        result = _run(self.lab, node, command)
        out = (result.stdout + result.stderr).strip()
        print("   " + ("\n   ".join(out.splitlines()) if out else "(no output)"))
        succeeded = result.returncode == 0 and (shows is None or shows in out)
        verdict = "as AWS behaves" if succeeded == ok else "NOT as AWS behaves"
        print(f"   -> {'reached' if result.returncode == 0 else 'blocked'}, {verdict}")
        self.failed += succeeded != ok
        return out

    def change(self, kind: str, **params) -> None:
        print(f"\n== live change: {kind} {params}")
        result = self.lab.request({"op": "change", "kind": kind, "params": params})
        print(f"   -> applied as change {result['seq']}")


def basic_vpc(steps: Steps, status: dict) -> None:
    ips = {i["name"]: i for i in status["instances"]}
    web_public = ips["web-1"]["public_ip"]
    nat_ip = status["nat_gateways"][0]["public_ip"]
    steps.expect("an internet client reaches web-1 on its public IP (through the internet gateway)",
                 "client", f"curl -s --max-time 3 http://{web_public}/", ok=True, shows="web-1")
    steps.expect(f"app-1, in a private subnet, reaches the internet through the NAT gateway: "
                 f"the server sees {nat_ip}",
                 "app-1", "curl -s --max-time 3 http://server.internet.test/", ok=True, shows=nat_ip)
    steps.expect("the internet cannot reach app-1 (no public IP, no route)",
                 "client", f"curl -s --max-time 2 http://{ips['app-1']['private_ip']}/", ok=False)
    steps.expect("web-1 resolves app-1's hostname through the VPC resolver at base+2",
                 "web-1", f"getent hosts {ips['app-1']['hostname']}", ok=True,
                 shows=ips["app-1"]["private_ip"])
    steps.change("revoke-security-group-ingress", group="web-sg", protocol="tcp", port="80",
                 cidr="0.0.0.0/0")
    steps.expect("with port 80 revoked from web-sg, the client is blocked",
                 "client", f"curl -s --max-time 2 http://{web_public}/", ok=False)
    steps.change("authorize-security-group-ingress", group="web-sg", protocol="tcp", port="80",
                 cidr="0.0.0.0/0")
    steps.expect("authorized again, the client gets through", "client",
                 f"curl -s --max-time 3 http://{web_public}/", ok=True, shows="web-1")


def run_demo() -> int:
    example = EXAMPLES / "basic-vpc.yaml"
    model = load_lab(example, DEMO_LAB)
    lab = Lab(model.name)
    if lab.exists():
        lab.stop()
        lab.remove()
    print(f"vpclab demo: bringing up {example.name}")
    started = time.monotonic()
    lab.create(model.name, str(example), example.read_text())
    try:
        status = lab.start(lambda m: print(f"   {m}"))
        print(f"up in {time.monotonic() - started:.2f}s\n")
        print(render_status(status))
        steps = Steps(lab)
        basic_vpc(steps, status)
    except LabError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.stop()
        lab.remove()
        print("\nlab torn down: no namespace, interface or process left")
    if steps.failed:
        print(f"\n{steps.failed} step(s) did not behave as AWS does", file=sys.stderr)
        return 1
    print("\nevery step behaved as AWS documents")
    return 0
