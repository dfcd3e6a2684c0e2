"""Application Load Balancer nodes in the daemon: one HAProxy (master-worker) per node, in the
node's namespace, supervised like every engine of AWS's side.

The plan gives each node's configuration (`alb_node_config`); engines.alb.config turns it
into haproxy.cfg. After that nothing reloads HAProxy but a change of listeners, rules or
attributes: health verdicts, registrations and deregistrations go through the runtime API
(engines.alb.runtime) into the backend's server slots, and so do slow start's weights, stepped
once a second while a target ramps (engines.alb.slow_start: AWS's rules, not HAProxy's
`slowstart`). A reload is HAProxy's seamless one (SIGUSR2 to the master: the new worker takes
the listening sockets over the runtime socket, `expose-fd listeners`, and the old one finishes
its connections), with the slots (and their weights) written into the new file as they are,
so no open connection drops, no target changes state and no ramp starts over.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vpclab.engines.alb import access_log, errors, headers, metrics
from vpclab.engines.alb import config as alb_config
from vpclab.engines.alb import runtime as alb_runtime
from vpclab.engines.alb import slow_start
from vpclab.engines.alb.runtime import Runtime, RuntimeApiError, Slots
from vpclab.engines.health.state import Reason

log = logging.getLogger("vpclab.alb")

POLL_SECONDS = 1.0  # draining's end and slow start's steps


@dataclass
class AlbNode:
    load_balancer: str
    az: str
    ns: str
    directory: Path
    config: dict
    slots: dict[str, Slots] = field(default_factory=dict)
    applied: dict[tuple[str, int], tuple] = field(default_factory=dict)  # (group, slot) -> (ip, port, state, weight) sent

    @property
    def name(self) -> str:
        return f"{self.load_balancer}-{self.az}"

    @property
    def cfg(self) -> Path:
        return self.directory / f"{self.name}.cfg"

    @property
    def socket(self) -> Path:
        return self.directory / f"{self.name}.sock"

    @property
    def log_socket(self) -> Path:
        return self.directory / f"{self.name}-log.sock"

    @property
    def pid_file(self) -> Path:
        return self.directory / f"{self.name}.pid"

    def runtime(self) -> Runtime:
        return Runtime(str(self.socket))

    def groups(self) -> set[str]:
        return set(self.config["target_groups"])


def haproxy_binary() -> str:
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


@dataclass
class AlbNodes:
    """`node_config(lab, lb, az)`: the plan's alb_node_config. `health(group)`: target id ->
    AWS state now (the shared checker's). `certificate(listener config)`: the PEM path of
        """

    statedir: Path | None = None  # these three set by `start`
    health: Callable[[str], dict[str, dict]] | None = None
    node_config: Callable[[object, str, str], dict] | None = None
    nodes: list[AlbNode] = field(default_factory=list)
    ramps: slow_start.Ramps = field(default_factory=slow_start.Ramps)  # per group, shared by its nodes
    _receiving: dict = field(default_factory=dict)  # node namespace -> the Event ending its access-log receiver

    # --- bring-up ----------------------------------------------------------------

    def prepare(self, lab, services) -> list[AlbNode]:
        directory = self.statedir / "alb"
        directory.mkdir(exist_ok=True, mode=0o700)
        for svc in services:
            lb, az = svc.param("load_balancer"), svc.param("availability_zone")
            config = self.node_config(lab, lb, az)
            node = AlbNode(lb, az, svc.ns, directory, config,
                           {g: Slots.for_targets(g, tg["targets"]) for g, tg in config["target_groups"].items()})
            self.write(node)
            self.nodes.append(node)
        return self.nodes

    async def start(self, statedir: Path, node_config, health, lab, services, supervisor, start_process) -> None:
        """Start and supervise every node's HAProxy; return once each answers."""
        self.statedir, self.node_config, self.health = statedir, node_config, health
        for node in self.prepare(lab, services):
            self._receive_access_log(node)
            supervisor.add(node.ns, "alb_node", node.ns,
                           functools.partial(self._spawn, node, supervisor, start_process))
        await self.wait_ready()

    def access_log_path(self, load_balancer: str) -> Path:
        """Where an ALB's access log lands (the lab has no S3)."""
        return self.statedir / "alb" / "access-logs" / f"{load_balancer}.log"

    def _receive_access_log(self, node: AlbNode) -> None:
        """With access_logs.s3.enabled, a thread turns the node's log datagrams into ALB entries."""
        if not _access_logs_on(node.config) or node.ns in self._receiving:
            return
        config = node.config
        context = {"elb": config["arn"].split(":loadbalancer/", 1)[-1],
                   "target_group_arns": {f"tg_{g}": tg["arn"] for g, tg in config["target_groups"].items()},
                   "certificate_arns": {f"fe_{li['name']}": li["certificate"]["arn"]
                                        for li in config["listeners"] if li.get("certificate")}}
        receiver = access_log.Receiver(node.log_socket, self.access_log_path(node.load_balancer), context)
        stop = self._receiving[node.ns] = threading.Event()
        threading.Thread(target=_serve_until_stopped, args=(receiver, stop), daemon=True,
                         name=f"access-log {node.ns}").start()

    def _stop_access_log(self, node: AlbNode) -> None:
        stop = self._receiving.pop(node.ns, None)
        if stop is not None:
            stop.set()
            # gone now, not when the thread next wakes: a receiver started again binds it anew
            node.log_socket.unlink(missing_ok=True)

    def _spawn(self, node: AlbNode, supervisor, start_process) -> int:
        engine = supervisor.engines.get(node.ns)
        if engine is not None and engine.restarts:  # a restart: from a file written as the node is now
            self.write(node)
        return start_process(node.ns, self.argv(node), f"{node.ns}.log")

    def listener_pem(self, certificate: dict) -> str:
        """An HTTPS listener's certificate and key: the lab's CA issues DomainName and SANs,
        or the lab file names the files."""
        from vpclab.engines.alb import certs  # cryptography: ~0.08 s, paid only by labs with HTTPS
        return str(certs.listener_pem(self.statedir, certificate))

    def argv(self, node: AlbNode) -> list[str]:
        """The master in the foreground (the supervisor's child); relative paths under its directory."""
        return [haproxy_binary(), "-W", "-C", str(node.directory), "-f", node.cfg.name, "-p", node.pid_file.name]

    def write(self, node: AlbNode) -> None:
        """haproxy.cfg as the node should be now: its slots, in the states health gives them."""
        slots = {g: self._rendered(node, g) for g in node.slots}
        certificates = {}
        for listener in node.config["listeners"]:
            if listener["protocol"] == "HTTPS":
                certificates[listener["name"]] = self.listener_pem(listener["certificate"])
        error_dir = node.directory / "errors"
        logging_lines = access_log.log_lines(node.log_socket.name)
        if not _access_logs_on(node.config):
            logging_lines = logging_lines[-2:]  # no log, but requests counted as ALB counts them
        text = alb_config.render(node.config, runtime_socket=f"unix@{node.socket.name}", slots=slots,
                                 certificates=certificates, request_lines=headers.frontend_request_lines,
                                 refusal_lines=headers.refusal_lines(),
                                 defaults_lines=errors.errorfile_lines(error_dir), frontend_lines=logging_lines,
                                 backend_lines=errors.backend_lines(error_dir),
                                 threads=alb_config.node_threads(os.cpu_count()))
        tmp = node.cfg.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(node.cfg)
        node.applied = {(g, i): (s["ip"], s["port"], s["state"], s.get("weight")) if s else None
                        for g, slot_list in slots.items() for i, s in enumerate(slot_list, start=1)}

    async def wait_ready(self, timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for node in self.nodes:
            while True:
                try:
                    node.runtime().command("show info")
                    break
                except OSError:
                    if loop.time() > deadline:
                        raise RuntimeError(f"ALB node {node.ns}: HAProxy did not answer on its runtime socket "
                                           f"(see logs/{node.ns}.log)") from None
                    await asyncio.sleep(0.05)

    # --- health and registrations ---------------------------------------------------

    def groups(self) -> set[str]:
        return {g for n in self.nodes for g in n.groups()}

    def probe_namespaces(self) -> dict[str, str]:
        """Target group -> the namespace its health checks leave from (its first node's)."""
        out: dict[str, str] = {}
        for node in self.nodes:
            for group in node.groups():
                out.setdefault(group, node.ns)
        return out

    def _rendered(self, node: AlbNode, group: str) -> list[dict | None]:
        """The group's slots as they should be now, from one look at its health: each slot's
        state and, with slow start, its weight."""
        health = {t: h.get("State") for t, h in self.health(group).items()}
        tg = node.config["target_groups"][group]
        registered = {t["id"] for t in tg["targets"]}
        # before the first verdict, a registered target is `initial` (fail open: all serve)
        views = {t: health.get(t, "initial") for t in registered}
        views.update({t: s for t, s in health.items() if t not in registered})
        weights = self.ramps.weights(group, slow_start.duration_of(tg), health, time.monotonic())
        return node.slots[group].render(alb_runtime.slot_states(views), weights)

    def health_changed(self, group: str, target_id: str, health: dict) -> None:
        if group not in self.groups():
            return
        if health.get("State") == "unused" and health.get("Reason") == "Target.NotRegistered":
            self.target_gone(group, target_id)
        else:
            self.on_health(group)

    def on_health(self, group: str) -> None:
        """A target's health changed: set the node's slots of `group` to match."""
        for node in self.nodes:
            if group in node.slots:
                self.sync(node, group)

    def sync(self, node: AlbNode, group: str) -> None:
        slots = self._rendered(node, group)
        commands = []
        for i, slot in enumerate(slots, start=1):
            want = (slot["ip"], slot["port"], slot["state"], slot.get("weight")) if slot else None
            have = node.applied.get((group, i))
            if want == have:
                continue
            if want is None:
                commands += alb_runtime.empty_commands(group, i)
            else:
                if have is None or have[:2] != want[:2]:
                    commands += alb_runtime.fill_commands(group, i, want[0], want[1])
                if want[3] is not None and (have is None or have[3] != want[3]):  # before `ready`: no burst
                    commands.append(alb_runtime.weight_command(group, i, want[3]))
                if have is None or have[:3] != want[:3]:
                    commands.append(alb_runtime.state_command(group, i, want[2]))
            node.applied[(group, i)] = want
        if commands:
            self._run(node, commands)

    def _run(self, node: AlbNode, commands: list[str]) -> None:
        try:
            node.runtime().run(commands)
            log.info("ALB node %s: %s", node.ns, "; ".join(commands))
        except (OSError, RuntimeApiError) as exc:  # the next sync or restart puts it right
            node.applied.clear()
            log.warning("ALB node %s: runtime API: %s", node.ns, exc)

    def target_gone(self, group: str, target_id: str) -> None:
        """Deregistration ended (delay over, or nothing in flight): empty its slot."""
        for node in self.nodes:
            if group in node.slots and node.slots[group].free(target_id) is not None:
                self.sync(node, group)

    async def watch(self, checker) -> None:
        """Once a second: end a deregistration once the target has nothing in flight (as AWS
        does, §4.4), and step the weights of the groups whose targets ramp (slow start)."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            for group, target_id in checker.draining():
                if group in self.groups() and self.idle(group, target_id):
                    checker.end_draining(group, target_id)
            for group in self.ramps.ramping():
                self.on_health(group)

    def idle(self, group: str, target_id: str) -> bool:
        for node in self.nodes:
            slot = node.slots[group].slot_of(target_id) if group in node.slots else None
            if slot is None:
                continue
            try:
                if alb_runtime.in_flight(node.runtime().command("show stat"), group).get(slot, 0):
                    return False
            except (OSError, RuntimeApiError):
                return False
        return True

    # --- what status shows ---------------------------------------------------------

    def add_to_status(self, status: dict, counters: bool = True) -> dict:
        """What `vpclab status` shows of each ALB beyond the model: the lab CA that signs its
        HTTPS listeners (for `curl --cacert`), its access-log file, each node's metrics."""
        measured = node_counters(self.nodes) if counters else {}
        for lb in status["load_balancers"]:
            nodes = [n for n in self.nodes if n.load_balancer == lb["name"]]
            if not nodes:
                continue
            if any(li["protocol"] == "HTTPS" for li in nodes[0].config["listeners"]):
                from vpclab.engines.alb import certs  # (listener_pem imported it already)
                lb["ca_certificate"] = str(certs.lab_ca(self.statedir))
            if _access_logs_on(nodes[0].config):
                lb["access_log"] = str(self.access_log_path(lb["name"]))
            for entry in lb["nodes"]:
                node = next((n for n in nodes if n.az == entry["az"]), None)
                if node is not None and node.ns in measured:
                    entry["counters"] = measured[node.ns]
            if measured:
                lb["metrics"] = metrics.merge([measured[n.ns] for n in nodes if "error" not in measured[n.ns]])
                # host counts as AWS states them (the checker's), not HAProxy's: failing open
                # sends requests to unhealthy targets, which stay unhealthy
                lb["metrics"]["TargetGroups"] = {g: _host_counts(self.health(g)) for g in nodes[0].groups()}
        return status

    # --- live changes ---------------------------------------------------------------

    def apply(self, lab, checker=None, connector=None) -> None:
        """The lab after a live change: new targets take slots, removed ones stay in theirs
        (draining) until `target_gone`; anything else (rules, listeners, attributes, more
        targets than slots) is a seamless reload. A group a changed rule now forwards to gets
        its health checks (`checker`, probing through `connector(namespace)`), from `initial`;
        one nothing forwards to any more has its targets `unused` (Target.NotInUse), unchecked."""
        in_use = self.groups()
        for node in self.nodes:
            config = self.node_config(lab, node.load_balancer, node.az)
            for group in config["target_groups"].keys() - node.groups():
                if checker is None or group in in_use:
                    continue
                tg = lab.target_groups[group]
                if not checker.has_target_group(group):
                    checker.add_target_group(group, tg.health_check_config(), connect=connector(node.ns))
                for t in tg.targets:  # new, or back in use: from `initial`, as AWS starts them
                    checker.register(group, t.id, str(t.ip), t.port)
            reload = _structure(config) != _structure(node.config)
            node.config = config
            for group in node.slots.keys() - config["target_groups"].keys():  # no rule forwards to it now
                del node.slots[group]
                node.applied = {k: v for k, v in node.applied.items() if k[0] != group}
            for group, tg in config["target_groups"].items():
                slots = node.slots.setdefault(group, Slots.for_targets(group, []))
                for t in tg["targets"]:
                    if slots.place(t["id"], t["ip"], int(t["port"])) is None:
                        node.slots[group] = slots = _grown(slots, tg["targets"])
                        reload = True
            if reload:
                self._receive_access_log(node)  # access_logs.s3.enabled may have just turned on
                self.reload(node)
                if not _access_logs_on(config):  # or off: the new worker no longer logs
                    self._stop_access_log(node)
            else:
                for group in node.slots:
                    self.sync(node, group)
        for group in self.ramps.groups.keys() - self.groups():
            del self.ramps.groups[group]
        if checker is not None:
            for group in in_use - self.groups():  # no rule forwards to it now: AWS stops checking it
                for t in lab.target_groups[group].targets:
                    checker.mark_unused(group, t.id, Reason.NOT_IN_USE)

    def reload(self, node: AlbNode) -> None:
        """HAProxy's seamless reload, once the new file passes `haproxy -c` (a refused file
        would leave the old worker serving and the change unseen: say so in the log)."""
        self.write(node)
        check = subprocess.run([haproxy_binary(), "-c", "-q", "-C", str(node.directory), "-f", node.cfg.name],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            log.error("ALB node %s: new configuration refused, still serving the previous one: %s",
                      node.ns, (check.stdout + check.stderr).strip()[-2000:])
            return
        try:
            pid = int(node.pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGUSR2)
            log.info("ALB node %s: reloaded (master %d)", node.ns, pid)
        except (OSError, ValueError, IndexError) as exc:
            log.warning("ALB node %s: reload failed: %s", node.ns, exc)


def node_counters(nodes: list[AlbNode]) -> dict[str, dict]:
    """Each node's CloudWatch metrics (engines.alb.metrics, from `show stat` and `show info`)."""
    out = {}
    for node in nodes:
        try:
            runtime = node.runtime()
            out[node.ns] = metrics.cloudwatch_metrics(runtime.command("show stat"), runtime.command("show info"))
        except (OSError, RuntimeApiError) as exc:
            out[node.ns] = {"error": str(exc)}
    return out


def _access_logs_on(config: dict) -> bool:
    return config["attributes"].get("access_logs.s3.enabled", "false") == "true"


def _serve_until_stopped(receiver: access_log.Receiver, stop: threading.Event) -> None:
    try:
        receiver.serve(stop)
    finally:
        receiver.close()


def _host_counts(health: dict[str, dict]) -> dict[str, int]:
    states = [h.get("State") for h in health.values()]
    return {"HealthyHostCount": states.count("healthy"), "UnHealthyHostCount": states.count("unhealthy")}


def _structure(config: dict) -> dict:
    """A node config without its targets: what only a reload can change."""
    groups = {g: {k: v for k, v in tg.items() if k != "targets"} for g, tg in config["target_groups"].items()}
    return {**config, "target_groups": groups}


def _grown(slots: Slots, targets: list[dict]) -> Slots:
    bigger = Slots(slots.group, max(slots.size, alb_config.slot_count(len(targets))), dict(slots.held))
    for t in targets:
        if bigger.place(t["id"], t["ip"], int(t["port"])) is None:
            bigger.size += 1
            bigger.place(t["id"], t["ip"], int(t["port"]))
    return bigger
