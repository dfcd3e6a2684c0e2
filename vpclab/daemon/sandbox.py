"""Start a lab daemon as PID 1 of fresh user, mount, net, PID, UTS and IPC namespaces.

What `unshare --user --map-root-user --mount --net --pid --fork --mount-proc`
does, done in-process: the daemon inherits the modules the CLI has already
imported instead of starting a second Python, which halves bring-up time.
Works rootless: the caller's uid and gid map to root inside.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterable

from vpclab.daemon import paths
from vpclab.fabric import nsutil

CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000


# Namespace ids come from per-CPU batches on recent kernels (6.18 here), so a
# mount namespace made later on another CPU can carry a smaller id than the
# sandbox's, and the kernel then refuses to bind-mount it ("loop", EINVAL).
# Creating every mount namespace of a lab on one CPU keeps their ids ordered.
_affinity: set[int] | None = None


def pin_to_one_cpu() -> None:
    global _affinity
    _affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(_affinity)})


def unpin() -> None:
    """Once a lab's namespaces exist, its engines may use every CPU again."""
    if _affinity is not None:
        os.sched_setaffinity(0, _affinity)


def map_root(uid: int, gid: int) -> None:
    """In a new user namespace: the caller's uid and gid become root there."""
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def launch(log_path: Path, keep_fd: int, run: Callable[[], int], inherit: Iterable[int] = ()) -> int:
    """Fork `run` as PID 1 of a new sandbox; returns its host PID.

    The daemon keeps only `keep_fd` (its progress pipe) and the fds in `inherit`
    (what only the caller's privileges could open, such as loaded BPF programs), and
    logs to `log_path`.
    """
    keep = {keep_fd, *inherit}
    report_r, report_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    intermediate = os.fork()
    if intermediate == 0:
        code = 1
        try:
            os.close(report_r)
            os.setsid()
            pin_to_one_cpu()
            uid, gid = os.getuid(), os.getgid()
            nsutil.unshare(CLONE_NEWUSER)
            map_root(uid, gid)
            nsutil.unshare(nsutil.CLONE_NEWNS | nsutil.CLONE_NEWNET | CLONE_NEWPID
                           | nsutil.CLONE_NEWUTS | CLONE_NEWIPC)
            nsutil.mount(None, "/", None, nsutil.MS_REC | nsutil.MS_PRIVATE)
            daemon = os.fork()
            if daemon == 0:
                _become_daemon(log_path, keep, run)
            os.write(report_w, str(daemon).encode())
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(report_w, f"error: {type(exc).__name__}: {exc}".encode())
        os._exit(code)
    os.close(report_w)
    with os.fdopen(report_r) as report:
        answer = report.read()
    os.waitpid(intermediate, 0)
    if not answer.isdigit():
        raise OSError(f"the lab sandbox did not start ({answer or 'no answer'}); "
                      "are unprivileged user namespaces allowed here?")
    return int(answer)


def _become_daemon(log_path: Path, keep: set[int], run: Callable[[], int]) -> None:
    code = 1
    try:
        nsutil.mount("proc", "/proc", "proc", nsutil.MS_NOSUID | nsutil.MS_NODEV | nsutil.MS_NOEXEC)
        os.umask(0o077)  # what the daemon writes in the lab's directory is the owner's alone
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        # A fork keeps every descriptor of the CLI (a test harness's pipes among them).
        for fd in range(3, _max_fd()):
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.chdir("/")
        with open("/proc/self/comm", "w") as comm:
            comm.write(paths.DAEMON_COMM)
        code = run()
    finally:
        os._exit(code)


def _max_fd() -> int:
    try:
        return max(int(fd) for fd in os.listdir("/proc/self/fd")) + 1
    except (OSError, ValueError):
        return 1024
