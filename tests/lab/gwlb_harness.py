"""A minimal GWLB topology in a sandbox, for the node/appliance shell tests and bench.

Not the lab fabric: just enough namespaces and veths to put real packets
through one GWLB endpoint, one GWLB node and its appliances.

    client 10.0.1.10 ── r-cli ┐                    ┌ eth0 10.1.0.5 (node_ip) ── eth0 10.1.0.10 appl-1
                              router ── r-vpce ══ gwe0 gwlb (node)
    server 10.0.2.10 ── r-srv ┘  169.254.0.1/30    169.254.0.2/30

The router sends client→server and server→client traffic into the endpoint
veth (policy routing by ingress interface, as the VPC router does); packets
coming back out of it are routed normally. `bypass()` removes those rules,
which gives the plain-kernel-forwarding baseline over the same namespaces.
With more than one appliance, the provider side is a bridge in namespace `prov`.

Two ways to use it:
- inside a sandbox (`bench/gwlb_pps.py` re-executes itself under `unshare`):
  `Topology(workdir).build()`, then `sh`, `spawn`, ...;
- from pytest: `Sandbox(workdir)` starts `python gwlb_harness.py serve WORKDIR`
  under `unshare --user --map-root-user --net --mount --pid --fork --mount-proc`
  and forwards JSON-line requests to a `Topology` in there. Closing it ends the
  sandbox's PID 1, which takes every namespace and process with it.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--mount-proc"]

CLIENT_IP, SERVER_IP = "10.0.1.10", "10.0.2.10"
NODE_IP = "10.1.0.5"
ENDPOINT_ID = "vpce-0123456789abcdef0"
ENDPOINT_IF = "gwe0"
AZ = "us-east-1a"


def appliance_ip(index: int) -> str:
    return f"10.1.0.{9 + index}"  # appl-1 is 10.1.0.10


class Topology:
    """Namespaces and processes inside the sandbox (call only from inside it)."""

    def __init__(self, workdir: str | os.PathLike) -> None:
        self.workdir = Path(workdir)
        self.procs: dict[str, subprocess.Popen] = {}
        self.appliances = 0

    # --- commands ---------------------------------------------------------------

    def sh(self, ns: str | None, command: str, timeout: float = 30, check: bool = False) -> dict:
        argv = ["sh", "-c", command]
        if ns:
            argv = ["ip", "netns", "exec", ns, *argv]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            out = {"rc": result.returncode, "out": result.stdout, "err": result.stderr}
        except subprocess.TimeoutExpired as error:
            out = {"rc": -1, "out": _text(error.stdout), "err": _text(error.stderr) + "\n(timed out)"}
        if check and out["rc"] != 0:
            raise RuntimeError(f"[{ns}] {command}: rc={out['rc']}\n{out['out']}\n{out['err']}")
        return out

    def run(self, *commands: str, ns: str | None = None) -> None:
        for command in commands:
            self.sh(ns, command, check=True)

    def spawn(self, name: str, ns: str, argv: list[str], env: dict | None = None,
              pass_fds: tuple[int, ...] = ()) -> int:
        if name in self.procs and self.procs[name].poll() is None:
            raise RuntimeError(f"{name} is already running")
        log = open(self.workdir / f"{name}.log", "ab")
        environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=environment, cwd=str(self.workdir),
                                pass_fds=pass_fds)
        log.close()
        self.procs[name] = proc
        return proc.pid

    def kill(self, name: str, sig: int = signal.SIGTERM, timeout: float = 5) -> int | None:
        proc = self.procs.get(name)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=timeout)

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].send_signal(sig)

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def log(self, name: str) -> str:
        try:
            return (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGKILL, timeout=2)

    # --- the topology -------------------------------------------------------------

    def build(self, appliances: int = 1, peer_tx_offload: bool = False) -> dict:
        """Create the namespaces and links; `peer_tx_offload` leaves tx offload on at the
        router side of the endpoint veth (partial checksums reach the node)."""
        self.appliances = appliances
        self.run("mount -t tmpfs tmpfs /run", "mkdir -p /run/netns")  # ip netns, rootless
        names = ["client", "server", "router", "gwlb"] + [f"appl-{i}" for i in range(1, appliances + 1)]
        if appliances > 1:
            names.append("prov")
        for ns in names:
            self.run(f"ip netns add {ns}")
            self.run("ip link set lo up",
                     "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
                     "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
                     "sysctl -qw net.ipv4.ip_forward=0", ns=ns)
        self._veth("client", "eth0", "router", "r-cli", 9001)
        self._veth("server", "eth0", "router", "r-srv", 9001)
        self._veth("router", "r-vpce", "gwlb", ENDPOINT_IF, 8500)
        self.run("ip addr add 10.0.1.10/24 dev eth0", "ip route add default via 10.0.1.1", ns="client")
        self.run("ip addr add 10.0.2.10/24 dev eth0", "ip route add default via 10.0.2.1", ns="server")
        self.run("ip addr add 10.0.1.1/24 dev r-cli", "ip addr add 10.0.2.1/24 dev r-srv",
                 "ip addr add 169.254.0.1/30 dev r-vpce",
                 "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0",
                 "ip route add 10.0.2.0/24 via 169.254.0.2 dev r-vpce table 100",
                 "ip route add 10.0.1.0/24 via 169.254.0.2 dev r-vpce table 101", ns="router")
        if not peer_tx_offload:
            self.run("ethtool -K r-vpce tx off >/dev/null", ns="router")  # the fabric's duty
        self.inspect()
        self.run(f"ip addr add 169.254.0.2/30 dev {ENDPOINT_IF}", ns="gwlb")
        if appliances == 1:
            self._veth("gwlb", "eth0", "appl-1", "eth0", 9001)
        else:
            self.run("ip link add br0 type bridge", "ip link set br0 up", ns="prov")
            self._veth("gwlb", "eth0", "prov", "p-gwlb", 9001)
            self.run("ip link set p-gwlb master br0", ns="prov")
            for i in range(1, appliances + 1):
                self._veth(f"appl-{i}", "eth0", "prov", f"p-appl-{i}", 9001)
                self.run(f"ip link set p-appl-{i} master br0", ns="prov")
        self.run(f"ip addr add {NODE_IP}/24 dev eth0", ns="gwlb")
        for i in range(1, appliances + 1):
            # As the fabric does for every ENI: a capture on it then shows complete checksums.
            self.run(f"ip addr add {appliance_ip(i)}/24 dev eth0", "ethtool -K eth0 tx off >/dev/null",
                     ns=f"appl-{i}")
        return {"namespaces": names, "node_ip": NODE_IP,
                "appliances": [appliance_ip(i) for i in range(1, appliances + 1)]}

    def _veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str, mtu: int) -> None:
        self.run(f"ip link add {if_a} netns {ns_a} mtu {mtu} type veth peer name {if_b} netns {ns_b} mtu {mtu}")
        self.run(f"ip link set {if_a} up", ns=ns_a)
        self.run(f"ip link set {if_b} up", ns=ns_b)

    def inspect(self) -> None:
        """Route both directions of client↔server traffic through the endpoint."""
        self.bypass()
        self.run("ip rule add iif r-cli lookup 100 pref 100", "ip rule add iif r-srv lookup 101 pref 101",
                 ns="router")

    def bypass(self) -> None:
        for pref in (100, 101):
            self.sh("router", f"ip rule del pref {pref}")

    # --- the engines ---------------------------------------------------------------

    def node_config(self, **overrides: Any) -> dict:
        config = {
            "availability_zone": AZ,
            "attributes": {},
            "node_ip": NODE_IP,
            "endpoints": [{"id": ENDPOINT_ID, "ifname": ENDPOINT_IF}],
            "targets": [{"id": f"i-appl{i}", "ip": appliance_ip(i), "az": AZ, "healthy": True}
                        for i in range(1, self.appliances + 1)],
            "control_socket": str(self.workdir / "node.sock"),
        }
        config.update(overrides)
        return config

    def start_node(self, **overrides: Any) -> int:
        """`fast_path` (the dict of a loaded instance's fds, open in this process) is
        passed on to the node with its fds."""
        path = self.workdir / "node.json"
        config = self.node_config(**overrides)
        path.write_text(json.dumps(config))
        fds = tuple(config["fast_path"].values()) if config.get("fast_path") else ()
        pid = self.spawn("node", "gwlb", [sys.executable, "-m", "vpclab.engines.gwlb.node", str(path)],
                         pass_fds=fds)
        _wait_for(lambda: _connectable(self.workdir / "node.sock") or not self.alive("node"), 60)  # generous: a loaded machine
        if not self.alive("node"):
            raise RuntimeError(f"gwlb node died:\n{self.log('node')}")
        return pid

    def start_appliance(self, index: int = 1, rules: dict | None = None, extra: list[str] = ()) -> int:
        name = f"appl-{index}"
        stats = self.workdir / f"{name}.stats.json"
        stats.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "vpclab.engines.appliance.process", "--stats", str(stats), *extra]
        if rules is not None:
            rules_path = self.workdir / f"{name}.rules.json"
            rules_path.write_text(json.dumps(rules))
            argv += ["--rules", str(rules_path)]
        pid = self.spawn(name, name, argv)
        _wait_for(lambda: stats.exists() or not self.alive(name), 60)
        if not self.alive(name):
            raise RuntimeError(f"appliance {name} died:\n{self.log(name)}")
        return pid

    def appliance_stats(self, index: int = 1) -> dict:
        return json.loads((self.workdir / f"appl-{index}.stats.json").read_text())


def control(workdir: str | os.PathLike, request: dict, timeout: float = 5) -> dict:
    """One request to the node's control socket (works from outside the sandbox too)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(Path(workdir) / "node.sock"))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def _connectable(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(str(path))
        return True
    except OSError:
        return False


def _wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


# --- driving it from outside ---------------------------------------------------------

class Sandbox:
    """The pytest side: a `serve` process in its own namespaces, one JSON request per call."""

    def __init__(self, workdir: str | os.PathLike, timeout: float = 60) -> None:
        self.workdir = Path(workdir)
        self.timeout = timeout
        self.proc = subprocess.Popen([*UNSHARE, sys.executable, __file__, "serve", str(self.workdir)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.workdir / "sandbox.log", "ab"),
                                     env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=str(ROOT))

    def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout or self.timeout)
        if not ready:
            raise TimeoutError(f"sandbox: no answer to {op}")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"sandbox died:\n{(self.workdir / 'sandbox.log').read_text(errors='replace')}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"sandbox {op}: {reply['error']}")
        return reply["result"]

    def sh(self, ns: str | None, command: str, timeout: float = 30) -> dict:
        return self.call("sh", timeout=timeout + 10, ns=ns, command=command, timeout_=timeout)

    def control(self, request: dict) -> dict:
        return control(self.workdir, request)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(workdir: str) -> None:
    """Inside the sandbox: answer JSON-line requests on stdin until it closes."""
    topology = Topology(workdir)
    ops = {
        "build": lambda a: topology.build(**a),
        "sh": lambda a: topology.sh(a.get("ns"), a["command"], timeout=a.get("timeout_", 30)),
        "spawn": lambda a: topology.spawn(a["name"], a["ns"], a["argv"]),
        "kill": lambda a: topology.kill(a["name"], a.get("sig", signal.SIGTERM)),
        "signal": lambda a: topology.signal(a["name"], a["sig"]),
        "alive": lambda a: topology.alive(a["name"]),
        "log": lambda a: topology.log(a["name"]),
        "start_node": lambda a: topology.start_node(**a),
        "start_appliance": lambda a: topology.start_appliance(**a),
        "appliance_stats": lambda a: topology.appliance_stats(**a),
        "bypass": lambda a: topology.bypass(),
        "inspect": lambda a: topology.inspect(),
    }
    try:
        for line in sys.stdin:
            request = json.loads(line)
            op = request.pop("op")
            try:
                reply = {"result": ops[op](request)}
            except Exception as error:  # reported to the test, which fails with it
                reply = {"error": f"{type(error).__name__}: {error}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        topology.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        print("usage: gwlb_harness.py serve WORKDIR", file=sys.stderr)
        sys.exit(2)
