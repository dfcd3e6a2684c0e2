"""The load balancers' runtime in the daemon: GWLB node processes, NLB node
rulesets, the shared health checker, and live target and attribute changes.

Health checks run from inside a node's namespace (AWS probes from the load
balancer's nodes) and feed every node of the load balancer: GWLB nodes over
their control sockets, NLB nodes as a new nftables ruleset (engines.nlb.ruleset) applied
in their namespace. Conntrack keeps every open connection where it is.
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
from vpclab.daemon.alb import AlbNodes
from vpclab.daemon.changes import Draining, deregistration_delay
from vpclab.engines.nlb import ruleset as nlb_engine
from vpclab.engines.gwlb.fastpath import FastPathFds
from vpclab.engines.health.checker import HealthChecker
from vpclab.model.elbv2 import node_addresses  # an alb target is its ALB's nodes
from vpclab.model.resources import Lab
from vpclab.plan.elbv2 import gwlb_node_attributes, nlb_node_config
from vpclab.plan.wiring import Service

log = logging.getLogger("vpclab.balancers")


@dataclass
class Node:
    load_balancer: str
    az: str
    ns: str
    control: Path
    fast_path: FastPathFds | None = None  # passed to the node process, which attaches it


@dataclass
class NlbNode:
    load_balancer: str
    az: str
    ns: str
    config: nlb_engine.NodeConfig
    routable: dict[str, list] = field(default_factory=dict)  # listener -> targets, as last applied


@dataclass
class Balancers:
    statedir: Path
    enter: Callable[[str], object]  # a context manager that enters a namespace by name
    run_in: Callable[..., None]  # runs a tool in a namespace (Fabric.run_in)
    nodes: list[Node] = field(default_factory=list)
    checker: HealthChecker | None = None
    group_of_lb: dict[str, str] = field(default_factory=dict)  # GWLB -> its target group
    on_routing_change: Callable[[], None] = lambda: None  # which NLB AZs are in service may have changed
    nlb_nodes: list[NlbNode] = field(default_factory=list)
    lab: Lab | None = None
    alb: AlbNodes = field(default_factory=AlbNodes)  # HAProxy nodes, fed health through their runtime API
    _address_of: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)  # (group, target id)

    def node_configs(self, services: list[Service], fast_paths: list[FastPathFds]) -> list[Node]:
        """The node processes to start, with their config files written. Each takes one
        of `fast_paths` while any are left (taken from the list)."""
        out = []
        directory = self.statedir / "gwlb"
        directory.mkdir(exist_ok=True)
        for svc in services:
            lb, az = svc.param("load_balancer"), svc.param("config")["availability_zone"]
            node = Node(lb, az, svc.ns, directory / f"{lb}-{az}.sock",
                        fast_paths.pop(0) if fast_paths else None)
            self.write_node_config(node, svc)
            self.nodes.append(node)
            self.group_of_lb[lb] = svc.param("target_group")
            out.append(node)
        return out

    def write_node_config(self, node: Node, svc: Service) -> None:
        """The node's CONFIG.json from its service (the lab as it is now), with each target's
        health as last checked: a restarted node then picks among the same healthy targets
        as before, and so sends each flow where it went. The same fast path, if it had one
        (it empties its maps and attaches again)."""
        config = dict(svc.param("config"), control_socket=str(node.control))
        health = self.target_health(svc.param("target_group"))
        config["targets"] = [dict(t, healthy=_healthy(health.get(t["id"], {}).get("State")))
                             for t in config["targets"]]
        if node.fast_path is not None:
            config["fast_path"] = node.fast_path.to_dict()
        node.control.with_suffix(".json").write_text(json.dumps(config, indent=1))

    async def resync(self, node: Node, timeout: float = 20.0) -> None:
        """Once a restarted node answers, tell it the health verdicts given while it started."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self.request(node, {"op": "snapshot"})
                break
            except (OSError, ValueError, asyncio.TimeoutError):
                if loop.time() > deadline:
                    log.warning("node %s did not answer after its restart", node.ns)
                    return
                await asyncio.sleep(0.05)
        for target_id, health in self.target_health(self.group_of_lb[node.load_balancer]).items():
            healthy = _healthy(health.get("State"))
            if healthy is not None:
                await self._tell(node, {"op": "set_target_health", "target": target_id, "healthy": healthy})

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
        probes = self.alb.probe_namespaces() | {group: next(n.ns for n in self.nodes if n.load_balancer == lb)
                  for lb, group in self.group_of_lb.items()}
        for node in self.nlb_nodes:
            for listener in node.config.listeners:
                probes.setdefault(listener.target_group, node.ns)
        for group_name, probe_ns in probes.items():
            group = lab.target_groups[group_name]
            self.checker.add_target_group(group_name, group.health_check_config(),
                                          connect=self._connector(probe_ns),
                                          proxy_protocol_v2=_proxy_protocol_v2(group))
        # Only once every group exists: each registration reports a change, and the
        # refresh it triggers (NLB rulesets, DNS) reads every group of the load balancer.
        for group_name in probes:
            for target in lab.target_groups[group_name].targets:
                self.checker.register(group_name, target.id, str(target.ip), target.port)
        return asyncio.ensure_future(self.checker.run())

    def resume_draining(self, draining: list[Draining], now: float) -> None:
        """After a restore, the targets that were draining at the crash drain for what was left
        of their delay, instead of vanishing."""
        for d in draining:
            remaining = d.ends_at - now
            if remaining <= 0 or self.checker is None or d.target_group not in self._checked_groups():
                continue
            self._address_of[(d.target_group, d.target_id)] = (d.ip, d.port)
            self.checker.register(d.target_group, d.target_id, d.ip, d.port)
            self.checker.deregister(d.target_group, d.target_id, remaining)
            log.info("target %s in %s: draining again for the %.1fs left", d.target_id, d.target_group, remaining)

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
        self.alb.health_changed(group, target_id, health)
        if group in self._nlb_groups():
            self.refresh_nlb_nodes(groups={group})
            self._terminate_if_due(group, target_id, state, health.get("Reason"))
            self.on_routing_change()

    # --- Network Load Balancer nodes ------------------------------------------------

    def start_nlb_nodes(self, lab: Lab, services: list[Service]) -> None:
        """Load every NLB node's ruleset; until health checks say otherwise, all targets are
        `initial`, so each node fails open to every target in its scope."""
        self.lab = lab
        self._remember_addresses(lab)
        for svc in services:
            lb, az = svc.param("load_balancer"), svc.param("availability_zone")
            node = NlbNode(lb, az, svc.ns, _node_config(lab, lb, az))
            self.nlb_nodes.append(node)
            self._apply_nlb(node, first=True)
        for router_ns in _fast_path_routers(self.nlb_nodes):  # once each, with all its nodes
            apply_router_fast_path(self.run_in, self.nlb_nodes, router_ns)

    def zone_in_service(self, lb: str, az: str) -> bool:
        """Whether an NLB's AZ stays in its DNS answer: each of its target groups with
        targets has a healthy one in scope (§3.6)."""
        node = next((n for n in self.nlb_nodes if n.load_balancer == lb and n.az == az), None)
        if node is None or self.lab is None:
            return True
        groups = {li.target_group: li.cross_zone for li in node.config.listeners}
        return nlb_engine.zone_in_dns([(self._target_views(g), cross_zone) for g, cross_zone in groups.items()], az)

    def _remember_addresses(self, lab: Lab) -> None:
        """Where targets are, kept after they are deregistered: their connections may outlive them."""
        for group in lab.target_groups.values():
            for t in group.targets:
                self._address_of[(group.name, t.id)] = (str(t.ip), t.port)

    def _nlb_groups(self) -> set[str]:
        return {li.target_group for n in self.nlb_nodes for li in n.config.listeners}

    def _checked_groups(self) -> set[str]:
        """Every target group a load balancer of the lab uses: the ones the checker probes."""
        return set(self.group_of_lb.values()) | self._nlb_groups() | self.alb.groups()

    def _target_views(self, group_name: str) -> list[nlb_engine.TargetView]:
        group = self.lab.target_groups[group_name]
        states = {}
        if self.checker is not None:
            states = {d["Target"]["Id"]: d["TargetHealth"]["State"]
                      for d in self.checker.describe_target_health(group_name)}
        return [nlb_engine.TargetView(t.id, ip, t.port, az, states.get(t.id, nlb_engine.INITIAL))
                for t in group.targets for ip, az in node_addresses(t, group, self.lab.load_balancers)]

    def _apply_nlb(self, node: NlbNode, first: bool = False) -> bool:
        """Load the node's ruleset if its routes changed (always when `first`); whether it did."""
        groups = {li.target_group for li in node.config.listeners}
        routable = nlb_engine.listener_routes(node.config, {g: self._target_views(g) for g in groups})
        if not first and routable == node.routable:
            return False
        ruleset = nlb_engine.node_ruleset(node.config, routable, update=not first)
        self.run_in(node.ns, ["nft", "-f", "-"], ruleset)
        node.routable = routable
        log.info("NLB node %s routes %s", node.ns,
                 {name: [f"{t.ip}:{t.port}" for t in ts] for name, ts in routable.items()})
        return True

    def refresh_nlb_nodes(self, groups: set[str] | None = None, lab: Lab | None = None) -> None:
        """Recompute and reload the nodes whose listeners use `groups` (None: all); with `lab`,
        their configuration too (a live attribute or target change); then the fast path of each
        VPC router whose nodes changed, or of every router after a live change (it may have
        reloaded a router's whole ruleset, which flushes the fast path)."""
        if lab is not None:
            self.lab = lab
        changed: list[NlbNode] = []
        for node in self.nlb_nodes:
            if lab is not None:
                config = _node_config(lab, node.load_balancer, node.az)
                if config != node.config:
                    node.config, node.routable = config, {}
            if groups is None or any(li.target_group in groups for li in node.config.listeners):
                try:
                    if self._apply_nlb(node):
                        changed.append(node)
                except Exception as exc:  # a node keeps its last ruleset; the daemon lives on
                    log.warning("NLB node %s: ruleset not applied: %s", node.ns, exc)
        reapply_router_fast_paths(self.run_in, self.nlb_nodes, _fast_path_routers(
            self.nlb_nodes if lab is not None else changed))

    def _terminate_if_due(self, group: str, target_id: str, state: str | None, reason: str | None) -> None:
        """Reset a target's connections where AWS does (§3.6, §3.7): when it turns unhealthy and the
        node does not fail open to it, and when its deregistration delay ends."""
        attributes = self.lab.target_groups[group].attributes
        if state == "unhealthy":
            if attributes.get("target_health_state.unhealthy.connection_termination.enabled", "true") != "true":
                return
            nodes = [n for n in self.nlb_nodes if not _routes_to(n, group, target_id)]
        elif state == "unused" and reason == "Target.NotRegistered":
            if attributes.get("deregistration_delay.connection_termination.enabled", "false") != "true":
                return
            nodes = list(self.nlb_nodes)
        else:
            return
        address = self._address_of.get((group, target_id))
        if address is None:
            return
        for node in nodes:
            if any(li.target_group == group for li in node.config.listeners):
                delete_connections(self.run_in, node, *address)

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
        return await ask_engine(node.control, message)

    # --- live changes -------------------------------------------------------------

    def apply(self, old: Lab, new: Lab) -> None:
        """Tell the checker and the nodes what a live change did to targets and attributes."""
        self._remember_addresses(new)
        checked = self._checked_groups()
        for group_name in checked:
            before, after = old.target_groups[group_name], new.target_groups[group_name]
            was = {t.id: t for t in before.targets}
            now = {t.id: t for t in after.targets}
            delay = deregistration_delay(after)
            for target_id in was.keys() - now.keys():
                self.checker.deregister(group_name, target_id, delay)
                self._to_nodes_of(group_name, {"op": "deregister", "target": target_id})
            for target_id in now.keys() - was.keys():
                t = now[target_id]
                self.checker.register(group_name, t.id, str(t.ip), t.port)
                self._to_nodes_of(group_name, {"op": "register", "target": t.id, "ip": str(t.ip), "az": t.az})
        self.alb.apply(new, self.checker, self._connector)
        if self.nlb_nodes:
            self.refresh_nlb_nodes(lab=new)
        for group_name in checked & (self._nlb_groups() | self.alb.groups()):
            group = new.target_groups[group_name]
            if group.health_check != old.target_groups[group_name].health_check or \
                    _proxy_protocol_v2(group) != _proxy_protocol_v2(old.target_groups[group_name]):
                self.checker.modify_target_group(group_name, group.health_check_config(),
                                                 proxy_protocol_v2=_proxy_protocol_v2(group))
        for node in self.nodes:
            attributes = gwlb_node_attributes(new, node.load_balancer)
            if attributes != gwlb_node_attributes(old, node.load_balancer):
                asyncio.ensure_future(self._tell(node, {"op": "modify", "attributes": attributes}))

    # --- what status shows ------------------------------------------------------------

    def target_health(self, group: str) -> dict[str, dict]:
        if self.checker is None or group not in self._checked_groups():
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


async def ask_engine(control: Path, message: dict, timeout: float = 5) -> dict:
    """One request to an engine's control socket (engines.io.control) and its answer."""
    with unixpath.usable(control) as path:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    try:
        writer.write((json.dumps(message) + "\n").encode())
        await writer.drain()
        return json.loads(await asyncio.wait_for(reader.readline(), timeout))
    finally:
        writer.close()


def _healthy(state: str | None) -> bool | None:
    """A health checker state as a GWLB node takes it: a verdict, or none yet."""
    return {"healthy": True, "unhealthy": False}.get(state)


def apply_router_fast_path(run_in: Callable[..., None], nlb_nodes: list[NlbNode], router_ns: str) -> None:
    """The VPC router's fast path (engines.nlb `router_fastpath_ruleset`) for every node of its
    VPC, as each was last applied: one `nft -f`, so it changes all at once."""
    nodes = [(n.config, n.routable) for n in nlb_nodes if _in_router(n.config) and n.config.router_ns == router_ns]
    run_in(router_ns, ["nft", "-f", "-"], nlb_engine.router_fastpath_ruleset(nodes, update=True))
    fast = [f"{c.node_ip}:{li.port}/{proto}" for c, routable in nodes
            for li, proto, _ in nlb_engine.fast_listeners(c, routable)]
    log.info("VPC router %s dispatches %s itself", router_ns, fast or "nothing")


def _fast_path_routers(nodes: list[NlbNode]) -> list[str]:
    """The VPC routers that dispatch for some of `nodes`, or pass their endpoints' traffic, each once."""
    return list(dict.fromkeys(n.config.router_ns for n in nodes if _in_router(n.config)))


def _in_router(config: nlb_engine.NodeConfig) -> bool:
    """Whether the node's VPC router has a part in its table: it dispatches for the node, or the
    node's interface endpoint links end there."""
    return config.router_fast_path or bool(config.endpoints)


def reapply_router_fast_paths(run_in: Callable[..., None], nlb_nodes: list[NlbNode], routers: list[str]) -> None:
    """These VPC routers' fast paths again, each from all its nodes as they are now."""
    for router_ns in routers:
        try:
            apply_router_fast_path(run_in, nlb_nodes, router_ns)
        except Exception as exc:  # its clients go through the nodes meanwhile; the daemon lives on
            log.warning("VPC router %s: NLB fast path not applied: %s", router_ns, exc)


def delete_connections(run_in: Callable[..., None], node: NlbNode, ip: str, port: int) -> None:
    """Forget a target's connections on a node, and those the VPC router dispatched for it:
    their next segment reaches the node, which resets it (engines.nlb.ruleset)."""
    for ns, only in [(node.ns, [])] + _router_connections(node.config):
        for proto in ("tcp", "udp"):
            try:
                run_in(ns, ["conntrack", "-D", "-p", proto, "--reply-src", ip, "--reply-port-src", str(port), *only])
            except Exception:  # conntrack fails when there is nothing to delete
                pass
    log.info("NLB node %s: reset connections to %s:%d", node.ns, ip, port)


def _router_connections(config: nlb_engine.NodeConfig) -> list[tuple[str, list[str]]]:
    """Where else a node's connections live: its VPC router, for those it dispatched for the node
    (its own clients' and its interface endpoints')."""
    if not config.router_fast_path:
        return []
    mark = f"{nlb_engine.FAST_MARK:#x}/{nlb_engine.FAST_MARK:#x}"
    out = [(config.router_ns, ["--orig-dst", config.node_ip, "--mark", mark])]
    for e in config.endpoints:  # an endpoint's: addressed to its ENI, translated to the node's IP
        out.append((config.router_ns, ["--reply-dst", config.node_ip, "--mark", f"{e.router_mark:#x}"]))
    return out


def _node_config(lab: Lab, lb: str, az: str) -> nlb_engine.NodeConfig:
    return nlb_engine.NodeConfig.from_dict(nlb_node_config(lab, lb, az))


def _routes_to(node: NlbNode, group: str, target_id: str) -> bool:
    """Whether the node still sends new connections of `group` to the target (it fails open to it)."""
    return any(t.id == target_id for li in node.config.listeners if li.target_group == group
               for t in node.routable.get(li.name, ()))


def _proxy_protocol_v2(group) -> bool:
    """AWS's NLB health checks start with a PROXY v2 LOCAL header when the group has it on (§3.5)."""
    return group.attributes.get("proxy_protocol_v2.enabled") == "true"


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text().strip().splitlines()[-lines:]) or "(no output)"
    except OSError:
        return "(no log)"


def readdress_alb_targets(checker: HealthChecker | None, lab: Lab) -> None:
    """Health checks of alb targets follow their ALB's first node when its nodes move (`replace-nodes`)."""
    for group in lab.target_groups.values():
        if group.target_type == "alb" and checker is not None and checker.has_target_group(group.name):
            for t in group.targets:
                checker.readdress(group.name, t.id, str(t.ip))
