"""The host side of a lab: start its daemon in a sandbox, talk to it, find its namespaces."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from vpclab import unixpath
from vpclab.daemon import paths
from vpclab.daemon.paths import LabError
from vpclab.daemon.store import Store

if TYPE_CHECKING:
    from vpclab.engines.gwlb.fastpath import FastPathFds
    from vpclab.model.resources import Lab as LabModel

PIDS_FILE = "pids.json"
DAEMON_LOG = "daemon.log"


@dataclass
class Lab:
    """A lab on this host, by name (LabError where paths.lab_dir refuses it)."""

    name: str
    # Resolved here, on the host: in the sandbox the process is uid 0 and would find root's labs.
    dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.dir = paths.lab_dir(self.name)

    # --- lifecycle ------------------------------------------------------------

    def exists(self) -> bool:
        return (self.dir / "state.sqlite").exists()

    def daemon_pid(self) -> int | None:
        """The host PID of the daemon, if it is alive."""
        try:
            recorded = json.loads((self.dir / PIDS_FILE).read_text())
            pid = recorded["daemon"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(pid, int) or pid <= 1:
            return None
        # The start time tells our daemon from a process that reused its PID; the rest proves
        # that the process is this lab's daemon, whatever pids.json says.
        if _start_time(pid) != recorded.get("started") or not self._is_daemon(pid):
            return None
        return pid

    def _is_daemon(self, pid: int) -> bool:
        """`pid` is a vpclab daemon, in a user namespace of its own, logging to this lab's daemon.log."""
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != paths.DAEMON_COMM:
                return False
            if os.readlink(f"/proc/{pid}/ns/user") == os.readlink("/proc/self/ns/user"):
                return False  # not in a sandbox
            output, log = os.stat(f"/proc/{pid}/fd/1"), os.stat(self.dir / DAEMON_LOG)
        except OSError:
            return False
        return (output.st_dev, output.st_ino) == (log.st_dev, log.st_ino)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lab's lock (up, down and restore): one of them at a time, or LabError."""
        path = paths.lock_file(self.name)
        paths.make_private_dir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, paths.PRIVATE_FILE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LabError(f"lab {self.name} is busy: another vpclab up or down is at work on it") from None
            yield
        finally:
            os.close(fd)  # the sandbox closed its copy: only this process held the lock

    def create(self, name: str, source: str, text: str) -> None:
        paths.make_private_dir(self.dir)
        store = Store(self.dir / "state.sqlite")
        store.save_lab(name, source, text)
        store.close()

    def saved_lab(self, text: str) -> LabModel:
        """The lab its state store holds (its file, then every live change), which `up` restores
        only when `text`, the file `up` was given, is the file the lab was built from."""
        from vpclab.daemon.changes import replay
        from vpclab.model import load_lab_text

        store = Store(self.dir / "state.sqlite")
        try:  # closed before the sandbox forks (a connection carried across fork corrupts)
            name, source, saved = store.lab()
            changes = store.changes()
        finally:
            store.close()
        if hashlib.sha256(saved.encode()).digest() != hashlib.sha256(text.encode()).digest():
            raise LabError(f"lab {self.name} was left by a crash with another lab file ({source}); "
                           f"`vpclab up {source}` brings it back, or `vpclab down --lab {self.name}` removes it")
        return replay(load_lab_text(saved, source, name), changes)[0]

    def start(self, on_progress: Callable[[str], None], model: LabModel | None = None) -> dict:
        """Start the daemon and wait until the lab is up; returns its status. `model`, the
        lab as loaded from its file, says how many GWLB nodes want a fast path."""
        from vpclab.daemon.main import run_daemon  # the daemon's engines: only `up` needs them
        from vpclab.daemon.sandbox import launch

        for stale in (paths.API_SOCKET, paths.NAMESPACES_FILE, PIDS_FILE):
            (self.dir / stale).unlink(missing_ok=True)
        count = 0 if model is None else sum(len(lb.nodes) for lb in model.load_balancers.values()
                                            if lb.type == "gateway")
        fast_paths = _load_fast_paths(count, on_progress)
        r, w = os.pipe()
        try:
            daemon = launch(self.dir / DAEMON_LOG, w, lambda: run_daemon(self.dir, w, fast_paths),
                            inherit=[fd for f in fast_paths for fd in f.all()])
        finally:
            os.close(w)
            for fast_path in fast_paths:
                fast_path.close()  # the daemon holds its own
        _write_private(self.dir / PIDS_FILE, json.dumps({"daemon": daemon, "started": _start_time(daemon)}))
        with os.fdopen(r) as events:
            for line in events:
                event = json.loads(line)
                if event["event"] == "progress":
                    on_progress(event["message"])
                elif event["event"] == "ready":
                    return event["status"]
                elif event["event"] == "error":
                    raise LabError(event["message"])
        raise LabError("the lab daemon exited during bring-up", code="daemon-exited")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the daemon to stop; kill it (by the PID we started) if it does not."""
        pid = self.daemon_pid()
        if pid is None:
            return
        try:
            self.request({"op": "shutdown"}, timeout=2)
        except LabError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.daemon_pid() == pid:
            time.sleep(0.05)
        if self.daemon_pid() == pid:
            try:
                os.kill(pid, signal.SIGKILL)  # PID 1 of the sandbox: everything of the lab goes with it
            except PermissionError:
                raise LabError(f"lab {self.name} belongs to another user; run vpclab as that user") from None
            while self.daemon_pid() == pid:
                time.sleep(0.02)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def keep_failed_log(self) -> Path | None:
        """Move a failed bring-up's daemon.log out of the lab directory, which rollback removes."""
        kept = paths.failed_log(self.name)
        paths.make_private_dir(kept.parent)
        try:
            os.replace(self.dir / DAEMON_LOG, kept)
        except FileNotFoundError:
            return None
        return kept

    # --- the change API ---------------------------------------------------------

    def request(self, message: dict, timeout: float = 60.0):
        if self.daemon_pid() is None:
            raise LabError(f"lab {self.name} is not running (try `vpclab up`)")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                with unixpath.usable(self.dir / paths.API_SOCKET) as path:
                    sock.connect(path)
                sock.sendall((json.dumps(message) + "\n").encode())
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError as exc:
            raise LabError(f"lab {self.name}: cannot reach its daemon: {exc}") from exc
        reply = json.loads(data)
        if not reply["ok"]:
            raise LabError(reply["error"], reply.get("code"))
        return reply["result"]

    # --- entering namespaces -------------------------------------------------------

    def namespaces(self) -> dict[str, dict]:
        try:
            return json.loads((self.dir / paths.NAMESPACES_FILE).read_text())
        except OSError:
            raise LabError(f"lab {self.name} is not running (try `vpclab up`)") from None

    def nsenter(self, node: str) -> list[str]:
        """The nsenter prefix that runs a command inside a node of the lab."""
        spaces = self.namespaces()
        if node not in spaces:
            raise LabError(f"lab {self.name} has no node {node!r}; nodes: {', '.join(spaces)}")
        daemon = self.daemon_pid()
        if daemon is None:
            raise LabError(f"lab {self.name} is not running (try `vpclab up`)")
        # Into the sandbox (its user, mount and PID namespaces), then into the node's.
        return ["nsenter", "-t", str(daemon), "--user", "--preserve-credentials", "--mount", "--pid", "--",
                "nsenter", *spaces[node]["nsenter"], "--"]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, paths.PRIVATE_FILE)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited; whoever adopted it has not reaped it yet
        return None
    return int(fields[19])


def _load_fast_paths(count: int, on_progress: Callable[[str], None]) -> list[FastPathFds]:
    """`count` eBPF fast path instances, one per GWLB node, loaded here because the
    sandbox's user namespace may not load BPF programs, and only when this process may
    (root); without them every GWLB node runs its Python data path alone."""
    from vpclab.engines.gwlb import fastpath

    if not count:
        return []
    reason = fastpath.unavailable_reason()
    if reason is not None:
        on_progress(f"GWLB fast path off ({reason}); the nodes run in Python alone")
        return []
    loaded = []
    try:
        for _ in range(count):
            loaded.append(fastpath.load())
    except OSError as error:
        on_progress(f"GWLB fast path off ({error}); the nodes run in Python alone")
        for fast_path in loaded:
            fast_path.close()
        return []
    on_progress(f"GWLB fast path: {count} eBPF instance(s) loaded, one per node")
    return loaded
