"""The IP-sync function's shell (engines.ipsync.core decides): it asks the VPC resolver for the
ALB's DNS name over UDP, keeps the function's state in the lab's state store, and registers and
deregisters targets through the daemon's change API, as the function calls RegisterTargets and
DeregisterTargets. Runs are serialized: a scheduled run and `vpclab invoke` never overlap.

Deviation (reference §5.1 step 2): the function asks the zone's authoritative name servers to
bypass caches; the lab's VPC resolver is authoritative for load balancer names, so it asks it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from dnslib import QTYPE, DNSRecord

from vpclab.engines.ipsync.core import Lookups, Outcome, Settings, State, decide, failed
from vpclab.plan.wiring import Service

log = logging.getLogger("vpclab.lambda")
DNS_TIMEOUT = 2.0  # seconds per query; a run that times out changes nothing
HISTORY = 20  # runs `vpclab status --json` shows


async def query_a(sock: socket.socket, server: tuple[str, int], name: str, timeout: float) -> list[str]:
    """One A query on a non-blocking UDP socket: the addresses answered (TimeoutError, ValueError)."""
    loop = asyncio.get_running_loop()
    query = DNSRecord.question(name, "A")
    query.header.id = random.randrange(1 << 16)
    await loop.sock_sendto(sock, query.pack(), server)
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"DNS query for {name} to {server[0]} timed out after {timeout:g}s")
        try:
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 4096), remaining)
        except asyncio.TimeoutError:
            continue
        reply = DNSRecord.parse(data)
        if reply.header.id != query.header.id:
            continue  # a late answer to an earlier query
        if reply.header.rcode != 0:
            raise ValueError(f"DNS answered {QTYPE.get(reply.header.rcode, reply.header.rcode)} for {name}")
        return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


@dataclass
class IpSyncFunction:
    """One function of the lab: its settings from the plan's `lambda_function` service."""

    svc: Service
    enter: Callable[[str], object]  # enters a namespace by name
    registered: Callable[[str], set[str]]  # target group -> the IDs registered in it now
    change: Callable[[str, dict], dict]  # the daemon's change API
    load_state: Callable[[str], str | None]
    save_state: Callable[[str, str], None]
    runs: int = 0
    last: dict = field(default_factory=dict)
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))  # recent runs, oldest first
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.svc.param("function")

    @property
    def environment(self) -> dict[str, str]:
        return dict(self.svc.param("environment"))

    def _state(self) -> State:
        text = self.load_state(self._key())
        return State.from_dict(json.loads(text)) if text else State()

    def _key(self) -> str:
        return f"lambda/{self.name}/state"

    async def invoke(self) -> dict:
        async with self.lock:
            return await self._run()

    async def _run(self) -> dict:
        env, started = self.environment, time.time()
        settings = Settings.from_environment(env)
        state, group = self._state(), self.svc.param("target_group")
        try:
            found = await self._resolve(env["ALB_DNS_NAME"], settings)
        except (OSError, ValueError) as exc:  # TimeoutError is an OSError
            outcome = failed(state, str(exc))
        else:
            outcome = decide(self.registered(group), found, state, settings)
        if outcome.ok:
            try:
                self._apply(outcome, group)  # state first, as the function saves to S3 before registering
            except Exception as exc:  # a refused call ends the run, as an API error ends the function
                outcome = failed(outcome.state, f"{type(exc).__name__}: {exc}")
        return self._record(outcome, started)

    def _server(self) -> tuple[str, int]:
        return self.svc.param("resolver"), 53

    async def _resolve(self, name: str, settings: Settings) -> set[str]:
        with self.enter(self.svc.ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            lookups = Lookups(settings)
            while lookups.add(await query_a(sock, self._server(), name, DNS_TIMEOUT)):
                pass
            return lookups.found
        finally:
            sock.close()

    def _apply(self, outcome: Outcome, group: str) -> None:
        self.save_state(self._key(), json.dumps(outcome.state.to_dict()))
        port = self.svc.param("port")
        if outcome.register:
            self.change("register-targets", {"target_group": group,
                                             "targets": [{"Id": ip, "Port": port} for ip in outcome.register]})
        if outcome.deregister:
            self.change("deregister-targets", {"target_group": group,
                                               "targets": [{"Id": ip, "Port": port} for ip in outcome.deregister]})

    def _record(self, outcome: Outcome, started: float) -> dict:
        self.runs += 1
        for line in outcome.log:
            log.info("%s: %s", self.name, line)
        self.last = {
            "run": self.runs, "at": started, "ok": outcome.ok, "found": list(outcome.found),
            "registered": list(outcome.register), "deregistered": list(outcome.deregister),
            "missed_runs": dict(outcome.state.pending), "active": sorted(outcome.state.active or ()),
            "log": list(outcome.log),
        }
        if outcome.ip_count is not None:
            self.last["LoadBalancerIPCount"] = outcome.ip_count
        self.history.append({k: v for k, v in self.last.items() if k not in ("found", "active", "log")})
        return self.status()

    def status(self) -> dict:
        state = self._state()
        return {"name": self.name, "target_group": self.svc.param("target_group"),
                "schedule_seconds": self.svc.param("schedule_seconds"), "runs": self.runs,
                "missed_runs": dict(state.pending), "last_run": self.last or None, "history": list(self.history)}

    async def run_schedule(self) -> None:
        """EventBridge's rate: the first run one period after the lab is up, then each period."""
        period = self.svc.param("schedule_seconds")
        if not period:
            return
        while True:
            await asyncio.sleep(period)
            try:
                await self.invoke()
            except Exception as exc:  # a run that fails is logged; the schedule goes on
                log.warning("%s: run failed: %s", self.name, exc)


class Functions:
    """The lab's functions, as the daemon runs them: their schedules, `invoke` requests, status."""

    def __init__(self, services, enter, lab: Callable[[], object], change, store) -> None:
        self.by_name: dict[str, IpSyncFunction] = {}
        self.schedules: list[asyncio.Future] = []  # ended with the daemon's loop
        for svc in (s for s in services if s.kind == "lambda_function"):
            fn = IpSyncFunction(svc, enter, lambda g: {t.id for t in lab().target_groups[g].targets},
                                change, store.mark, store.set_mark)
            self.by_name[fn.name] = fn
            self.schedules.append(asyncio.ensure_future(fn.run_schedule()))

    async def handle(self, request: dict) -> dict:
        """The daemon's requests that are the functions': `invoke` (Lambda's Invoke)."""
        if request.get("op") != "invoke":
            raise ValueError(f"unknown request {request.get('op')!r}")
        fn = self.by_name.get(request["function"])
        if fn is None:
            raise ValueError(f"ResourceNotFoundException: Function not found: {request['function']} "
                             f"(the lab has {', '.join(self.by_name) or 'none'})")
        return await fn.invoke()

    def status(self) -> list[dict]:
        return [fn.status() for fn in self.by_name.values()]
