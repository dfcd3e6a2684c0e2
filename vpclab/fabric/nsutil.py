"""Thin wrappers over the namespace system calls (Python 3.11 has no os.setns)."""
from __future__ import annotations

import contextlib
import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    src = source.encode() if source else None
    fs = fstype.encode() if fstype else None
    _check(_libc.mount(src, target.encode(), fs, flags, None), f"mount {target}")


def umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def bind_file(source: str, target: str) -> bool:
    """Bind-mount a file over another; False when the target does not exist."""
    real = os.path.realpath(target)
    if not os.path.exists(real):
        return False
    mount(source, real, None, MS_BIND)
    return True


class NetnsSwitch:
    """Enter network namespaces and come back, for the calling thread.

    A socket keeps the namespace it was created in, so the daemon creates
    listening sockets inside each namespace and serves them all from one loop.
    """

    def __init__(self) -> None:
        self.home = {flag: os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
                     for flag, kind in ((CLONE_NEWNET, "net"), (CLONE_NEWNS, "mnt"), (CLONE_NEWUTS, "uts"))}

    @contextlib.contextmanager
    def inside(self, netns_file: str):
        fd = os.open(netns_file, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd, CLONE_NEWNET)
            yield
        finally:
            setns(self.home[CLONE_NEWNET], CLONE_NEWNET)
            os.close(fd)

    def go_home(self, flags: int) -> None:
        """Back to the sandbox's own namespaces after an unshare of `flags`."""
        for flag, fd in self.home.items():
            if flags & flag:
                setns(fd, flag)
