"""The control socket of an engine process (GWLB node, reference appliance).

A Unix stream socket served from the engine's own `EpollLoop`: each line in is
a JSON request, each line out its JSON answer. Served between packets, so an
answer (counters above all) is as of the moment it is asked.
"""
from __future__ import annotations

import functools
import json
import os
import socket
from typing import Any, Callable

from vpclab import unixpath
from vpclab.engines.io.epoll_loop import EpollLoop

LINE_MAX = 1 << 20


class ControlServer:
    """`serve(request) -> answer` never raises; a bad line gets an error answer."""

    def __init__(self, loop: EpollLoop, path: str, serve: Callable[[Any], dict]) -> None:
        self.loop, self.path, self.serve = loop, path, serve
        self.conns: dict[int, tuple[socket.socket, bytearray]] = {}
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unixpath.usable(path) as reachable:
                server.bind(reachable)
            server.listen(16)
            server.setblocking(False)
        except OSError:
            server.close()
            raise
        self.server = server
        loop.watch(server, self._accept)

    def _accept(self, now: float) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.settimeout(2.0)  # replies are small; never let a stuck client hold the data path long
            self.conns[conn.fileno()] = (conn, bytearray())
            self.loop.watch(conn, functools.partial(self._read, conn))

    def _read(self, conn: socket.socket, now: float) -> None:
        _, pending = self.conns[conn.fileno()]
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data or len(pending) + len(data) > LINE_MAX:
            self._close(conn)
            return
        pending += data
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except ValueError as error:
                response = {"ok": False, "error": f"bad JSON: {error}"}
            else:
                response = self.serve(request)
            try:
                conn.sendall(json.dumps(response).encode() + b"\n")
            except OSError:
                self._close(conn)
                return

    def _close(self, conn: socket.socket) -> None:
        self.conns.pop(conn.fileno(), None)
        self.loop.unwatch(conn)
        conn.close()

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
        for conn, _ in list(self.conns.values()):
            conn.close()
        self.conns.clear()
        self.server.close()
