"""Make Linux match a `Wiring`, inside the lab's sandbox.

Runs in the daemon, which is PID 1 of the lab's user, mount, network and PID
namespaces: everything created here dies with it, so a failed or killed lab
leaves nothing behind on the host.

No process holds a lab namespace: the daemon creates each one in-process and
keeps it with a bind mount of its nsfs file on a tmpfs that only the sandbox's
mount namespace sees (as `ip netns add` does), which is much quicker than a
process per namespace.
"""
from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vpclab.fabric import nsutil
from vpclab.wording import counted
from vpclab.plan.wiring import Namespace, Wiring

Progress = Callable[[str], None]
log = logging.getLogger("vpclab.fabric")


class FabricError(Exception):
    pass


@dataclass
class Fabric:
    """The live namespaces of one lab: name -> its nsfs files (net, and mnt and uts for hosts)."""

    statedir: Path
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    wiring: Wiring | None = None
    switch: nsutil.NetnsSwitch = field(default_factory=nsutil.NetnsSwitch)

    @property
    def nsdir(self) -> Path:
        return self.statedir / "ns"

    def nsenter_args(self, name: str) -> list[str]:
        """nsenter's options that enter a namespace of the lab (from inside the sandbox)."""
        return [f"--{kind}={path}" for kind, path in self.files[name].items()]

    def inside(self, name: str):
        """Enter a namespace's network for the calling thread, and come back."""
        return self.switch.inside(self.files[name]["net"])

    # --- bring-up ---------------------------------------------------------

    def up(self, wiring: Wiring, progress: Progress = lambda _m: None,
           namespaces_made: Callable[[], None] = lambda: None) -> None:
        progress(f"creating {counted(len(wiring.namespaces), 'namespace')}")
        self.nsdir.mkdir(exist_ok=True)
        nsutil.mount("tmpfs", str(self.nsdir), "tmpfs", 0)  # seen by the sandbox only
        try:
            for ns in wiring.namespaces:
                self.files[ns.name] = self._create_namespace(ns)
        finally:
            namespaces_made()
        # Sysctls first: interfaces moved in later inherit the namespace defaults.
        for ns in wiring.namespaces:
            self._write_sysctls(ns)
        progress(f"wiring {counted(len(wiring.links), 'link')}")
        self.run_in(None, ["ip", "-batch", "-"], "".join(
            f"link add name {lk.a_ifname} netns {self.files[lk.a_ns]['net']} mtu {lk.mtu} "
            f"type veth peer name {lk.b_ifname} netns {self.files[lk.b_ns]['net']} mtu {lk.mtu}\n"
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
        self._load_iptables([ns for ns in wiring.namespaces if ns.iptables])
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
        # an nft reload flushed the iptables-nft tables too
        self._load_iptables([after for before, after in zip(old.namespaces, new.namespaces)
                             if after.iptables and (after.nft != before.nft or after.iptables != before.iptables)])
        self.wiring = new
        return changed

    # --- helpers ----------------------------------------------------------

    def _load_iptables(self, namespaces: list[Namespace]) -> None:
        """Routers' TTL rules are best effort: where the kernel or the host lacks the xt targets,
        the lab still runs, with the difference docs/deviations.md describes, and the daemon log
        says so. Anything else (a hairpin appliance's NAT) must load: `up` fails and rolls back."""
        self._parallel([(ns.name, ["iptables-nft-restore"], ns.iptables)
                        for ns in namespaces if ns.kind != "router"])
        routers = [ns for ns in namespaces if ns.kind == "router"]
        if not routers:
            return
        try:
            self._parallel([(ns.name, ["iptables-nft-restore"], ns.iptables) for ns in routers])
        except (OSError, FabricError) as exc:
            log.warning("TTL is decremented inside VPCs (see docs/deviations.md): %s", exc)

    def _create_namespace(self, ns: Namespace) -> dict[str, str]:
        """A new network namespace (and mount and UTS ones for hosts), kept by bind mounts."""
        kinds = ["net"] + (["mnt", "uts"] if ns.own_mounts else [])
        flags = nsutil.CLONE_NEWNET | (nsutil.CLONE_NEWNS | nsutil.CLONE_NEWUTS if ns.own_mounts else 0)
        if ns.own_mounts:
            etc = self.statedir / "etc" / ns.name
            etc.mkdir(parents=True, exist_ok=True)
            for name, text in (("resolv.conf", ns.resolv_conf), ("hosts", ns.etc_hosts)):
                (etc / name).write_text(text or "")
                (etc / name).chmod(0o644)  # as on EC2; the lab's 0700 directory keeps them private
        fds: dict[str, int] = {}
        try:
            nsutil.unshare(flags)
            try:
                if ns.own_mounts:
                    nsutil.sethostname(ns.hostname or ns.name)
                    nsutil.umount(str(self.nsdir))  # an instance does not see the lab's internals
                    nsutil.bind_file(str(etc / "resolv.conf"), "/etc/resolv.conf")
                    nsutil.bind_file(str(etc / "hosts"), "/etc/hosts")
                    # A sysfs mounted from inside the new netns shows its own interfaces, not the
                    # host's (the kernel allows it: the netns belongs to the sandbox's user ns).
                    nsutil.mount("sysfs", "/sys", "sysfs", nsutil.MS_NOSUID | nsutil.MS_NODEV | nsutil.MS_NOEXEC)
                fds = {k: os.open(f"/proc/thread-self/ns/{k}", os.O_RDONLY | os.O_CLOEXEC) for k in kinds}
            finally:
                self.switch.go_home(flags)
            files = {}
            for kind, fd in fds.items():
                path = self.nsdir / f"{ns.name}.{kind}"
                path.touch()
                nsutil.mount(f"/proc/self/fd/{fd}", str(path), None, nsutil.MS_BIND)
                files[{"mnt": "mount"}.get(kind, kind)] = str(path)
            return files
        except OSError as exc:
            raise FabricError(f"namespace {ns.name}: {exc}") from exc
        finally:
            for fd in fds.values():
                os.close(fd)

    def _write_sysctls(self, ns: Namespace) -> None:
        with self.inside(ns.name):
            for key, value in ns.sysctls:
                try:
                    with open(f"/proc/sys/net/{key}", "w") as f:
                        f.write(value)
                except OSError as exc:
                    raise FabricError(f"namespace {ns.name}: sysctl {key}={value}: {exc}") from exc

    def run_in(self, ns_name: str | None, argv: list[str], stdin: str = "") -> None:
        """Run one tool inside a namespace of the lab (None: the sandbox); FabricError with its stderr."""
        self._parallel([(ns_name, argv, stdin)])

    def _parallel(self, jobs: list[tuple[str | None, list[str], str]]) -> None:
        """Run tools inside namespaces, all at once; fail with their stderr."""
        running = []
        for ns_name, argv, stdin in jobs:
            if ns_name is None:
                proc = _popen(argv)
            else:
                with self.inside(ns_name):
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
