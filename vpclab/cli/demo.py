"""`vpclab demo`: bring up the richest example lab, send real traffic through it, tear it down."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from vpclab.cli.render import render_status
from vpclab.daemon.client import Lab, LabError
from vpclab.doctor.probes import refuse_if_lacking
from vpclab.daemon.store import Store
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


def _appliance_packets(lab: Lab) -> dict[str, int]:
    time.sleep(1.5)  # appliances write their counters every second
    status = lab.request({"op": "status"})
    return {i["name"]: i.get("appliance", {}).get("packets_in", 0) for i in status["instances"]
            if i["role"] == "appliance"}


def _wait_targets(lab: Lab, want: str, count: int, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [d["TargetHealth"]["State"] for d in lab.request({"op": "targets", "target_group": "appliances"})]
        if states.count(want) >= count:
            print(f"   target health: {', '.join(states)}")
            return
        time.sleep(1)
    raise LabError(f"targets did not become {want} within {timeout}s")


def gwlb_distributed(steps: Steps, status: dict) -> None:
    lab = steps.lab
    web = next(i for i in status["instances"] if i["name"] == "web-1")
    nat_ip = status["nat_gateways"][0]["public_ip"]
    url = f"http://{web['public_ip']}/"
    print("\n== waiting for the GWLB's health checks (TCP 80, every 5 s, 2 passes)")
    _wait_targets(lab, "healthy", 2)
    before = _appliance_packets(lab)
    steps.expect("ingress: client -> IGW -> edge route table -> GWLB endpoint -> appliance -> web-1",
                 "client", f"curl -s --max-time 3 {url}", ok=True, shows="client: 100.64.0.10")
    steps.expect(f"egress: web-1 -> endpoint -> appliance -> NAT gateway -> IGW; the server sees {nat_ip}",
                 "web-1", "curl -s --max-time 3 http://server.internet.test/", ok=True, shows=nat_ip)
    after = _appliance_packets(lab)
    print(f"   GENEVE packets inspected per appliance: "
          f"{ {n: after[n] - before[n] for n in after} }")
    steps.expect("web-1 resolves the server's name through the VPC resolver at base+2",
                 "web-1", "getent hosts server.internet.test", ok=True, shows="100.64.0.11")
    steps.change("revoke-security-group-ingress", group="web-sg", protocol="tcp", port="80", cidr="0.0.0.0/0")
    steps.expect("with port 80 revoked from web-sg, the client is blocked (after inspection)",
                 "client", f"curl -s --max-time 2 {url}", ok=False)
    steps.change("authorize-security-group-ingress", group="web-sg", protocol="tcp", port="80",
                 cidr="0.0.0.0/0")
    print("\n== failover: stop appliance-1; after 2 failed checks (10 s) new flows go to appliance-2")
    _run(lab, "appliance-1", "pkill -f 'appliances/[a]ppliance-1.sock'")
    _wait_targets(lab, "unhealthy", 1)
    for _ in range(3):
        steps.expect("a new flow from the client reaches web-1 through the surviving appliance",
                     "client", f"curl -s --max-time 3 {url}", ok=True, shows="web-1")


STARTED_BY = "vpclab demo"  # the mark in a lab's state store that lets the demo remove it again


def started_by_demo(lab: Lab) -> bool:
    store = Store(lab.dir / "state.sqlite")
    try:
        return store.mark("started_by") == STARTED_BY
    finally:
        store.close()


def run_demo(name: str | None = None) -> int:
    example = EXAMPLES / "gwlb-distributed.yaml"
    model = load_lab(example, name or DEMO_LAB)
    refuse_if_lacking(model)
    lab = Lab(model.name)
    if lab.exists():
        if not started_by_demo(lab):  # someone's own lab: never the demo's to remove
            raise LabError(f"a lab named {lab.name} exists and `vpclab demo` did not start it; "
                           f"give the demo another --name, or `vpclab down --lab {lab.name}` first")
        print(f"vpclab demo: removing {lab.name}, left by an earlier demo")
        lab.stop()
        lab.remove()
    print(f"vpclab demo: bringing up {example.name} as lab {lab.name}")
    started = time.monotonic()
    lab.create(model.name, str(example), example.read_text())
    store = Store(lab.dir / "state.sqlite")
    store.set_mark("started_by", STARTED_BY)
    store.close()  # before the sandbox forks
    try:
        status = lab.start(lambda m: print(f"   {m}"), model)
        print(f"up in {time.monotonic() - started:.2f}s\n")
        print(render_status(status))
        steps = Steps(lab)
        gwlb_distributed(steps, status)
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
