"""Keep AWS's side of a lab running: a load balancer node, a relay or a resolver never
just stops at AWS, so an engine of ours that dies is started again.

At once the first time; then, if it keeps dying, after a delay that doubles up
to `Backoff.cap`, and that resets once a run lasts `Backoff.stable` seconds.
What users run (an instance's or appliance's own command) is never here: it
behaves as on EC2. `status` shows each engine with its restart count and how
its last run ended.

Engines are processes (`add`: the daemon's reaper reports their exits through
`exited`) or coroutines of the daemon (`run_task`, such as a VPC's resolver).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

log = logging.getLogger("vpclab.supervisor")


@dataclass
class Backoff:
    """How long to wait before the next start of an engine that has just died (pure)."""

    base: float = 0.5  # the second restart in a row waits this long, the next twice that...
    cap: float = 30.0
    stable: float = 30.0  # a run at least this long was no crash loop: start afresh
    streak: int = 0  # restarts in a row, each after a short run

    def delay(self, ran_for: float) -> float:
        if ran_for >= self.stable:
            self.streak = 0
        wait = 0.0 if self.streak == 0 else min(self.cap, self.base * 2 ** (self.streak - 1))
        self.streak += 1
        return wait


def describe_exit(wait_status: int) -> str:
    code = os.waitstatus_to_exitcode(wait_status)
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


@dataclass
class Engine:
    name: str
    kind: str  # gwlb_node, pp2_relay, dns
    ns: str
    spawn: Callable[[], int] | None = None  # starts the process, returns its PID
    pid: int | None = None
    restarts: int = 0
    last_exit: str | None = None
    started: float = 0.0
    restart_at: float | None = None  # when a restart is scheduled
    backoff: Backoff = field(default_factory=Backoff)
    removed: bool = False

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "namespace": self.ns, "pid": self.pid,
                "state": "running" if self.restart_at is None else "restarting",
                "restarts": self.restarts, "last_exit": self.last_exit}


class Supervisor:
    """`call_later(delay, fn)` schedules (the event loop's, or a test's); `clock` is monotonic."""

    def __init__(self, call_later: Callable[[float, Callable[[], None]], object] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 backoff: Callable[[], Backoff] = Backoff) -> None:
        self.engines: dict[str, Engine] = {}
        self._by_pid: dict[int, Engine] = {}
        self._call_later = call_later or (lambda delay, fn: asyncio.get_running_loop().call_later(delay, fn))
        self.clock = clock
        self._backoff = backoff
        self.closing = False  # the lab is going down: let everything end

    # --- processes ------------------------------------------------------------

    def add(self, name: str, kind: str, ns: str, spawn: Callable[[], int]) -> Engine:
        """Start a process engine now, and again whenever it dies."""
        engine = self.engines[name] = Engine(name, kind, ns, spawn, backoff=self._backoff())
        self._start(engine)
        return engine

    def _start(self, engine: Engine) -> None:
        engine.restart_at = None
        if engine.removed or self.closing:
            return
        engine.started = self.clock()
        try:
            engine.pid = engine.spawn()
        except OSError as error:  # cannot even start: counts as a run that died at once
            engine.pid = None
            self._died(engine, f"could not start: {error}")
            return
        self._by_pid[engine.pid] = engine

    def exited(self, pid: int, wait_status: int) -> bool:
        """The reaper saw `pid` end; True if it was an engine (which then comes back)."""
        engine = self._by_pid.pop(pid, None)
        if engine is None:
            return False
        engine.pid = None
        if engine.removed or self.closing:
            return True
        self._died(engine, describe_exit(wait_status))
        return True

    def _died(self, engine: Engine, how: str) -> None:
        engine.last_exit = how
        engine.restarts += 1
        delay = engine.backoff.delay(self.clock() - engine.started)
        engine.restart_at = self.clock() + delay
        log.warning("engine %s (%s in %s) %s; restart %d in %.1fs", engine.name, engine.kind, engine.ns,
                    how, engine.restarts, delay)
        self._call_later(delay, lambda: self._start(engine))

    def remove(self, name: str) -> int | None:
        """Stop supervising (a live change removed the engine); returns its PID to end, if running."""
        engine = self.engines.pop(name, None)
        if engine is None:
            return None
        engine.removed = True
        if engine.pid is not None:
            self._by_pid.pop(engine.pid, None)
        return engine.pid

    # --- coroutines -----------------------------------------------------------------

    def run_task(self, name: str, kind: str, ns: str, serve: Callable[[], Awaitable[None]]) -> asyncio.Task:
        """Run `serve()` until cancelled; when it fails or returns, run it again (with backoff)."""
        engine = self.engines[name] = Engine(name, kind, ns, backoff=self._backoff())

        async def keep_serving() -> None:
            while not self.closing:
                engine.started, engine.restart_at = self.clock(), None
                try:
                    await serve()
                    how = "returned"
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - any failure is a death to recover from
                    how = f"failed: {type(error).__name__}: {error}"
                engine.last_exit = how
                engine.restarts += 1
                delay = engine.backoff.delay(self.clock() - engine.started)
                engine.restart_at = self.clock() + delay
                log.warning("engine %s (%s in %s) %s; restart %d in %.1fs", name, kind, ns, how,
                            engine.restarts, delay)
                await asyncio.sleep(delay)

        return asyncio.ensure_future(keep_serving())

    def snapshot(self) -> list[dict]:
        return [e.as_dict() for e in sorted(self.engines.values(), key=lambda e: (e.kind, e.name))]
