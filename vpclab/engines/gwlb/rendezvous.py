"""Target choice by rendezvous (highest random weight) hashing.

Each (flow, target) pair gets a pseudo-random score; a flow goes to the
candidate with the highest. The choice depends only on the flow's hash and the
candidates' ids (and the load balancer's seed inside both), never on the order
targets arrived in or on what a node remembers. So a restarted node, or
another node of the same load balancer, picks the same target for a flow, and
a target that leaves moves only its own flows: each other flow's best
candidate is still standing.
"""
from __future__ import annotations

import zlib
from typing import Sequence, TypeVar

_M64 = (1 << 64) - 1

T = TypeVar("T")


def target_key(target_id: str, salt: int) -> int:
    """A target's 32-bit share of every score, fixed by its id and the load balancer's salt."""
    return zlib.crc32(target_id.encode(), salt)


def score(flow_hash: int, key: int) -> int:
    """splitmix64's finalizer over the pair: every bit of both moves every bit of the score."""
    z = ((flow_hash & 0xFFFFFFFF) << 32) | (key & 0xFFFFFFFF)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def pick(flow_hash: int, candidates: Sequence[T], keys: Sequence[int]) -> T:
    """The candidate whose key scores highest with `flow_hash` (`keys[i]` is `candidates[i]`'s).
    Ties, which need a 64-bit collision, go to the earlier candidate. `score`, inlined: this
    runs for every new flow, and a call per target costs more than the arithmetic."""
    high = (flow_hash & 0xFFFFFFFF) << 32
    best, best_score = 0, -1
    for i, key in enumerate(keys):
        z = high | (key & 0xFFFFFFFF)
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        z ^= z >> 31
        if z > best_score:
            best, best_score = i, z
    return candidates[best]
