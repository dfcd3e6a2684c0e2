"""The host side of a lab: start its daemon in a sandbox, talk to it, find its namespaces."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vpclab import unixpath
from vpclab.daemon import paths
from vpclab.daemon.store import Store

if TYPE_CHECKING:
    from vpclab.engines.gwlb.fastpath import FastPathFds
    from vpclab.model.resources import Lab as LabModel

PIDS_FILE = "pids.json"


class LabError(Exception):
    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Lab:
    """A lab on this host, by name."""

    name: str

    @property
    def dir(self) -> Path:
        return paths.lab_dir(self.name)

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
        # The start time tells our daemon from a process that reused its PID.
        return pid if _start_time(pid) == recorded.get("started") else None

    def create(self, name: str, source: str, text: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        store = Store(self.dir / "state.sqlite")
        store.save_lab(name, source, text)
        store.close()

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
            daemon = launch(self.dir / "daemon.log", w, lambda: run_daemon(self.dir, w, fast_paths),
                            inherit=[fd for f in fast_paths for fd in f.all()])
        finally:
            os.close(w)
            for fast_path in fast_paths:
                fast_path.close()  # the daemon holds its own
        (self.dir / PIDS_FILE).write_text(json.dumps({"daemon": daemon, "started": _start_time(daemon)}))
        with os.fdopen(r) as events:
            for line in events:
                event = json.loads(line)
                if event["event"] == "progress":
                    on_progress(event["message"])
                elif event["event"] == "ready":
                    return event["status"]
                elif event["event"] == "error":
                    raise LabError(event["message"])
        raise LabError(f"the lab daemon exited during bring-up; see {self.dir / 'daemon.log'}")

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
            os.kill(pid, signal.SIGKILL)  # PID 1 of the sandbox: everything of the lab goes with it
            while self.daemon_pid() == pid:
                time.sleep(0.02)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

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
