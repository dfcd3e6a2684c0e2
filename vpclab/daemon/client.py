"""The host side of a lab: start its daemon in a sandbox, talk to it, find its namespaces."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from vpclab.daemon import paths
from vpclab.daemon.main import API_SOCKET, NAMESPACES_FILE
from vpclab.daemon.store import Store

PIDS_FILE = "pids.json"
# The daemon is PID 1 of these namespaces; `--map-root-user` makes it work rootless too.
SANDBOX = ["unshare", "--user", "--map-root-user", "--mount", "--net", "--pid", "--uts", "--ipc",
           "--fork", "--mount-proc", "--propagation", "private"]


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
            pid = json.loads((self.dir / PIDS_FILE).read_text())["daemon"]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return pid if b"vpclab.daemon" in cmdline else None

    def create(self, name: str, source: str, text: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        store = Store(self.dir / "state.sqlite")
        store.save_lab(name, source, text)
        store.close()

    def start(self, on_progress: Callable[[str], None]) -> dict:
        """Start the daemon and wait until the lab is up; returns its status."""
        for stale in (API_SOCKET, NAMESPACES_FILE, PIDS_FILE):
            (self.dir / stale).unlink(missing_ok=True)
        r, w = os.pipe()
        env = dict(os.environ, VPCLAB_PROGRESS_FD=str(w))
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[2]),
                                                         env.get("PYTHONPATH", "")] if p)
        with open(self.dir / "daemon.log", "ab") as logf:
            launcher = subprocess.Popen(
                SANDBOX + [sys.executable, "-m", "vpclab.daemon", str(self.dir)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, pass_fds=(w,), env=env,
                start_new_session=True,
            )
        os.close(w)
        daemon = _child_of(launcher.pid)
        (self.dir / PIDS_FILE).write_text(json.dumps({"launcher": launcher.pid, "daemon": daemon}))
        result: dict | None = None
        with os.fdopen(r) as events:
            for line in events:
                event = json.loads(line)
                if event["event"] == "progress":
                    on_progress(event["message"])
                elif event["event"] == "ready":
                    result = event["status"]
                    break  # the launcher keeps its copy of the pipe open
                elif event["event"] == "error":
                    launcher.wait(timeout=10)
                    raise LabError(event["message"])
        if result is None:
            launcher.wait(timeout=10)
            raise LabError(f"the lab daemon exited during bring-up; see {self.dir / 'daemon.log'}")
        return result

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
                sock.connect(str(self.dir / API_SOCKET))
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
            return json.loads((self.dir / NAMESPACES_FILE).read_text())
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
        host_pid = _host_pid(daemon, spaces[node]["pid"])
        argv = ["nsenter", "-t", str(host_pid), "--user", "--preserve-credentials", "--net", "--pid"]
        if spaces[node]["own_mounts"]:
            argv += ["--mount", "--uts"]
        return argv + ["--"]


def _child_of(pid: int, timeout: float = 5.0) -> int:
    """unshare --fork runs the daemon as its only child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            break
        if children:
            return int(children[0])
        time.sleep(0.002)
    raise LabError("the lab sandbox did not start (are user namespaces allowed here?)")


def _descendants(pid: int) -> Iterator[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return
    for child in map(int, children):
        yield child
        yield from _descendants(child)


def _host_pid(daemon: int, sandbox_pid: int) -> int:
    """Map a PID inside the sandbox to the host's view of it."""
    for pid in _descendants(daemon):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("NSpid:") and int(line.split()[-1]) == sandbox_pid:
                    return pid
        except OSError:
            continue
    raise LabError(f"namespace holder {sandbox_pid} is gone")
