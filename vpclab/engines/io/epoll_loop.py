"""The event loop of the engine processes (GWLB node, reference appliance).

epoll over their sockets, a signal wakeup pipe so SIGTERM/SIGINT/SIGHUP end a
wait at once, and a periodic tick for housekeeping. Handlers get `now`.
"""
from __future__ import annotations

import select
import signal
import socket
import time
from typing import Callable

Handler = Callable[[float], None]


class EpollLoop:
    def __init__(self, tick_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.tick_seconds = tick_seconds
        self.clock = clock
        self.running = False
        self._epoll = select.epoll()
        self._handlers: dict[int, Handler] = {}
        self._wakeup = socket.socketpair()
        for s in self._wakeup:
            s.setblocking(False)
        signal.set_wakeup_fd(self._wakeup[1].fileno(), warn_on_full_buffer=False)
        self.watch(self._wakeup[0], self._drain_wakeup)

    def watch(self, sock: socket.socket, handler: Handler) -> None:
        self._handlers[sock.fileno()] = handler
        self._epoll.register(sock.fileno(), select.EPOLLIN)

    def unwatch(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if self._handlers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def stop_on(self, *signums: int) -> None:
        for signum in signums:
            signal.signal(signum, self._stop)

    def _stop(self, signum: int, frame: object) -> None:
        self.running = False

    def _drain_wakeup(self, now: float) -> None:
        try:
            while self._wakeup[0].recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def run(self, on_tick: Handler, after_events: Callable[[], None] = lambda: None) -> None:
        """Until a stop signal: dispatch ready sockets, then `after_events`, and tick."""
        poll, handlers, clock = self._epoll.poll, self._handlers, self.clock
        next_tick = clock() + self.tick_seconds
        self.running = True
        while self.running:
            events = poll(max(0.0, next_tick - clock()))
            now = clock()
            for fd, _ in events:
                handler = handlers.get(fd)
                if handler is not None:
                    handler(now)
            after_events()
            if now >= next_tick:
                on_tick(now)
                next_tick = now + self.tick_seconds

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        for s in self._wakeup:
            s.close()
        self._epoll.close()
