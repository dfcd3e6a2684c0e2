"""The lab daemon: PID 1 of one lab's sandbox (user, mount, net, PID, UTS and IPC namespaces).

It builds the lab, runs its engines in one asyncio loop, serves the change API
on a Unix socket in the lab's state directory, and keeps every live change in
the state store. When it exits, or is killed, the kernel ends every process of
the lab and every namespace goes with them.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

from vpclab import unixpath
from vpclab.wording import counted
from vpclab.daemon import sandbox
from vpclab.daemon.balancers import Balancers, ask_engine, readdress_alb_targets
from vpclab.daemon.changes import Draining, apply_change, replay
from vpclab.daemon.early_nodes import EarlyNodes, node_argv
from vpclab.daemon.ipsync import Functions
from vpclab.daemon.paths import API_SOCKET, NAMESPACES_FILE
from vpclab.daemon.status import lab_status
from vpclab.daemon.store import Store
from vpclab.daemon.supervisor import Supervisor
from vpclab.engines.dns import resolver as dns_engine
from vpclab.engines import services as services_engine
from vpclab.engines.gwlb.fastpath import FastPathFds
from vpclab.fabric.apply import Fabric
from vpclab.model import load_lab_text
from vpclab.model.resources import Lab
from vpclab.plan.compile import compile_lab
from vpclab.plan.wiring import Service, Wiring

log = logging.getLogger("vpclab.daemon")



class Progress:
    """Progress events for the `vpclab up` that started us, as JSON lines on an inherited pipe."""

    def __init__(self, fd: int | None) -> None:
        if fd is not None:
            os.set_inheritable(fd, False)  # commands the lab runs must not keep it open
        self.pipe = os.fdopen(fd, "w", buffering=1) if fd is not None else None

    def send(self, event: str, **fields) -> None:
        log.info("%s %s", event, fields.get("message", ""))
        if self.pipe is not None:
            try:
                self.pipe.write(json.dumps({"event": event, **fields}) + "\n")
            except OSError:  # the CLI went away; the lab goes on
                self.pipe = None

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None


class Daemon:
    def __init__(self, statedir: Path, progress: Progress, fast_paths: Sequence[FastPathFds] = ()) -> None:
        self.statedir = statedir
        self.fast_paths = list(fast_paths)  # not yet given to a node
        self.progress = progress
        self.store = Store(statedir / "state.sqlite")
        self.fabric = Fabric(statedir)
        self.lab: Lab | None = None
        self.wiring: Wiring | None = None
        self.resolvers: dict[str, dns_engine.Resolver] = {}
        self.commands: dict[int, tuple[str, str]] = {}  # pid -> (namespace, command)
        self.processes: dict[int, subprocess.Popen] = {}
        self.balancers = Balancers(statedir, self.fabric.inside, self.fabric.run_in, on_routing_change=self.refresh_dns)
        self.relays: dict[Service, str] = {}  # Proxy Protocol v2 relays -> their engine's name
        self.supervisor = Supervisor()  # every engine on AWS's side, restarted when it dies
        self.tasks: list[asyncio.Task] = []
        self.stopping: asyncio.Event | None = None
        self.bring_up_seconds = 0.0
        self.services_seconds = 0.0  # engines started and answering (GWLB nodes, ALB nodes...)
        self.draining: list[Draining] = []  # restored: targets still draining at the crash
        self.early_nodes = EarlyNodes()  # GWLB nodes started during the fabric, held until it is done
        self.gwlb_nodes: list | None = None  # balancers.Node of each gwlb_node service, once configured

    # --- bring-up -----------------------------------------------------------

    def load(self) -> Lab:
        name, source, text = self.store.lab()
        changes = self.store.changes()
        lab, self.draining = replay(load_lab_text(text, source, name), changes)
        if changes:
            self.progress.send("progress", message=f"replayed {len(changes)} live change(s) from the state store")
        return lab

    def bring_up(self) -> None:
        started = time.monotonic()
        self.lab = self.load()
        self.wiring = compile_lab(self.lab)
        self.fabric.up(self.wiring, lambda m: self.progress.send("progress", message=m), self._namespaces_made)
        self.bring_up_seconds = time.monotonic() - started
        (self.statedir / NAMESPACES_FILE).write_text(json.dumps({
            ns.name: {"nsenter": self.fabric.nsenter_args(ns.name), "kind": ns.kind}
            for ns in self.wiring.namespaces
        }, indent=1))

    def _namespaces_made(self) -> None:
        sandbox.unpin()
        if self.wiring is None or not all(ns.name in self.fabric.files for ns in self.wiring.namespaces):
            return  # the fabric failed: the lab goes
        # The nodes' Python starts and imports overlap the rest of the fabric (early_nodes.py).
        nodes = [svc for svc in self.wiring.services if svc.kind == "gwlb_node"]
        self.gwlb_nodes = self.balancers.node_configs(nodes, self.fast_paths)
        self.early_nodes.start(self.gwlb_nodes, self._start_process)

    async def start_services(self) -> None:
        assert self.wiring is not None
        count = 0
        nodes = [svc for svc in self.wiring.services if svc.kind == "gwlb_node"]
        if self.gwlb_nodes is None:
            self.gwlb_nodes = self.balancers.node_configs(nodes, self.fast_paths)
        for node in self.gwlb_nodes:
            start = self.early_nodes.spawner(node.ns, functools.partial(self._start_gwlb_node, node),
                                             alive=lambda pid: pid in self.processes)  # not reaped yet
            self.supervisor.add(node.ns, "gwlb_node", node.ns, start)
        self.early_nodes.close()
        for svc in self.wiring.services:
            if svc.kind == "command":  # the user's own: EC2's umask, not the daemon's
                self._start_process(svc.ns, ["sh", "-c", svc.param("command")], f"{svc.ns}.log", umask=0o022)
            elif svc.kind == "appliance":
                self._start_appliance(svc)
            elif svc.kind in ("gwlb_node", "nlb_node", "alb_node"):
                pass  # started above and below
            elif svc.kind == "pp2_relay":
                self._start_relay(svc)
            elif svc.kind == "dns":
                self._start_dns(svc)
            else:
                for address in svc.addresses:
                    sock = _listen(self.fabric.inside(svc.ns), address, socket.SOCK_STREAM)
                    if svc.kind == "test_page":
                        identity = dict(svc.param("identity", ()))
                        coro = services_engine.serve_test_page(sock, identity, message=svc.param("message"))
                    else:
                        coro = services_engine.serve_banner(sock)
                    self.tasks.append(asyncio.ensure_future(coro))
            count += 1
        self.functions = Functions(self.wiring.services, self.fabric.inside, lambda: self.lab, self.change, self.store)
        nlb_nodes = [svc for svc in self.wiring.services if svc.kind == "nlb_node"]
        if nlb_nodes:
            self.progress.send("progress", message=f"loading {len(nlb_nodes)} NLB node ruleset(s)")
            self.balancers.start_nlb_nodes(self.lab, nlb_nodes)
        if nodes:
            self.progress.send("progress", message=f"waiting for {len(nodes)} GWLB node(s)")
            await self.balancers.wait_ready()
        alb_nodes = [svc for svc in self.wiring.services if svc.kind == "alb_node"]
        if alb_nodes:
            self.progress.send("progress", message=f"starting {len(alb_nodes)} ALB node(s) (HAProxy)")
            await self._start_alb_nodes(alb_nodes)
        if nodes or nlb_nodes or alb_nodes:
            self.tasks.append(self.balancers.start_health_checks(self.lab))
            self.balancers.resume_draining(self.draining, time.time())
        if alb_nodes:
            self.tasks.append(asyncio.ensure_future(self.balancers.alb.watch(self.balancers.checker)))
        self.progress.send("progress", message=f"started {counted(count, 'service')}")

    async def _start_alb_nodes(self, services: list[Service]) -> None:
        from vpclab.plan import elbv2 as plan_elbv2  # the plan's ALB half (helper M's)
        await self.balancers.alb.start(self.statedir, plan_elbv2.alb_node_config, self.balancers.target_health,
                                       self.lab, services, self.supervisor, self._start_process)

    def _start_gwlb_node(self, node) -> int:
        engine = self.supervisor.engines.get(node.ns)
        if engine is not None and engine.restarts:  # a restart: the lab as it is now
            svc = next(s for s in self.wiring.services if s.kind == "gwlb_node" and s.ns == node.ns)
            self.balancers.write_node_config(node, svc)
            self.tasks.append(asyncio.ensure_future(self.balancers.resync(node)))
        return self._start_process(node.ns, node_argv(node), f"{node.ns}.log",
                                   pass_fds=node.fast_path.all() if node.fast_path else ())

    def _aws_names(self, svc: Service) -> dict[str, list[str]]:
        """NLB and endpoint names; an NLB's AZs where a target group has no healthy target
        in scope leave its answers, unless every AZ is in that state (reference §3.6)."""
        out = {}
        for name, entries in svc.param("aws_names", ()):
            kept = [ip for ip, lb, az in entries if not lb or self.balancers.zone_in_service(lb, az)]
            out[name] = kept or [ip for ip, _lb, _az in entries]
        return out

    def refresh_dns(self) -> None:
        """Health changed: answer NLB names with the AZs now in service."""
        for svc in self.wiring.services:
            if svc.kind == "dns" and svc.ns in self.resolvers and svc.param("aws_names"):
                self.resolvers[svc.ns].replace_zones(dns_zones(svc, self._aws_names(svc)))

    def _start_dns(self, svc: Service) -> None:
        resolver = dns_engine.Resolver(dns_zones(svc, self._aws_names(svc)))
        self.resolvers[svc.ns] = resolver

        def serve():
            udp = [_listen(self.fabric.inside(svc.ns), a, socket.SOCK_DGRAM) for a in svc.addresses]
            tcp = [_listen(self.fabric.inside(svc.ns), a, socket.SOCK_STREAM) for a in svc.addresses]
            return dns_engine.serve_dns(resolver, udp, tcp)
        self.tasks.append(self.supervisor.run_task(f"{svc.ns}/resolver", "dns", svc.ns, serve))

    def _start_process(self, ns_name: str, command: list[str], log_name: str,
                       pass_fds: Sequence[int] = (), umask: int = -1, stdin: int = subprocess.DEVNULL) -> int:
        """Run a command inside a namespace (and its mounts and hostname), logging to logs/."""
        logdir = self.statedir / "logs"
        logdir.mkdir(exist_ok=True)
        argv = ["nsenter", *self.fabric.nsenter_args(ns_name), "--", *command]
        with open(logdir / log_name, "ab") as out:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=out, cwd="/",
                                    pass_fds=pass_fds, umask=umask)
        self.commands[proc.pid] = (ns_name, " ".join(command))
        # Held until reaped: a Popen dropped while running joins subprocess's list of
        # children that any later Popen reaps, and the supervisor would never see the exit.
        self.processes[proc.pid] = proc
        log.info("started in %s (pid %d): %s", ns_name, proc.pid, " ".join(command))
        return proc.pid

    def _start_relay(self, svc: Service) -> None:
        argv = [sys.executable, "-m", "vpclab.engines.nlb.pp2_relay", "--listen", svc.addresses[0],
                "--upstream", svc.param("upstream")]
        if svc.param("vpc_endpoint_id"):
            argv += ["--vpc-endpoint-id", svc.param("vpc_endpoint_id"), "--dst-ip", svc.param("dst_ip")]
        if svc.param("transparent"):
            argv.append("--transparent")
        name = f"{svc.ns}/{svc.addresses[0]}"
        self.supervisor.add(name, "pp2_relay", svc.ns, lambda: self._start_process(svc.ns, argv, f"{svc.ns}.log"))
        self.relays[svc] = name

    def _restart_relays(self, wiring: Wiring) -> None:
        """A live change can switch proxy_protocol_v2 on or off: start and stop relays to match."""
        wanted = {svc for svc in wiring.services if svc.kind == "pp2_relay"}
        for svc in list(self.relays):
            if svc not in wanted:
                pid = self.supervisor.remove(self.relays.pop(svc))
                if pid is not None and pid in self.commands:  # ours and still running
                    os.kill(pid, signal.SIGTERM)
        for svc in wanted - self.relays.keys():
            self._start_relay(svc)

    def _appliance_control(self, name: str) -> Path:
        return self.statedir / "appliances" / f"{name}.sock"

    def _start_appliance(self, svc: Service) -> None:
        directory = self.statedir / "appliances"
        directory.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "vpclab.engines.appliance.process", "--control", str(self._appliance_control(svc.ns)),
                "--health-port", str(svc.param("health_port", 80))]
        if svc.param("config"):
            rules = directory / f"{svc.ns}-rules.json"
            rules.write_text(json.dumps(svc.param("config")))
            argv += ["--rules", str(rules)]
        self._start_process(svc.ns, argv, f"{svc.ns}.log")

    # --- running ------------------------------------------------------------

    def _reap(self) -> None:
        """PID 1 reaps every child, ours and orphans alike."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            started = self.commands.pop(pid, None)
            self.processes.pop(pid, None)
            if self.supervisor.exited(pid, status):
                continue  # logged, and started again, by the supervisor
            if started is not None:
                log.info("command in %s exited with status %d: %s", started[0],
                         os.waitstatus_to_exitcode(status), started[1])

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        self._reap()
        started = time.monotonic()
        await self.start_services()
        self.services_seconds = time.monotonic() - started
        path = self.statedir / API_SOCKET
        path.unlink(missing_ok=True)
        with unixpath.usable(path) as reachable:
            server = await asyncio.start_unix_server(self._client, path=reachable)
        ready = self.balancers.alb.add_to_status(lab_status(self.lab, self.balancers.target_health), counters=False)
        self.progress.send("ready", status=ready)  # health as `targets` says
        self.progress.close()
        await self.stopping.wait()
        self.supervisor.closing = True
        server.close()
        for task in self.tasks:
            task.cancel()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            request = json.loads(line)
            result = await self.handle(request)
            reply = {"ok": True, "result": result}
        except Exception as exc:  # every failure goes back to the CLI, never kills the daemon
            log.warning("request failed: %s", exc)
            reply = {"ok": False, "error": str(exc), "code": getattr(exc, "code", None)}
        try:
            writer.write((json.dumps(reply) + "\n").encode())
            await writer.drain()
            writer.close()
        except ConnectionError:
            pass

    async def handle(self, request: dict):
        op = request.get("op")
        if op == "ping":
            return "pong"
        if op == "status":
            return await self.status()
        if op == "targets":
            group = self.lab.target_groups.get(request["target_group"])
            if group is None:
                raise ValueError(f"TargetGroupNotFound: no target group {request['target_group']!r}")
            return self.balancers.checker.describe_target_health(group.name) if self.balancers.checker else []
        if op == "change":
            return self.change(request["kind"], request.get("params", {}))
        if op == "shutdown":
            asyncio.get_running_loop().call_soon(self.stopping.set)
            return "stopping"
        return await self.functions.handle(request)  # `invoke`, or an unknown request

    async def status(self) -> dict:
        names = [svc.ns for svc in self.wiring.services if svc.kind == "appliance"]
        # Asked now, alongside the GWLB nodes, so both count the same packets.
        answers = await asyncio.gather(self.balancers.snapshots(),
                                       *(_appliance_snapshot(self._appliance_control(n)) for n in names))
        appliances = {n: a for n, a in zip(names, answers[1:]) if a is not None}
        status = lab_status(self.lab, self.balancers.target_health, answers[0], appliances)
        status["dns"] = {ns: r.counters.snapshot() for ns, r in self.resolvers.items()}
        status["daemon"] = {"fabric_seconds": round(self.bring_up_seconds, 4),
                            "services_seconds": round(self.services_seconds, 4)}
        status.update(engines=self.supervisor.snapshot(), lambda_functions=self.functions.status())
        self.balancers.alb.add_to_status(status)
        return status

    def change(self, kind: str, params: dict) -> dict:
        new_lab = apply_change(self.lab, kind, params)  # validates before anything is touched
        if new_lab == self.lab:  # e.g. accepting an available endpoint: AWS succeeds, nothing changes
            log.info("change %s %s: already so, nothing to apply", kind, params)
            return {"seq": None, "reapplied": [], "no_op": True}
        new_wiring = compile_lab(new_lab)
        changed = self.fabric.reconcile(new_wiring)
        seq = self.store.append_change(kind, params)
        self.balancers.apply(self.lab, new_lab)
        readdress_alb_targets(self.balancers.checker, new_lab)
        self._restart_relays(new_wiring)
        self.lab, self.wiring = new_lab, new_wiring
        self.refresh_dns()  # an ALB's nodes may have moved (replace-nodes)
        log.info("change %d %s %s: reapplied %s", seq, kind, params, changed)
        return {"seq": seq, "reapplied": changed}


async def _appliance_snapshot(control: Path) -> dict | None:
    """The appliance's counters now; None while it is not answering (not started, or stopped)."""
    try:
        reply = await ask_engine(control, {"op": "snapshot"})
    except (OSError, ValueError, asyncio.TimeoutError):
        return None
    return reply.get("snapshot")


def _listen(inside, address: str, kind: int) -> socket.socket:
    """A socket bound in a namespace (`inside`: the fabric's context that enters it)."""
    host, port = address.rsplit(":", 1)
    with inside:
        sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    if kind == socket.SOCK_STREAM:
        sock.listen(128)
    sock.setblocking(False)
    return sock


def dns_zones(svc: Service, aws_names: dict[str, list[str]] | None = None):
    """The zones a `dns` service answers; `aws_names` are the NLB and endpoint names it gives now."""
    private = []
    for domain, record_sets in svc.param("private_zones", ()):  # route53._private_zone
        records: dict[str, list] = {}
        for name, rtype, ttl, values, alias_target in record_sets:
            if aws_names and alias_target in aws_names:  # an alias answers as its target does now
                values = aws_names[alias_target]
            records.setdefault(name, []).extend(dns_engine.Record(rtype, v, ttl) for v in values)
        private.append(dns_engine.Zone(domain, records, private=True))
    return dns_engine.build_vpc_zones(
        region=svc.param("region"),
        instances=list(svc.param("instances", ())),
        public_names=dict(svc.param("public_names", ())),
        enable_dns_hostnames=svc.param("enable_dns_hostnames", False),
        private_zones=private,
        aws_names=aws_names,
    )


def run_daemon(statedir: Path, progress_fd: int | None, fast_paths: Sequence[FastPathFds] = ()) -> int:
    """The daemon's life, as PID 1 of its sandbox (see sandbox.launch). `fast_paths`:
    eBPF instances loaded before the sandbox, handed to GWLB nodes one each."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        force=True)
    progress = Progress(progress_fd)
    daemon = Daemon(statedir, progress, fast_paths)
    try:
        daemon.bring_up()
        asyncio.run(daemon.serve())
    except Exception as exc:  # reported to `up`; exiting as PID 1 removes the whole lab
        log.error("%s", traceback.format_exc())
        progress.send("error", message=str(exc))
        return 1
    return 0
