"""`vpclab doctor`'s I/O: each feature tried for real.

Host-side probes only run commands' `--version`. Everything else runs in a throwaway
sandbox: a forked child unshares a user namespace (mapping the caller to root, as a lab
does), then mount, UTS, IPC, network and PID namespaces one at a time, so a refusal names
its namespace; a grandchild, PID 1 of the new PID namespace, makes a veth pair and loads
one small nftables ruleset per feature. When they exit, every namespace and link they
made is gone: the host's network is never touched.
"""
from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable

from vpclab.doctor import features as F
from vpclab.doctor.features import Result

OVERRIDE = "VPCLAB_DOCTOR_MISSING"  # for tests: features to report missing, comma-separated
SANDBOX_TIMEOUT = 120.0
_SYSCTLS = ("user.max_user_namespaces", "kernel.unprivileged_userns_clone",
            "kernel.apparmor_restrict_unprivileged_userns")
_VERSIONS = {"ip": ["ip", "-V"], "nsenter": ["nsenter", "--version"], "nft": ["nft", "--version"],
             "clang": ["clang", "--version"], "dumpcap": ["dumpcap", "--version"],
             "tcpdump": ["tcpdump", "--version"], "tshark": ["tshark", "--version"], "haproxy": ["haproxy", "-v"]}
_NAMESPACES = (("mntns", 0x00020000), ("utsns", 0x04000000), ("ipcns", 0x08000000), ("netns", 0x40000000),
               ("pidns", 0x20000000))
CLONE_NEWUSER = 0x10000000
VETH = ("vpclabdoc0", "vpclabdoc1")  # inside the sandbox's own network namespace only


def _table(family: str, *chains: tuple[str, str, str], extra: str = "") -> str:
    """A ruleset of one table: each chain is (type, hook with its priority, its rules)."""
    out = [f"table {family} doctor {{", extra] if extra else [f"table {family} doctor {{"]
    for i, (kind, hook, rules) in enumerate(chains):
        out += [f"\tchain c{i} {{", f"\t\ttype {kind} hook {hook}; policy accept;",
                *(f"\t\t{rule}" for rule in rules.splitlines()), "\t}"]
    return "\n".join(out + ["}"]) + "\n"


_DEV = f"device \"{VETH[0]}\""
NFT_PROBES = {
    "nft:table": _table("ip", ("filter", "prerouting priority 0", "meta l4proto tcp accept")),
    "nft:conntrack": _table("ip", ("filter", "forward priority 0", "ct state established,related accept")),
    "nft:nat": _table("ip", ("nat", "prerouting priority dstnat", "ip daddr 10.0.0.1 dnat to 10.0.0.2"),
                      ("nat", "postrouting priority srcnat", "ip saddr 10.0.0.2 snat to 10.0.0.3")),
    "nft:masquerade": _table("ip", ("nat", "postrouting priority srcnat", "masquerade")),
    "nft:redirect": _table("ip", ("nat", "prerouting priority dstnat", "tcp dport 80 redirect to :8080")),
    "nft:reject": _table("ip", ("filter", "input priority 0", "tcp dport 1 reject with tcp reset")),
    "nft:ct-mark": _table("ip", ("filter", "prerouting priority mangle", "ct mark set 0x1\nmeta mark set ct mark")),
    "nft:ct-zone": _table("ip", ("filter", "prerouting priority raw", "ct zone set 1")),
    "nft:ct-original-zone": _table("ip", ("filter", "prerouting priority raw", "ct original zone set 1")),
    "nft:ct-original-addr": _table("ip", ("filter", "postrouting priority 110",
                                          "ct original ip daddr vmap { 10.0.0.1 : accept }")),
    "nft:ct-timeout": _table("ip", ("nat", "prerouting priority dstnat", "meta l4proto tcp ct timeout set \"t\""),
                             extra="\tct timeout t {\n\t\tprotocol tcp; l3proto ip;\n"
                                   "\t\tpolicy = { established: 350 }\n\t}"),
    "nft:sets": _table("ip", ("filter", "input priority 0", "ip saddr @s tcp dport { 80, 443 } accept"),
                       extra="\tset s { type ipv4_addr; elements = { 10.0.0.1 } }"),
    "nft:maps": _table("ip", ("nat", "prerouting priority dstnat", "dnat to ip daddr map { 10.0.0.1 : 10.0.0.2 }"),
                       ("filter", "input priority 0", "iifname vmap { \"lo\" : accept }")),
    "nft:concat": _table("ip", ("nat", "prerouting priority dstnat",
                                "tcp dport 80 dnat ip to ip daddr map { 10.0.0.1 : 10.0.0.2 . 8080 }"),
                         ("filter", "input priority 0", "iifname . ip saddr { \"lo\" . 10.0.0.1 } accept")),
    "nft:jhash": _table("ip", ("filter", "prerouting priority mangle",
                               "ct state new ct mark set jhash ip saddr . ip daddr mod 2 seed 0x1 offset 1")),
    "nft:maxseg-set": _table("inet", ("filter", "forward priority mangle",
                                      "tcp flags syn tcp option maxseg size set rt mtu")),
    "nft:numgen": _table("ip", ("filter", "prerouting priority mangle", "meta mark set numgen random mod 2")),
    "nft:netdev-ingress": _table("netdev", ("filter", f"ingress {_DEV} priority 0", "meta protocol ip accept")),
    "nft:netdev-egress": _table("netdev", ("filter", f"egress {_DEV} priority 0", "meta protocol ip accept")),
    "nft:payload-set": _table("netdev", ("filter", f"ingress {_DEV} priority 0",
                                         "ip daddr 10.0.0.1 ip daddr set 10.0.0.2")),
    "nft:ttl-set": _table("ip", ("filter", "forward priority 0", "ip ttl set 64")),
}
# Probes inside the sandbox's network namespace, after the namespaces themselves.
_IN_NETNS = ("veth", *NFT_PROBES, "xt:ttl", "iptables:nat", "conntrack", "ethtool", "af-packet", "ip-transparent",
             "tc:matchall", "tc:pedit", "ebpf-fast-path")
_NEEDS_VETH = {"ethtool", "tc:matchall", "tc:pedit", "ebpf-fast-path", "nft:netdev-ingress",
               "nft:netdev-egress", "nft:payload-set"}


def kernel() -> str:
    return os.uname().release


def _run(argv: list[str], stdin: str | None = None, timeout: float = 20) -> tuple[bool, str]:
    """(succeeded, its first line of output or error)."""
    try:
        r = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return False, f"no {argv[0]} on PATH"
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, str(error)
    text = (r.stdout if r.returncode == 0 else r.stderr or r.stdout).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if r.returncode != 0:  # nft and tc: the reason follows "Error:"
        lines = [line.split("Error: ", 1)[-1] for line in lines if "Error" in line or "error" in line] or lines
    return r.returncode == 0, (lines[0] if lines else f"exit {r.returncode}")


def _version(name: str) -> Result:
    ok, line = _run(_VERSIONS[name])
    if name == "haproxy" and ok:
        version = F.haproxy_version(line)
        if version is None or version < (2, 6):
            return Result(name, False, f"needs 2.6+, found: {line}")
        return Result(name, True, ".".join(map(str, version)))
    if ok:
        line = re.sub(r" \(Git [^)]*\)| \(Lester.*", "", line)
    return Result(name, ok, line)


def _sysctls() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key in _SYSCTLS:
        try:
            out[key] = Path("/proc/sys", *key.split(".")).read_text().strip()
        except OSError:
            out[key] = None
    return out


# --- inside the sandbox ----------------------------------------------------------------

def _nft(name: str) -> Result:
    ok, line = _run(["nft", "-f", "-"], "flush ruleset\n" + NFT_PROBES[name])
    _run(["nft", "flush", "ruleset"])
    return Result(name, ok, "" if ok else line)


def _socket_probe(name: str) -> Result:
    try:
        if name == "af-packet":
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)).close()
        else:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_IP, getattr(socket, "IP_TRANSPARENT", 19), 1)
    except OSError as error:
        return Result(name, False, error.strerror or str(error))
    return Result(name, True)


def _tc(name: str) -> Result:
    _run(["tc", "qdisc", "add", "dev", VETH[0], "clsact"])
    argv = {"tc:matchall": ["matchall", "action", "pass"],
            "tc:pedit": ["protocol", "ip", "u32", "match", "u32", "0", "0", "action", "pedit", "ex", "munge",
                         "ip", "ttl", "set", "64"]}[name]
    ok, line = _run(["tc", "filter", "add", "dev", VETH[0], "ingress", *argv])
    return Result(name, ok, "" if ok else line)


def _fast_path(fds: dict | None, reason: str | None) -> Result:
    if fds is None:
        return Result("ebpf-fast-path", False, reason or "not loaded")
    from vpclab.engines.gwlb import fastpath
    try:
        link = fastpath.attach_tc(fds["encap"], socket.if_nametoindex(VETH[0]))
    except OSError as error:
        return Result("ebpf-fast-path", False, f"loaded, but no tcx attach: {error}")
    os.close(link)
    return Result("ebpf-fast-path", True, "loaded as root, tcx attach in a lab namespace")


def _in_netns(names: set[str], fds: dict | None, fast_reason: str | None) -> list[Result]:
    out = []
    veth, _ = _run(["ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1]])
    if veth:
        _run(["ip", "link", "set", VETH[0], "up"])
        _run(["ip", "link", "set", VETH[1], "up"])
    _run(["ip", "link", "set", "lo", "up"])
    for name in _IN_NETNS:
        if name not in names:
            continue
        if name == "veth":
            out.append(Result(name, veth, "" if veth else "ip link add ... type veth failed"))
        elif name in _NEEDS_VETH and not veth:
            out.append(F.not_tried(name, "veth"))
        elif name in NFT_PROBES:
            out.append(_nft(name))
        elif name == "xt:ttl":  # what every VPC router loads (plan.ec2.KEEP_TTL), through nft_compat
            from vpclab.plan.ec2 import KEEP_TTL
            ok, line = _run(["iptables-nft-restore"], KEEP_TTL)
            out.append(Result(name, ok, "" if ok else line))
        elif name == "iptables:nat":  # what a hairpin appliance loads (plan.ec2.hairpin_rules)
            from ipaddress import IPv4Address
            from vpclab.plan.appliance import hairpin_rules
            ok, line = _run(["iptables-nft-restore"], hairpin_rules(IPv4Address("10.0.1.9"), [IPv4Address("10.0.1.5")]))
            out.append(Result(name, ok, "" if ok else line))
        elif name == "conntrack":
            ok, line = _run(["conntrack", "-L"])
            out.append(Result(name, ok, _run(["conntrack", "--version"])[1] if ok else line))
        elif name == "ethtool":
            ok, line = _run(["ethtool", "-K", VETH[0], "tx", "off"])
            out.append(Result(name, ok, "" if ok else line))
        elif name in ("af-packet", "ip-transparent"):
            out.append(_socket_probe(name))
        elif name.startswith("tc:"):
            out.append(_tc(name))
        else:
            out.append(_fast_path(fds, fast_reason))
    return out


def _sandbox_child(names: set[str], report: int, fds: dict | None, fast_reason: str | None) -> None:
    """The forked child: its namespaces, then the network probes in a grandchild."""
    from vpclab.daemon.sandbox import map_root
    from vpclab.fabric import nsutil

    def say(results: list[Result]) -> None:
        os.write(report, (json.dumps([[r.name, r.ok, r.detail] for r in results]) + "\n").encode())

    uid, gid = os.getuid(), os.getgid()
    try:
        nsutil.unshare(CLONE_NEWUSER)
        map_root(uid, gid)
    except OSError as error:
        say([Result("userns", False, error.strerror or str(error))])
        return
    done = [Result("userns", True)]
    for name, flag in _NAMESPACES:
        try:
            nsutil.unshare(flag)
            done.append(Result(name, True))
        except OSError as error:
            done.append(Result(name, False, error.strerror or str(error)))
    ok = {r.name for r in done if r.ok}
    if "netns" not in ok:
        say(done + [F.not_tried(n, "netns") for n in _IN_NETNS if n in names])
        return
    if "pidns" not in ok:  # probe the network all the same, from this process
        say(done + _in_netns(names, fds, fast_reason))
        return
    pid = os.fork()
    if pid == 0:
        try:
            if os.getpid() != 1:
                done[-1] = Result("pidns", False, f"the first child is PID {os.getpid()}, not 1")
            say(done + _in_netns(names, fds, fast_reason))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _sandbox(names: set[str], fds: dict | None, fast_reason: str | None) -> list[Result]:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read)
            _sandbox_child(names, write, fds, fast_reason)
        except BaseException as error:  # noqa: BLE001 - the parent reports it
            os.write(write, (json.dumps([["userns", False, f"sandbox failed: {error}"]]) + "\n").encode())
        finally:
            os._exit(0)
    os.close(write)
    text, deadline = b"", time.monotonic() + SANDBOX_TIMEOUT
    try:
        while True:
            ready, _, _ = select.select([read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:  # ours, by PID; what it had not said is reported missing
                os.kill(child, signal.SIGKILL)
                break
            chunk = os.read(read, 65536)
            if not chunk:
                break
            text += chunk
    finally:
        os.close(read)
        os.waitpid(child, 0)
    results: dict[str, Result] = {}
    for line in text.decode(errors="replace").splitlines():
        try:
            said = json.loads(line)
        except ValueError:
            continue  # cut short by the kill
        for name, ok, detail in said:
            results[name] = Result(name, ok, detail)
    return list(results.values())


# --- the whole probe, the cache, the override --------------------------------------------

def probe(names: Iterable[str] | None = None) -> list[Result]:
    """Try each feature in `names` (default: all) and say what was found."""
    wanted = set(F.BY_NAME) if names is None else set(names)
    results = [_version(n) for n in _VERSIONS if n in wanted]
    on_host = {r.name: r for r in results}
    if "nft" in on_host or any(n.startswith("nft:") for n in wanted):
        on_host.setdefault("nft", _version("nft"))
    inside = {n for n in wanted if n not in _VERSIONS}
    if inside & set(NFT_PROBES) and not on_host["nft"].ok:
        results += [F.not_tried(n, "nft") for n in sorted(inside & set(NFT_PROBES))]
        inside -= set(NFT_PROBES)
    if not inside:
        return results
    fds, fast_reason, loaded = None, None, None
    if "ebpf-fast-path" in inside:
        from vpclab.engines.gwlb import fastpath
        fast_reason = fastpath.unavailable_reason()
        if fast_reason is None:
            try:
                loaded = fastpath.load()
                fds = loaded.to_dict()
            except OSError as error:
                fast_reason = str(error).splitlines()[0]
    try:
        sandboxed = _sandbox(inside | {"userns"}, fds, fast_reason)
    finally:
        if loaded is not None:
            loaded.close()
    found = {r.name: r for r in sandboxed}
    user = found.get("userns")
    if user is not None and not user.ok:
        blockers = F.userns_blockers(_sysctls(), os.geteuid())
        found["userns"] = Result("userns", False, user.detail + (f"; blocked by {', '.join(blockers)}"
                                                                 if blockers else ""))
        found.update({n: F.not_tried(n, "userns") for n in inside if n != "userns"})
    silent = "no answer from the sandbox (it failed or timed out)"
    return results + [found.get(n, Result(n, False, silent)) for n in F.BY_NAME if n in inside | {"userns"}]


def with_test_override(results: list[Result]) -> list[Result]:
    from vpclab.daemon.client import LabError
    names = [n.strip() for n in os.environ.get(OVERRIDE, "").split(",") if n.strip()]
    try:
        return F.with_override(results, names, OVERRIDE) if names else results
    except ValueError as error:
        raise LabError(str(error)) from None


def _cache_path() -> Path:
    from vpclab.daemon import paths
    return paths.home() / "doctor" / F.cache_name(kernel(), os.getuid())


def _read_cache(path: Path) -> set[str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return set()
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        if info.st_uid != os.getuid() or info.st_mode & 0o022:  # someone else could have written it
            return set()
        return F.decode_cache(f.read(), kernel())


def _write_cache(path: Path, results: list[Result]) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(F.encode_cache(results, kernel()))
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs the next `up` a probe


def lab_lacks(needed: set[str]) -> list[Result]:
    """What `vpclab up` must refuse for: the `needed` features not ok here. Features known ok
    on this kernel (for this uid) are not tried again; the rest are, and remembered if ok."""
    path = _cache_path()
    known = _read_cache(path) & needed
    if F.userns_blockers(_sysctls(), os.geteuid()):  # a knob turned since: try again, say which
        known.discard("userns")
    fresh = probe(needed - known) if needed - known else []
    results = [Result(n, True, "cached") for n in known] + fresh
    if fresh:
        _write_cache(path, results + [Result(n, True) for n in _read_cache(path)])
    return F.missing(with_test_override(results), needed)


def refuse_if_lacking(lab) -> None:
    """Before anything of `lab` (a loaded model) exists: raise LabError, in doctor's words,
    if it needs a feature this machine lacks, so bring-up never fails deep for one."""
    from vpclab.daemon.client import LabError
    from vpclab.doctor.needs import lab_needs
    lacking = lab_lacks(lab_needs(lab))
    if lacking:
        raise LabError(F.refusal(lab.name, lacking))
