"""A GWLB node's endpoints and targets: registration, health, draining and the pick of a
flow's target (the state is GwlbNode's: core.py)."""
from __future__ import annotations

from ipaddress import ip_address

from vpclab.engines.gwlb import rendezvous
from vpclab.engines.gwlb.config import NO_REBALANCE
from vpclab.engines.io.geneve import vpce_id_to_int

HEALTHY, UNHEALTHY, INITIAL, DRAINING, UNUSED = "healthy", "unhealthy", "initial", "draining", "unused"
TARGET_STATES = (HEALTHY, UNHEALTHY, INITIAL, DRAINING, UNUSED)


class Target:
    """A registered target as this node sees it. `removed` once deregistration ends
    (its `no_rebalance` flows may still use it: see `GwlbNode._retired`)."""

    __slots__ = ("id", "ip", "az", "state", "since", "drain_end", "removed")

    def __init__(self, target_id: str, ip: str, az: str, now: float) -> None:
        self.id = target_id
        self.ip = ip
        self.az = az
        self.state = INITIAL
        self.since = now
        self.drain_end = 0.0
        self.removed = False

    def __repr__(self) -> str:
        return f"Target({self.id!r}, {self.ip!r}, {self.az!r}, {self.state!r})"


def _endpoint_int(endpoint: int | str) -> int:
    return vpce_id_to_int(endpoint) if isinstance(endpoint, str) else endpoint


class GwlbTargets:
    """GwlbNode's endpoints and targets (its state is GwlbNode's, from its `__init__`)."""

    # --- endpoints and targets ---------------------------------------------

    def attach_endpoint(self, endpoint: int | str) -> None:
        self._endpoints.add(_endpoint_int(endpoint))

    def detach_endpoint(self, endpoint: int | str) -> None:
        """Stop carrying an endpoint's traffic (rejected or deleted); its flows end."""
        endpoint_id = _endpoint_int(endpoint)
        self._endpoints.discard(endpoint_id)
        for flow in [f for f in self._flows.values() if f.endpoint_id == endpoint_id]:
            self._forget(flow)

    def register(self, target_id: str, ip: str, az: str | None = None, now: float = 0.0) -> None:
        """Add a target in state `initial`. Registering a draining target cancels its draining."""
        ip = str(ip_address(ip))
        target = self._targets.get(target_id)
        if target is not None:
            if target.ip != ip:
                raise ValueError(f"target {target_id} is registered with IP {target.ip}, not {ip}")
            if target.state == DRAINING:
                target.state, target.since = INITIAL, now
                self._targets_changed()
            return
        self._targets[target_id] = Target(target_id, ip, self.config.availability_zone if az is None else az, now)
        self._targets_changed()

    def deregister(self, target_id: str, now: float) -> None:
        """Start draining: no new flows at once, existing ones until the delay ends."""
        target = self._targets[target_id]
        if target.state == DRAINING:
            return
        target.state, target.since = DRAINING, now
        target.drain_end = now + self.config.deregistration_delay
        if self.config.deregistration_delay <= 0:
            self._remove_target(target)
        self._targets_changed()

    def set_target_health(self, target_id: str, healthy: bool, now: float) -> bool:
        """Apply a health checker verdict (already past its thresholds)."""
        return self.set_target_state(target_id, HEALTHY if healthy else UNHEALTHY, now)

    def set_target_state(self, target_id: str, state: str, now: float) -> bool:
        """Set `healthy`, `unhealthy`, `initial` or `unused`. False if the target is
        unknown or draining (a late health result after deregistration)."""
        if state not in (HEALTHY, UNHEALTHY, INITIAL, UNUSED):
            raise ValueError(f"cannot set target state {state!r}")
        target = self._targets.get(target_id)
        if target is None or target.state == DRAINING:
            return False
        if target.state != state:
            target.state, target.since = state, now
            self._targets_changed()
        return True

    def targets(self) -> list[Target]:
        return sorted(self._targets.values(), key=lambda t: t.id)

    def _remove_target(self, target: Target) -> None:
        target.removed = True
        del self._targets[target.id]
        if self.config.on_deregistration == NO_REBALANCE:
            self._retired.add(target)

    def _targets_changed(self) -> None:
        cfg = self.config
        scope = sorted((t for t in self._targets.values()
                        if cfg.cross_zone or t.az == cfg.availability_zone), key=lambda t: t.id)
        self._healthy = [t for t in scope if t.state == HEALTHY]
        self._fallback = [t for t in scope if t.state in (HEALTHY, UNHEALTHY, INITIAL)]
        self._healthy_keys = [rendezvous.target_key(t.id, self._cookie_salt) for t in self._healthy]
        self._fallback_keys = [rendezvous.target_key(t.id, self._cookie_salt) for t in self._fallback]
        self._note_target_ips()
        self._next_deadline = min((t.drain_end for t in self._targets.values() if t.state == DRAINING),
                                  default=float("inf"))
        self._gen += 1

    def _end_draining(self, now: float) -> None:
        for target in [t for t in self._targets.values() if t.state == DRAINING and t.drain_end <= now]:
            self._remove_target(target)
        self._targets_changed()

    def _pick(self, flow_hash: int, healthy_only: bool = False) -> Target | None:
        """Rendezvous hashing over the flow and the candidates' ids: the same flow finds the
        same target after a node restart, and a target's leaving moves only its own flows."""
        if self._healthy:
            return rendezvous.pick(flow_hash, self._healthy, self._healthy_keys)
        if healthy_only or not self._fallback:
            return None
        return rendezvous.pick(flow_hash, self._fallback, self._fallback_keys)

    def _drop_unused_retired(self) -> None:
        """Forget deregistered targets whose last flow has idled out (or moved)."""
        in_use = {f.target for f in self._flows.values()}
        unused = self._retired - in_use
        if unused:
            self._retired -= unused
            self._note_target_ips()

    def _note_target_ips(self) -> None:
        """The addresses whose GENEVE replies are taken: registered and retired targets."""
        self._target_ips = frozenset([t.ip for t in self._targets.values()] + [t.ip for t in self._retired])
