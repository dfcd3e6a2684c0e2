"""daemon/early_nodes.py: a held node is released once, by its first start; restarts spawn."""
from __future__ import annotations

import os

from vpclab.daemon.early_nodes import GO, EarlyNodes


def held(early: EarlyNodes, name: str, pid: int) -> int:
    r, w = os.pipe()
    early.hold(name, pid, w)
    return r


def test_first_start_releases_the_held_process_then_restarts_spawn():
    early, spawned = EarlyNodes(), []
    r = held(early, "gwlb:a", 4242)
    start = early.spawner("gwlb:a", lambda: spawned.append(1) or 5000 + len(spawned), alive=lambda pid: True)
    assert start() == 4242 and spawned == []
    assert os.read(r, 16) == GO and os.read(r, 16) == b""  # the line, then EOF: its pipe is closed
    assert start() == 5001 and start() == 5002  # restarts: new processes
    os.close(r)


def test_a_held_process_that_died_is_replaced():
    early = EarlyNodes()
    r = held(early, "gwlb:a", 4242)
    start = early.spawner("gwlb:a", lambda: 7000, alive=lambda pid: pid != 4242)
    assert start() == 7000
    assert os.read(r, 16) == b""  # never told to go
    os.close(r)


def test_a_node_never_held_spawns():
    assert EarlyNodes().spawner("gwlb:b", lambda: 9, alive=lambda pid: True)() == 9


def test_close_lets_the_held_go_with_eof():
    early = EarlyNodes()
    r1, r2 = held(early, "a", 1), held(early, "b", 2)
    early.close()
    assert os.read(r1, 16) == b"" and os.read(r2, 16) == b""
    assert early.spawner("a", lambda: 3, alive=lambda pid: True)() == 3  # nothing held any more
    os.close(r1)
    os.close(r2)
