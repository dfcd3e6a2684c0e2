"""GWLB node processes started before the fabric is complete, held until it is.

A node is a Python interpreter: its start and imports take longer than wiring
the rest of the lab after the namespaces exist. So the daemon starts each node
once its namespace exists (`hold`), the node waits for one line on its stdin
(node.py `--after-go`), and the supervisor's first start of that node releases
it instead of starting another process (`spawner`). A held node whose daemon
never releases it reads EOF and exits; a failed bring-up ends it with the sandbox.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Callable

log = logging.getLogger("vpclab.daemon")

GO = b"go\n"


class EarlyNodes:
    def __init__(self) -> None:
        self._held: dict[str, tuple[int, int]] = {}  # name -> (pid, write end of its stdin)

    def hold(self, name: str, pid: int, go_fd: int) -> None:
        self._held[name] = (pid, go_fd)

    def start(self, nodes: list, start_process: Callable[..., int]) -> None:
        """Start each node (balancers.Node) held; one that cannot start now starts later, as usual."""
        for node in nodes:
            go_r, go_w = os.pipe()
            try:
                pid = start_process(node.ns, node_argv(node, after_go=True), f"{node.ns}.log",
                                    pass_fds=node.fast_path.all() if node.fast_path else (), stdin=go_r)
            except (OSError, subprocess.SubprocessError) as error:
                log.warning("GWLB node %s not started early: %s", node.ns, error)
                os.close(go_w)
                continue
            finally:
                os.close(go_r)
            self.hold(node.ns, pid, go_w)

    def spawner(self, name: str, spawn: Callable[[], int], alive: Callable[[int], bool]) -> Callable[[], int]:
        """A supervisor's start function: the first call releases the held process (if it
        is still alive, else starts one with `spawn`); every later call (a restart) spawns."""
        def start() -> int:
            held = self._held.pop(name, None)
            if held is not None:
                pid, fd = held
                try:
                    if alive(pid):
                        os.write(fd, GO)
                        return pid
                except OSError:  # it died between the check and the write: start another
                    pass
                finally:
                    os.close(fd)
            return spawn()
        return start

    def close(self) -> None:
        """Let every process still held go (EOF: it exits)."""
        for _pid, fd in self._held.values():
            os.close(fd)
        self._held.clear()


def node_argv(node, after_go: bool = False) -> list[str]:
    """A GWLB node's command (node: balancers.Node, its CONFIG.json beside its control socket)."""
    return [sys.executable, "-m", "vpclab.engines.gwlb.node", *(["--after-go"] if after_go else []),
            str(node.control.with_suffix(".json"))]
