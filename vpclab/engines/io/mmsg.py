"""recvmmsg and sendmmsg for UDP sockets, through ctypes (Linux, glibc).

One system call moves a whole batch of datagrams, where `recvfrom` and `send`
cost one each. `MessageBatch` holds `count` preallocated slots; the ctypes
elements are looked up once (each lookup builds an object), and a receive
resets only the slots the last send changed, so a batch costs per message,
not per slot.
"""
from __future__ import annotations

import ctypes
import errno
import os

MSG_DONTWAIT = 0x40
MSG_WAITFORONE = 0x10000
SOCKADDR_IN_LEN = 16


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_MMSGHDR_SIZE = ctypes.sizeof(_Mmsghdr)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]


def _check(result: int) -> int:
    """A count, 0 for "nothing now" (EAGAIN, EINTR), or OSError."""
    if result >= 0:
        return result
    error = ctypes.get_errno()
    if error in (errno.EAGAIN, errno.EINTR):
        return 0
    raise OSError(error, os.strerror(error))


class MessageBatch:
    """`count` slots of `size` bytes (each starting as `payload`), with room for a peer
    address per slot when `names` is set.

    Received messages are read through `lengths[i].msg_len`, `buffers[i]` (or the raw
    address `addresses[i]`) and, with `names`, `names[i].raw` (a `struct sockaddr_in`).
    Sending uses the same slots: to the peers they came from (`to_senders`, with
    `names`) or on a connected socket (nameless headers)."""

    def __init__(self, count: int, size: int, payload: bytes = b"", names: bool = False) -> None:
        self.count, self.size, self.named = count, size, names
        self.buffers = [ctypes.create_string_buffer(payload, size) for _ in range(count)]
        self.addresses = [ctypes.addressof(b) for b in self.buffers]
        self.names = [ctypes.create_string_buffer(SOCKADDR_IN_LEN) for _ in range(count)] if names else []
        self._iovecs = (_Iovec * count)()
        self._iov = [self._iovecs[i] for i in range(count)]
        self._received = (_Mmsghdr * count)()   # named, when `names`
        self._nameless = (_Mmsghdr * count)()   # for connected sockets
        self.lengths = [self._received[i] for i in range(count)]
        self._received_hdrs = [m.msg_hdr for m in self.lengths]
        for i in range(count):
            self._iov[i].iov_base = self.addresses[i]
            self._iov[i].iov_len = len(payload) if payload else size
            for array in (self._received, self._nameless):
                array[i].msg_hdr.msg_iov = ctypes.pointer(self._iovecs[i])
                array[i].msg_hdr.msg_iovlen = 1
            if names:
                self._received_hdrs[i].msg_name = ctypes.addressof(self.names[i])
                self._received_hdrs[i].msg_namelen = SOCKADDR_IN_LEN
        self._received_at = ctypes.addressof(self._received)
        self._nameless_at = ctypes.addressof(self._nameless)
        self._dirty = count if payload else 0  # slots whose iov_len or msg_namelen a receive must reset

    def recv(self, fd: int, flags: int = MSG_DONTWAIT) -> int:
        """Receive up to `count` datagrams; 0 if none is waiting. OSError for real errors."""
        size, iov, hdrs = self.size, self._iov, self._received_hdrs
        for i in range(self._dirty):
            iov[i].iov_len = size
            if self.named:
                hdrs[i].msg_namelen = SOCKADDR_IN_LEN
        n = _check(_libc.recvmmsg(fd, self._received_at, self.count, flags, None))
        self._dirty = n if self.named else 0  # the kernel wrote msg_namelen back
        return n

    def echo(self, fd: int, start: int, stop: int, to_senders: bool = False) -> int:
        """Send received slots `start:stop` back as they came, on a connected socket or
        (`to_senders`) each to the address it came from; returns how many were sent."""
        iov, lengths = self._iov, self.lengths
        for i in range(start, stop):
            iov[i].iov_len = lengths[i].msg_len
        self._dirty = max(self._dirty, stop)
        base = self._received_at if to_senders else self._nameless_at
        return _check(_libc.sendmmsg(fd, base + start * _MMSGHDR_SIZE, stop - start, 0))

    def send(self, fd: int, n: int) -> int:
        """Send the first `n` slots as they are (their payload), on a connected socket."""
        return _check(_libc.sendmmsg(fd, self._nameless_at, n, 0))


def sockaddr_in(raw: bytes) -> tuple[str, int]:
    """`(ip, port)` of a `struct sockaddr_in`."""
    return ".".join(str(b) for b in raw[4:8]), raw[2] << 8 | raw[3]
