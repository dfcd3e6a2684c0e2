"""When each target's next health check is due (sans-IO)."""
from __future__ import annotations

import heapq
import random
from typing import Hashable


# --------------------------------------------------------------------------
# Probe schedule


class Scheduler:
    """When each key's next probe is due.

    Probes are due every `interval` from the previous due time, not from when
    the previous probe ended: AWS says a target's response time doesn't move
    the next check. `jitter` (0 <= jitter < 1) spreads each interval by up to
    ±jitter and the first probe by up to jitter × interval; it is derived from
    (seed, key, probe number), so a run replays exactly.
    """

    def __init__(self, *, jitter: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.jitter = jitter
        self.seed = seed
        self._heap: list[tuple[float, int, Hashable]] = []
        self._entries: dict[Hashable, tuple[float, float, int, int]] = {}  # key -> (due, interval, seq, probe number)
        self._seq = 0

    def _unit(self, key: Hashable, number: int) -> float:
        # str seeds hash with SHA-512, so this doesn't depend on PYTHONHASHSEED.
        return random.Random(f"{self.seed}/{key!r}/{number}").random()

    def _push(self, key: Hashable, due: float, interval: float, number: int) -> None:
        self._seq += 1
        self._entries[key] = (due, interval, self._seq, number)
        heapq.heappush(self._heap, (due, self._seq, key))

    def add(self, key: Hashable, interval: float, now: float) -> float:
        """Schedule `key` every `interval` seconds; returns when its first probe is due."""
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        first = now + interval * self.jitter * self._unit(key, 0)
        self._push(key, first, interval, 0)
        return first

    def remove(self, key: Hashable) -> None:
        self._entries.pop(key, None)  # its heap entry goes stale and is skipped

    def set_interval(self, key: Hashable, interval: float) -> None:
        """Use a new interval from the next probe after the one already due."""
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        due, _, _, number = self._entries[key]
        self._push(key, due, interval, number)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def due_at(self, key: Hashable) -> float | None:
        entry = self._entries.get(key)
        return entry[0] if entry else None

    def _discard_stale(self) -> None:
        while self._heap:
            due, seq, key = self._heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry[2] == seq:
                return
            heapq.heappop(self._heap)

    def next_due_at(self) -> float | None:
        self._discard_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Hashable]:
        """Keys due at `now`, in due order; each is rescheduled one interval on."""
        out: list[Hashable] = []
        while True:
            self._discard_stale()
            if not self._heap or self._heap[0][0] > now:
                return out
            due, _, key = heapq.heappop(self._heap)
            _, interval, _, number = self._entries[key]
            number += 1
            step = interval * (1.0 + self.jitter * (2.0 * self._unit(key, number) - 1.0))
            following = due + step
            if following <= now:
                following = now + step  # we fell behind: skip missed probes rather than burst
            self._push(key, following, interval, number)
            out.append(key)
