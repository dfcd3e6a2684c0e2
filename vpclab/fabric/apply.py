"""Make Linux match a `Wiring`, inside the lab's sandbox.

Runs in the daemon, which is PID 1 of the lab's user, mount, network and PID
namespaces: everything created here dies with it, so a failed or killed lab
leaves nothing behind on the host.
"""
from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vpclab.fabric import nsutil
from vpclab.plan.wiring import Namespace, Wiring

Progress = Callable[[str], None]


class FabricError(Exception):
    pass


@dataclass
class Fabric:
    """The live namespaces of one lab: name -> the PID of the process holding it."""

    statedir: Path
    holders: dict[str, int] = field(default_factory=dict)
    wiring: Wiring | None = None
    switch: nsutil.NetnsSwitch = field(default_factory=nsutil.NetnsSwitch)

    # --- bring-up ---------------------------------------------------------

    def up(self, wiring: Wiring, progress: Progress = lambda _m: None) -> None:
        progress(f"creating {len(wiring.namespaces)} namespaces")
        # Fork every holder first: their unshare calls then overlap.
        forked = [(ns, *self._fork_holder(ns)) for ns in wiring.namespaces]
        for ns, pid, ready in forked:
            self.holders[ns.name] = pid
            with os.fdopen(ready, "rb") as pipe:
                answer = pipe.read().decode()
            if answer != "ok":
                raise FabricError(f"namespace {ns.name}: {answer or 'holder died'}")
        # Sysctls first: interfaces moved in later inherit the namespace defaults.
        for ns in wiring.namespaces:
            self._write_sysctls(ns)
        progress(f"wiring {len(wiring.links)} links")
        self._run(None, ["ip", "-batch", "-"], "".join(
            f"link add name {lk.a_ifname} netns {self.holders[lk.a_ns]} mtu {lk.mtu} "
            f"type veth peer name {lk.b_ifname} netns {self.holders[lk.b_ns]} mtu {lk.mtu}\n"
            for lk in wiring.links
        ))
        _injected_fault("links")
        progress("configuring addresses, routes and rules")
        self._parallel([(ns.name, ["ip", "-batch", "-"], "\n".join(ns.ip_batch) + "\n")
                        for ns in wiring.namespaces if ns.ip_batch]
                       + [(ns.name, ["ethtool", "-K", ifname, "tx", "off"], "")
                          for ns in wiring.namespaces for ifname in ns.tx_offload_off])
        progress("loading security groups, network ACLs and NAT (nftables)")
        self._parallel([(ns.name, ["nft", "-f", "-"], _replace_ruleset(ns.nft))
                        for ns in wiring.namespaces if ns.nft])
        self.wiring = wiring

    def reconcile(self, new: Wiring) -> list[str]:
        """Apply a changed wiring to the live lab: rulesets and route tables; returns what changed."""
        old = self.wiring
        assert old is not None
        if [n.name for n in old.namespaces] != [n.name for n in new.namespaces] or old.links != new.links:
            raise FabricError("this change alters namespaces or links; run `vpclab down` and `up`")
        jobs, changed = [], []
        for before, after in zip(old.namespaces, new.namespaces):
            old_rest, old_tables = _split_route_tables(before.ip_batch)
            new_rest, new_tables = _split_route_tables(after.ip_batch)
            if old_rest != new_rest:
                raise FabricError(f"this change alters addresses or rules in {after.name}; "
                                  "run `vpclab down` and `up`")
            tables = sorted(t for t in set(old_tables) | set(new_tables)
                            if old_tables.get(t) != new_tables.get(t))
            if tables:
                lines = [f"route flush table {t}" for t in tables]
                lines += [line for t in tables for line in new_tables.get(t, [])]
                jobs.append((after.name, ["ip", "-batch", "-"], "\n".join(lines) + "\n"))
            if after.nft != before.nft:
                jobs.append((after.name, ["nft", "-f", "-"], _replace_ruleset(after.nft)))
            if tables or after.nft != before.nft:
                changed.append(after.name)
        self._parallel(jobs)
        self.wiring = new
        return changed

    def down(self) -> None:
        for pid in self.holders.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.holders.clear()

    # --- helpers ----------------------------------------------------------

    def _fork_holder(self, ns: Namespace) -> tuple[int, int]:
        """Fork a process that owns the namespace (and its hostname and resolv.conf).

        Returns its PID and a pipe that says "ok" once the namespace is ready."""
        etc = None
        if ns.own_mounts:
            etc = self.statedir / "etc" / ns.name
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(ns.resolv_conf or "")
            (etc / "hosts").write_text(ns.etc_hosts or "")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: only system calls, then exec
            try:
                os.close(r)
                flags = nsutil.CLONE_NEWNET
                if ns.own_mounts:
                    flags |= nsutil.CLONE_NEWNS | nsutil.CLONE_NEWUTS
                nsutil.unshare(flags)
                if ns.own_mounts:
                    nsutil.sethostname(ns.hostname or ns.name)
                    nsutil.mount(None, "/", None, nsutil.MS_REC | nsutil.MS_PRIVATE)
                    nsutil.bind_file(str(etc / "resolv.conf"), "/etc/resolv.conf")
                    nsutil.bind_file(str(etc / "hosts"), "/etc/hosts")
                os.write(w, b"ok")
                os.execvp("sleep", ["sleep", "infinity"])
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                os.write(w, f"{type(exc).__name__}: {exc}".encode())
            os._exit(1)
        os.close(w)
        return pid, r

    def _write_sysctls(self, ns: Namespace) -> None:
        with self.switch.inside(self.holders[ns.name]):
            for key, value in ns.sysctls:
                try:
                    with open(f"/proc/sys/net/{key}", "w") as f:
                        f.write(value)
                except OSError as exc:
                    raise FabricError(f"namespace {ns.name}: sysctl {key}={value}: {exc}") from exc

    def _run(self, ns_name: str | None, argv: list[str], stdin: str) -> None:
        self._parallel([(ns_name, argv, stdin)])

    def _parallel(self, jobs: list[tuple[str | None, list[str], str]]) -> None:
        """Run tools inside namespaces, all at once; fail with their stderr."""
        running = []
        for ns_name, argv, stdin in jobs:
            if ns_name is None:
                proc = _popen(argv)
            else:
                with self.switch.inside(self.holders[ns_name]):
                    proc = _popen(argv)  # the child inherits the namespace
            running.append((ns_name, argv, stdin, proc))
        errors = []
        for ns_name, argv, stdin, proc in running:
            _out, err = proc.communicate(stdin)
            if proc.returncode != 0:
                errors.append(f"{ns_name or 'sandbox'}: {argv[0]} failed: {err.strip()}")
        if errors:
            raise FabricError("; ".join(errors))


def _split_route_tables(batch: tuple[str, ...]) -> tuple[list[str], dict[int, list[str]]]:
    """Separate `route add ... table N` lines, by table, from everything else."""
    rest: list[str] = []
    tables: dict[int, list[str]] = {}
    for line in batch:
        words = line.split()
        if words[:2] == ["route", "add"] and words[-2] == "table":
            tables.setdefault(int(words[-1]), []).append(line)
        else:
            rest.append(line)
    return rest, tables


def _injected_fault(stage: str) -> None:
    """Tests prove rollback by failing a bring-up half-way (VPCLAB_INJECT_FAULT=<stage>)."""
    if os.environ.get("VPCLAB_INJECT_FAULT") == stage:
        raise FabricError(f"injected fault after {stage}")


def _popen(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _replace_ruleset(nft: str) -> str:
    """Every ruleset in a lab namespace is ours, so replace it whole, atomically."""
    return "flush ruleset\n" + nft
