"""The daemon restarts a dead engine of AWS's side at once, then backs off while it keeps dying."""
from __future__ import annotations

import asyncio
import os
import signal

import pytest

from vpclab.cli.render import render_status
from vpclab.daemon.supervisor import Backoff, Supervisor, describe_exit

KILLED = signal.SIGKILL  # a wait status of "killed by SIGKILL" is the signal number itself
EXIT_1 = 1 << 8


def test_backoff_restarts_at_once_then_doubles_up_to_its_cap():
    backoff = Backoff(base=0.5, cap=4.0, stable=30.0)
    assert [backoff.delay(ran_for=0.1) for _ in range(7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_run_that_lasted_resets_the_backoff():
    backoff = Backoff(base=0.5, cap=30.0, stable=30.0)
    assert [backoff.delay(1.0) for _ in range(3)] == [0.0, 0.5, 1.0]
    assert backoff.delay(ran_for=45.0) == 0.0  # it ran a while: this death is a fresh one
    assert backoff.delay(ran_for=1.0) == 0.5


def test_exits_are_described_as_status_shows_them():
    assert describe_exit(KILLED) == "killed by SIGKILL"
    assert describe_exit(EXIT_1) == "exited with status 1"
    assert os.waitstatus_to_exitcode(EXIT_1) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.scheduled: list[tuple[float, object]] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, fn) -> None:
        self.scheduled.append((delay, fn))

    def run_scheduled(self) -> list[float]:
        delays = [d for d, _ in self.scheduled]
        due, self.scheduled = self.scheduled, []
        for delay, fn in due:
            self.now += delay
            fn()
        return delays


@pytest.fixture
def clock():
    return Clock()


def spawner():
    pids = iter(range(1000, 2000))
    started: list[int] = []

    def spawn() -> int:
        started.append(next(pids))
        return started[-1]
    return spawn, started


def test_a_killed_engine_is_started_again_at_once_and_counted(clock):
    supervisor = Supervisor(clock.call_later, clock)
    spawn, started = spawner()
    supervisor.add("gwlb-a", "gwlb_node", "gwlb-a", spawn)
    assert started == [1000]
    assert supervisor.exited(1000, KILLED)
    assert clock.run_scheduled() == [0.0] and started == [1000, 1001]
    [row] = supervisor.snapshot()
    assert row == {"name": "gwlb-a", "kind": "gwlb_node", "namespace": "gwlb-a", "pid": 1001,
                   "state": "running", "restarts": 1, "last_exit": "killed by SIGKILL"}


def test_an_engine_that_keeps_dying_is_restarted_with_growing_delays(clock):
    supervisor = Supervisor(clock.call_later, clock)
    spawn, started = spawner()
    engine = supervisor.add("relay", "pp2_relay", "nlb-a", spawn)
    delays = []
    for _ in range(5):
        clock.now += 0.2  # dies soon after each start
        supervisor.exited(started[-1], EXIT_1)
        assert supervisor.snapshot()[0]["state"] == "restarting"
        delays += clock.run_scheduled()
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert engine.restarts == 5 and engine.last_exit == "exited with status 1" and len(started) == 6


def test_other_processes_are_not_the_supervisors_business(clock):
    supervisor = Supervisor(clock.call_later, clock)
    assert not supervisor.exited(4242, KILLED)  # an instance's own command: left dead, as on EC2
    assert clock.scheduled == []


def test_a_removed_engine_and_a_lab_going_down_are_not_restarted(clock):
    supervisor = Supervisor(clock.call_later, clock)
    spawn, started = spawner()
    supervisor.add("relay", "pp2_relay", "nlb-a", spawn)
    supervisor.add("gwlb-a", "gwlb_node", "gwlb-a", spawn)
    assert supervisor.remove("relay") == 1000  # a live change switched proxy protocol off
    assert not supervisor.exited(1000, signal.SIGTERM)
    supervisor.closing = True
    assert supervisor.exited(1001, signal.SIGTERM)
    assert clock.scheduled == [] and started == [1000, 1001]


def test_an_engine_that_cannot_start_is_tried_again_with_backoff(clock):
    supervisor = Supervisor(clock.call_later, clock)
    attempts = []

    def spawn() -> int:
        attempts.append(clock.now)
        if len(attempts) < 3:
            raise OSError(2, "No such file or directory")
        return 77
    supervisor.add("gwlb-a", "gwlb_node", "gwlb-a", spawn)
    assert clock.run_scheduled() == [0.0]
    assert clock.run_scheduled() == [0.5]
    assert supervisor.snapshot()[0]["pid"] == 77 and supervisor.snapshot()[0]["restarts"] == 2
    assert supervisor.snapshot()[0]["last_exit"].startswith("could not start:")


def test_a_resolver_task_that_fails_is_run_again():
    async def scenario() -> tuple[int, dict]:
        supervisor = Supervisor(backoff=lambda: Backoff(base=0.01, cap=0.02))
        runs = []
        done = asyncio.Event()

        async def serve() -> None:
            runs.append(1)
            if len(runs) < 3:
                raise OSError(98, "Address already in use")
            done.set()
            await asyncio.Future()
        task = supervisor.run_task("vpc-a/resolver", "dns", "vpc-a", serve)
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()
        return len(runs), supervisor.snapshot()[0]
    runs, row = asyncio.run(scenario())
    assert runs == 3 and row["restarts"] == 2 and row["pid"] is None
    assert row["last_exit"] == "failed: OSError: [Errno 98] Address already in use"


def test_status_table_lists_engines_with_restarts_and_last_exit():
    status = {"lab": {"name": "l", "region": "us-east-1", "account": "1"}, "instances": [],
              "nat_gateways": [], "internet_hosts": [], "load_balancers": [], "target_groups": [],
              "vpc_endpoints": [],
              "engines": [{"name": "gwlb-a", "kind": "gwlb_node", "namespace": "gwlb-a", "pid": 12,
                           "state": "running", "restarts": 2, "last_exit": "killed by SIGKILL"}]}
    table = render_status(status)
    assert "ENGINE" in table and "RESTARTS" in table
    assert [line.split()[:5] for line in table.splitlines() if line.startswith("gwlb-a")] == \
        [["gwlb-a", "gwlb_node", "12", "running", "2"]]
    assert "killed by SIGKILL" in table
