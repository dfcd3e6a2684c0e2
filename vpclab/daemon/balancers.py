"""The load balancers' runtime in the daemon: their node processes, the shared
health checker, and live target and attribute changes.

Health checks run from inside a node's namespace (AWS probes from the load
balancer's nodes) and feed every node of the load balancer.
"""
from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vpclab import unixpath
from vpclab.engines.health import HealthChecker
from vpclab.model.health_check import HealthCheckConfig
from vpclab.model.resources import Lab
from vpclab.plan.compile import gwlb_node_attributes
from vpclab.plan.wiring import Service

log = logging.getLogger("vpclab.balancers")


@dataclass
class Node:
    load_balancer: str
    az: str
    ns: str
    control: Path


@dataclass
class Balancers:
    statedir: Path
    enter: Callable[[str], object]  # a context manager that enters a namespace by name
    nodes: list[Node] = field(default_factory=list)
    checker: HealthChecker | None = None
    group_of_lb: dict[str, str] = field(default_factory=dict)

    def node_configs(self, services: list[Service]) -> list[Node]:
        """The node processes to start, with their config files written."""
        out = []
        directory = self.statedir / "gwlb"
        directory.mkdir(exist_ok=True)
        for svc in services:
            lb, az = svc.param("load_balancer"), svc.param("config")["availability_zone"]
            node = Node(lb, az, svc.ns, directory / f"{lb}-{az}.sock")
            config = dict(svc.param("config"), control_socket=str(node.control))
            (directory / f"{lb}-{az}.json").write_text(json.dumps(config, indent=1))
            self.nodes.append(node)
            self.group_of_lb[lb] = svc.param("target_group")
            out.append(node)
        return out

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Every node answers on its control socket (a Python start takes a while)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for node in self.nodes:
            while True:
                try:
                    await self.request(node, {"op": "snapshot"})
                    break
                except OSError:
                    if loop.time() > deadline:  # rollback removes the log: say what it said
                        tail = _tail(self.statedir / "logs" / f"{node.ns}.log")
                        raise RuntimeError(f"GWLB node {node.ns} did not start: {tail}") from None
                    await asyncio.sleep(0.05)

    # --- health checks -----------------------------------------------------------

    def start_health_checks(self, lab: Lab) -> asyncio.Future:
        self.checker = HealthChecker(on_change=self._on_health_change)
        for lb_name, group_name in self.group_of_lb.items():
            group = lab.target_groups[group_name]
            lb = lab.load_balancers[lb_name]
            config = HealthCheckConfig.for_target_group(lb.type, group.protocol, **dict(group.health_check))
            probe_from = next(n for n in self.nodes if n.load_balancer == lb_name)
            self.checker.add_target_group(group_name, config, connect=self._connector(probe_from.ns))
            for target in group.targets:
                self.checker.register(group_name, target.id, str(target.ip), target.port)
        return asyncio.ensure_future(self.checker.run())

    def _connector(self, ns: str):
        async def connect(host: str, port: int):
            with self.enter(ns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
            except BaseException:
                sock.close()
                raise
            return await asyncio.open_connection(sock=sock)
        return connect

    def _on_health_change(self, group: str, target_id: str, health: dict) -> None:
        state = health.get("State")
        log.info("target %s in %s: %s %s", target_id, group, state, health.get("Reason", ""))
        if state in ("healthy", "unhealthy"):
            self._to_nodes_of(group, {"op": "set_target_health", "target": target_id,
                                      "healthy": state == "healthy"})

    def _to_nodes_of(self, group: str, message: dict) -> None:
        for node in self.nodes:
            if self.group_of_lb.get(node.load_balancer) == group:
                asyncio.ensure_future(self._tell(node, message))

    async def _tell(self, node: Node, message: dict) -> None:
        try:
            reply = await self.request(node, message)
            if not reply.get("ok"):
                log.warning("node %s refused %s: %s", node.ns, message, reply.get("error"))
        except OSError as exc:
            log.warning("node %s unreachable for %s: %s", node.ns, message, exc)

    @staticmethod
    async def request(node: Node, message: dict) -> dict:
        with unixpath.usable(node.control) as path:
            reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write((json.dumps(message) + "\n").encode())
            await writer.drain()
            return json.loads(await asyncio.wait_for(reader.readline(), 5))
        finally:
            writer.close()

    # --- live changes -------------------------------------------------------------

    def apply(self, old: Lab, new: Lab) -> None:
        """Tell the checker and the nodes what a live change did to targets and attributes."""
        for group_name in set(self.group_of_lb.values()):
            before, after = old.target_groups[group_name], new.target_groups[group_name]
            was = {t.id: t for t in before.targets}
            now = {t.id: t for t in after.targets}
            delay = float(after.attributes.get("deregistration_delay.timeout_seconds", 300))
            for target_id in was.keys() - now.keys():
                self.checker.deregister(group_name, target_id, delay)
                self._to_nodes_of(group_name, {"op": "deregister", "target": target_id})
            for target_id in now.keys() - was.keys():
                t = now[target_id]
                self.checker.register(group_name, t.id, str(t.ip), t.port)
                self._to_nodes_of(group_name, {"op": "register", "target": t.id, "ip": str(t.ip), "az": t.az})
        for node in self.nodes:
            attributes = gwlb_node_attributes(new, node.load_balancer)
            if attributes != gwlb_node_attributes(old, node.load_balancer):
                asyncio.ensure_future(self._tell(node, {"op": "modify", "attributes": attributes}))

    # --- what status shows ------------------------------------------------------------

    def target_health(self, group: str) -> dict[str, dict]:
        if self.checker is None or group not in self.group_of_lb.values():
            return {}
        return {d["Target"]["Id"]: d["TargetHealth"] for d in self.checker.describe_target_health(group)}

    async def snapshots(self) -> dict[str, dict]:
        out = {}
        for node in self.nodes:
            try:
                reply = await self.request(node, {"op": "snapshot"})
                out[node.ns] = reply.get("snapshot", {})
            except (OSError, asyncio.TimeoutError) as exc:
                out[node.ns] = {"error": str(exc)}
        return out


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text().strip().splitlines()[-lines:]) or "(no output)"
    except OSError:
        return "(no log)"
