"""The GWLB node's eBPF fast path for established flows (fastpath.c), from Python.

Three kinds of code live here, kept apart:
- pure codecs, unit-tested without privileges: map keys and values, the flow key of an
  inner packet, and `fast_path_eligible`, the programs' predicate mirrored for the node;
- `build`, `unavailable_reason` and `load`: compile the object, and load one instance
  (needs CAP_BPF/CAP_SYS_ADMIN in the initial user namespace) through libbpf.so.1;
- operations on fds that `load` returned, which work unprivileged inside the lab's user
  namespace once inherited: tcx attach, socket filter attach, map reads and writes, all
  through bpf(2) with ctypes.

The flow: a privileged parent calls `load()` and passes the `FastPathFds` to the node
(subprocess `pass_fds`, numbers in its JSON config through `to_dict`/`from_dict`). The
node sets its address (`set_node_ip`), attaches `encap` to its endpoint veths' ingress,
`decap` to its uplink's ingress and `ring_filter` to its AF_PACKET ring, and installs a
flow (`put_flow` + `put_return`) once the slow path has chosen its target. tcx links
detach when their fd closes, so a dead node leaves nothing attached. To fall back to the
slow path while the node lives, close the encap links AND detach the ring filter (or
delete the flows): the filter alone would go on hiding the flows' packets from the ring.

Races: a flow installed or removed between the ring's tap and tc ingress can duplicate
or lose the one packet in flight (the tap runs first).
"""
from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

SOURCE = Path(__file__).with_name("fastpath.c")
DEFAULT_OBJECT = Path(__file__).with_name("fastpath.bpf.o")
LIBBPF = "libbpf.so.1"

GENEVE_LEN = 40
MAX_INNER = 8500       # AWS's payload limit behind an endpoint, as in fastpath.c
MAX_FLOWS = 65536      # max_entries of `flows` and `returns`
IPPROTO_TCP, IPPROTO_UDP = 6, 17
TCP_FIN, TCP_SYN, TCP_RST = 0x01, 0x02, 0x04

# The per-CPU `counters` array, index by index as in fastpath.c's enum.
COUNTERS = (
    "encap_hit",         # encapsulated and redirected
    "encap_miss",        # eligible, no flow: slow path
    "encap_slow",        # not eligible: slow path
    "encap_gso",         # a flow's GSO skb: slow path (the ring filter shows it too)
    "encap_error",       # adjust_room/store_bytes failed: dropped
    "decap_hit",         # decapsulated and redirected
    "decap_miss",        # GENEVE to the node with an unknown header: slow path
    "decap_mismatch",    # known header, wrong outer source address or port: slow path
    "decap_oversize",    # inner packet over MAX_INNER: slow path (which drops it)
    "decap_gso",         # GSO/GRO skb: slow path
    "decap_error",       # adjust_room (slow path) or store_bytes (dropped) failed
    "decap_malformed",   # inner packet too short or not IPv4/IPv6: slow path (which drops it)
)
COUNTER_SLOTS = 16

# Layouts of fastpath.c's structs (native order for ints, network order kept as bytes).
FLOW_KEY = struct.Struct("=I4s4s2s2sB3x")               # struct flow_key, 20 B
FLOW_VALUE = struct.Struct("=I4s4s2s2x40sQQQ")          # struct flow_value, 80 B
RETURN_VALUE = struct.Struct("=I4s2s2x6s6sQQQ")         # struct return_value, 48 B
CONFIG_VALUE = struct.Struct("=4s4x")                   # struct config, 8 B


class FastPathError(OSError):
    """A bpf(2), libbpf or setsockopt operation failed; `errno` says why."""

    def __init__(self, operation: str, error: int, detail: str = "") -> None:
        message = f"{operation}: {os.strerror(error)}" + (f"\n{detail}" if detail else "")
        super().__init__(error, message)
        self.operation = operation


# --- pure codecs ---------------------------------------------------------------------


class FlowKey(NamedTuple):
    """A `flows` key: the endpoint veth's ifindex and the inner 5-tuple."""
    ifindex: int
    src: str
    dst: str
    sport: int
    dport: int
    proto: int

    def pack(self) -> bytes:
        return FLOW_KEY.pack(self.ifindex, socket.inet_aton(self.src), socket.inet_aton(self.dst),
                             self.sport.to_bytes(2, "big"), self.dport.to_bytes(2, "big"), self.proto)

    @classmethod
    def unpack(cls, raw: bytes) -> FlowKey:
        ifindex, src, dst, sport, dport, proto = FLOW_KEY.unpack(raw)
        return cls(ifindex, socket.inet_ntoa(src), socket.inet_ntoa(dst),
                   int.from_bytes(sport, "big"), int.from_bytes(dport, "big"), proto)


class Counters(NamedTuple):
    """What the programs counted for one flow or return: inner IP bytes, and the last
    packet's time on CLOCK_MONOTONIC (ns; 0 = none yet)."""
    packets: int = 0
    bytes: int = 0
    last_seen_ns: int = 0


class FlowAction(NamedTuple):
    """A `flows` value: how to encapsulate the flow's packets."""
    uplink_ifindex: int
    node_ip: str
    target_ip: str
    src_port: int       # the flow's outer UDP source port
    geneve: bytes       # the flow's exact 40-byte GWLB GENEVE header
    counters: Counters = Counters()

    def pack(self) -> bytes:
        if len(self.geneve) != GENEVE_LEN:
            raise ValueError(f"the GENEVE header must be {GENEVE_LEN} bytes, got {len(self.geneve)}")
        return FLOW_VALUE.pack(self.uplink_ifindex, socket.inet_aton(self.node_ip),
                               socket.inet_aton(self.target_ip), self.src_port.to_bytes(2, "big"),
                               self.geneve, *self.counters)

    @classmethod
    def unpack(cls, raw: bytes) -> FlowAction:
        uplink, node_ip, target_ip, src_port, geneve, *counters = FLOW_VALUE.unpack(raw)
        return cls(uplink, socket.inet_ntoa(node_ip), socket.inet_ntoa(target_ip),
                   int.from_bytes(src_port, "big"), geneve, Counters(*counters))


class ReturnAction(NamedTuple):
    """A `returns` value (its key is the 40 header bytes): where a return goes."""
    endpoint_ifindex: int
    target_ip: str      # the outer source the return must come from
    src_port: int       # the flow's outer source port: also accepted as destination port
    dst_mac: bytes      # router side of the endpoint veth
    src_mac: bytes      # node side of the endpoint veth
    counters: Counters = Counters()

    def pack(self) -> bytes:
        if len(self.dst_mac) != 6 or len(self.src_mac) != 6:
            raise ValueError("MAC addresses must be 6 bytes")
        return RETURN_VALUE.pack(self.endpoint_ifindex, socket.inet_aton(self.target_ip),
                                 self.src_port.to_bytes(2, "big"), self.dst_mac, self.src_mac,
                                 *self.counters)

    @classmethod
    def unpack(cls, raw: bytes) -> ReturnAction:
        ifindex, target_ip, src_port, dst_mac, src_mac, *counters = RETURN_VALUE.unpack(raw)
        return cls(ifindex, socket.inet_ntoa(target_ip), int.from_bytes(src_port, "big"),
                   dst_mac, src_mac, Counters(*counters))


def fast_path_eligible(packet: bytes | bytearray | memoryview) -> bool:
    """Whether gwlb_encap would take this inner IP packet, given a flow for it: IPv4
    without options, not a fragment, total length <= MAX_INNER and equal to the packet's
    length, UDP, or TCP with none of SYN/FIN/RST. (The programs also send GSO skbs to
    the slow path; that is a property of the skb, not of the bytes.)"""
    if len(packet) < 20 or packet[0] != 0x45:
        return False
    if (packet[6] << 8 | packet[7]) & 0x3FFF:  # MF or a fragment offset
        return False
    total = packet[2] << 8 | packet[3]
    if total > MAX_INNER or total != len(packet):
        return False
    if packet[9] == IPPROTO_UDP:
        return total >= 28
    if packet[9] == IPPROTO_TCP:
        return total >= 40 and not packet[33] & (TCP_SYN | TCP_FIN | TCP_RST)
    return False


def flow_key(ifindex: int, packet: bytes | bytearray | memoryview) -> FlowKey | None:
    """The `flows` key of an inner IPv4 TCP/UDP packet arriving on endpoint `ifindex`;
    None when it has no such key (not IPv4 TCP/UDP without options, or too short)."""
    if len(packet) < 24 or packet[0] != 0x45 or packet[9] not in (IPPROTO_TCP, IPPROTO_UDP):
        return None
    return FlowKey(ifindex, socket.inet_ntoa(bytes(packet[12:16])), socket.inet_ntoa(bytes(packet[16:20])),
                   packet[20] << 8 | packet[21], packet[22] << 8 | packet[23], packet[9])


def sum_counters(raw: bytes, cpus: int) -> int:
    """Sum one per-CPU u64 slot as bpf(2) returns it: `cpus` values, 8 bytes each."""
    return sum(struct.unpack(f"={cpus}Q", raw[:8 * cpus]))


def possible_cpus(text: str) -> int:
    """CPUs in /sys/devices/system/cpu/possible's format ("0-1", "0,2-3"): per-CPU map
    values have one slot per possible CPU."""
    count = 0
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


# --- build and load (privileged) ---------------------------------------------------------


def build(out: str | os.PathLike = DEFAULT_OBJECT) -> Path:
    """Compile fastpath.c into `out` with clang. Raises subprocess.CalledProcessError
    (clang's messages in `stderr`), or FileNotFoundError without clang."""
    arch = f"/usr/include/{os.uname().machine}-linux-gnu"  # asm/types.h on Debian
    argv = ["clang", "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", f"-I{arch}",
            "-c", str(SOURCE), "-o", str(out)]
    subprocess.run(argv, check=True, capture_output=True, text=True)
    return Path(out)


@dataclass(frozen=True)
class FastPathFds:
    """One loaded instance: program and map fds, owned by whoever holds this.

    Like every fd Python opens, they are close-on-exec: a child gets them only through
    subprocess's `pass_fds` (which clears O_CLOEXEC in the child), under the same numbers,
    so `to_dict()` can go into the child's JSON config as it is."""
    encap: int
    decap: int
    ring_filter: int
    flows: int
    returns: int
    counters: int
    config: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FastPathFds:
        return cls(**{f.name: int(data[f.name]) for f in fields(cls)})

    def all(self) -> tuple[int, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def close(self) -> None:
        for fd in self.all():
            try:
                os.close(fd)
            except OSError:
                pass


_PROGRAMS = {"encap": "gwlb_encap", "decap": "gwlb_decap", "ring_filter": "gwlb_ring_filter"}
_MAPS = ("flows", "returns", "counters", "config")
_libbpf: ctypes.CDLL | None = None
_libbpf_log: list[str] = []


def _load_libbpf() -> ctypes.CDLL:
    global _libbpf
    if _libbpf is None:
        lib = ctypes.CDLL(LIBBPF, use_errno=True)
        lib.bpf_object__open_file.restype = ctypes.c_void_p
        lib.bpf_object__open_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        lib.bpf_object__load.argtypes = [ctypes.c_void_p]
        lib.bpf_object__close.argtypes = [ctypes.c_void_p]
        lib.bpf_object__find_program_by_name.restype = ctypes.c_void_p
        lib.bpf_object__find_program_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.bpf_object__find_map_by_name.restype = ctypes.c_void_p
        lib.bpf_object__find_map_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.bpf_program__fd.argtypes = [ctypes.c_void_p]
        lib.bpf_map__fd.argtypes = [ctypes.c_void_p]
        if os.uname().machine == "x86_64":  # where a va_list is passed as a plain pointer
            # libbpf's messages (the verifier log among them) go into the error, not stderr.
            lib.libbpf_set_print.argtypes = [_PRINT_FN]
            lib.libbpf_set_print.restype = ctypes.c_void_p
            lib.libbpf_set_print(_print_callback)
        _libbpf = lib
    return _libbpf


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
LIBBPF_DEBUG = 2  # enum libbpf_print_level: WARN, INFO, DEBUG
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


@_PRINT_FN
def _print_callback(level: int, fmt: bytes, args: int) -> int:
    if level >= LIBBPF_DEBUG:
        return 0
    buffer = ctypes.create_string_buffer(4096)
    _libc.vsnprintf(buffer, len(buffer), fmt, args)
    _libbpf_log.append(buffer.value.decode(errors="replace"))
    del _libbpf_log[:-200]  # the verifier's tail says why
    return 0


def load(path: str | os.PathLike = DEFAULT_OBJECT) -> FastPathFds:
    """Load one instance (privileged). The fds are dup()s: the bpf_object is closed
    before returning, so the kernel objects live exactly as long as these fds (and any
    link or socket that holds a program)."""
    lib = _load_libbpf()
    _libbpf_log.clear()
    obj = lib.bpf_object__open_file(str(path).encode(), None)
    if not obj:
        raise FastPathError(f"bpf_object__open_file({path})", ctypes.get_errno() or errno.EINVAL,
                            "".join(_libbpf_log))
    fds: dict[str, int] = {}
    try:
        result = lib.bpf_object__load(obj)
        if result:
            raise FastPathError(f"bpf_object__load({path})", -result, "".join(_libbpf_log)[-6000:])
        for name, program in _PROGRAMS.items():
            handle = lib.bpf_object__find_program_by_name(obj, program.encode())
            fd = lib.bpf_program__fd(handle) if handle else -1
            if fd < 0:
                raise FastPathError(f"find program {program}", errno.ENOENT)
            fds[name] = os.dup(fd)
        for name in _MAPS:
            handle = lib.bpf_object__find_map_by_name(obj, name.encode())
            fd = lib.bpf_map__fd(handle) if handle else -1
            if fd < 0:
                raise FastPathError(f"find map {name}", errno.ENOENT)
            fds[name] = os.dup(fd)
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    finally:
        lib.bpf_object__close(obj)
    return FastPathFds(**fds)


def unavailable_reason(path: str | os.PathLike = DEFAULT_OBJECT) -> str | None:
    """Why `load` cannot work here, or None if it should."""
    if not Path(path).is_file():
        return f"no {Path(path).name}: build it with `python3 -m vpclab.engines.gwlb.fastpath build`"
    try:
        _load_libbpf()
    except OSError as error:
        return f"cannot load {LIBBPF} ({error}): apt-get install libbpf1"
    release = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    if release < (6, 6):
        return f"kernel {os.uname().release} has no tcx links (6.6+)"
    # A program of the type we load, the smallest there is: EPERM without CAP_BPF and
    # CAP_NET_ADMIN (or CAP_SYS_ADMIN) in the initial user namespace.
    insns = ctypes.create_string_buffer(struct.pack("=BBhi", 0xB7, 0, 0, 0) + struct.pack("=BBhi", 0x95, 0, 0, 0))
    license = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("=IIQQ", BPF_PROG_TYPE_SCHED_CLS, 2, ctypes.addressof(insns), ctypes.addressof(license))
    try:
        os.close(_bpf(BPF_PROG_LOAD, attr, "BPF_PROG_LOAD"))
    except FastPathError as error:
        return f"cannot load BPF programs here ({error.strerror}): needs CAP_BPF and CAP_NET_ADMIN " \
               "in the initial user namespace"
    return None


# --- unprivileged operations on inherited fds ---------------------------------------------

NR_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, -1)  # -1: every call fails with ENOSYS
BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM = 1, 2, 3
BPF_PROG_LOAD = 5
BPF_MAP_LOOKUP_BATCH = 24
BPF_LINK_CREATE = 28
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47
BPF_ANY = 0
SO_ATTACH_BPF, SO_DETACH_BPF = 50, 27
_FULL = (errno.E2BIG, errno.ENOSPC, errno.ENOMEM)  # a full hash map says E2BIG


def _bpf(cmd: int, attr: bytes, operation: str) -> int:
    buffer = ctypes.create_string_buffer(attr, max(len(attr), 64))  # the rest of the union zeroed
    result = _libc.syscall(NR_BPF, cmd, buffer, len(buffer))
    if result < 0:
        raise FastPathError(operation, ctypes.get_errno())
    return result


def attach_tc(prog_fd: int, ifindex: int, ingress: bool = True) -> int:
    """Attach a tc program to `ifindex` (in the caller's network namespace) with a tcx
    link; returns the link's fd (close-on-exec). Closing it detaches the program."""
    attach_type = BPF_TCX_INGRESS if ingress else BPF_TCX_EGRESS
    # union bpf_attr.link_create: prog_fd, target_ifindex, attach_type, flags, tcx {...}=0
    return _bpf(BPF_LINK_CREATE, struct.pack("=IIII", prog_fd, ifindex, attach_type, 0),
                f"BPF_LINK_CREATE(tcx, ifindex {ifindex})")


BPF_OBJ_GET_INFO_BY_FD = 15
PROG_INFO_SIZE, PROG_INFO_VERIFIED_INSNS = 232, 216  # struct bpf_prog_info (uapi, 5.16+)


def verified_insns(prog_fd: int) -> int:
    """How many instructions the verifier walked to load a program: what a load costs
    (a path explosion shows here first)."""
    info = ctypes.create_string_buffer(PROG_INFO_SIZE)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("=IIQ", prog_fd, PROG_INFO_SIZE, ctypes.addressof(info)),
         f"BPF_OBJ_GET_INFO_BY_FD(prog fd {prog_fd})")
    return struct.unpack_from("=I", info.raw, PROG_INFO_VERIFIED_INSNS)[0]


def attach_socket_filter(sock: socket.socket, prog_fd: int) -> None:
    """Attach the ring filter to a socket (SO_ATTACH_BPF); the socket holds the program."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog_fd)
    except OSError as error:
        raise FastPathError(f"setsockopt(SO_ATTACH_BPF, prog fd {prog_fd})", error.errno) from None


def _buffer(data: bytes, size: int = 0) -> ctypes.Array:
    """The kernel copies the map's key/value size from these, whatever we meant: room
    for the largest of ours, so a wrong map fd can never read past the buffer."""
    return ctypes.create_string_buffer(data, max(len(data), size, FLOW_VALUE.size))


def detach_socket_filter(sock: socket.socket) -> None:
    """Take the filter off a socket: it sees every frame again."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_BPF, 0)
    except OSError as error:
        raise FastPathError("setsockopt(SO_DETACH_BPF)", error.errno) from None


def _update(map_fd: int, key: bytes, value: bytes, what: str) -> bool:
    k, v = _buffer(key), _buffer(value)
    try:
        _bpf(BPF_MAP_UPDATE_ELEM, struct.pack("=IIQQQ", map_fd, 0, ctypes.addressof(k), ctypes.addressof(v),
                                              BPF_ANY), f"BPF_MAP_UPDATE_ELEM({what})")
    except FastPathError as error:
        if error.errno in _FULL:
            return False
        raise
    return True


def _delete(map_fd: int, key: bytes, what: str) -> bool:
    k = _buffer(key)
    try:
        _bpf(BPF_MAP_DELETE_ELEM, struct.pack("=IIQ", map_fd, 0, ctypes.addressof(k)),
             f"BPF_MAP_DELETE_ELEM({what})")
    except FastPathError as error:
        if error.errno == errno.ENOENT:
            return False
        raise
    return True


def _lookup(map_fd: int, key: bytes, value_size: int, what: str) -> bytes | None:
    k, v = _buffer(key), _buffer(b"", value_size)
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, struct.pack("=IIQQQ", map_fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0),
             f"BPF_MAP_LOOKUP_ELEM({what})")
    except FastPathError as error:
        if error.errno == errno.ENOENT:
            return None
        raise
    return v.raw[:value_size]


def _dump(map_fd: int, key_size: int, value_size: int, what: str, batch: int = 4096) -> list[tuple[bytes, bytes]]:
    """Every entry of a hash map, by BPF_MAP_LOOKUP_BATCH; at most MAX_FLOWS entries plus
    one batch, so a map that keeps changing cannot keep us here."""
    keys = ctypes.create_string_buffer(key_size * batch)
    values = ctypes.create_string_buffer(value_size * batch)
    tokens = (ctypes.create_string_buffer(8), ctypes.create_string_buffer(8))  # hash maps: a bucket number
    entries: list[tuple[bytes, bytes]] = []
    first = True
    while len(entries) <= MAX_FLOWS:
        in_batch = 0 if first else ctypes.addressof(tokens[0])
        # union bpf_attr.batch: in_batch, out_batch, keys, values, count, map_fd, elem_flags, flags
        attr = ctypes.create_string_buffer(struct.pack("=QQQQIIQQ", in_batch, ctypes.addressof(tokens[1]),
                                                       ctypes.addressof(keys), ctypes.addressof(values),
                                                       batch, map_fd, 0, 0), 64)
        done = False
        if _libc.syscall(NR_BPF, BPF_MAP_LOOKUP_BATCH, attr, len(attr)) < 0:
            error = ctypes.get_errno()
            if error != errno.ENOENT:  # ENOENT: this was the last batch (count says how much of it)
                raise FastPathError(f"BPF_MAP_LOOKUP_BATCH({what})", error)
            done = True
        count = struct.unpack_from("=I", attr, 32)[0]
        raw_keys, raw_values = keys.raw, values.raw
        entries += [(raw_keys[i * key_size:(i + 1) * key_size], raw_values[i * value_size:(i + 1) * value_size])
                    for i in range(count)]
        if done:
            break
        ctypes.memmove(tokens[0], tokens[1], 8)
        first = False
    return entries


def set_node_ip(config_fd: int, node_ip: str) -> None:
    """The node's uplink address: gwlb_decap takes only GENEVE sent to it (0.0.0.0: none)."""
    _update(config_fd, bytes(4), CONFIG_VALUE.pack(socket.inet_aton(node_ip)), "config")


def put_flow(flows_fd: int, key: FlowKey, action: FlowAction) -> bool:
    """Install or replace a flow (its counters restart from `action.counters`: read them
    first); False if the map is full."""
    return _update(flows_fd, key.pack(), action.pack(), "flows")


def delete_flow(flows_fd: int, key: FlowKey) -> bool:
    """False if there was no such flow."""
    return _delete(flows_fd, key.pack(), "flows")


def get_flow(flows_fd: int, key: FlowKey) -> FlowAction | None:
    raw = _lookup(flows_fd, key.pack(), FLOW_VALUE.size, "flows")
    return FlowAction.unpack(raw) if raw else None


def put_return(returns_fd: int, geneve: bytes, action: ReturnAction) -> bool:
    """Install or replace the return path of the flow whose header is `geneve`; False if
    the map is full."""
    if len(geneve) != GENEVE_LEN:
        raise ValueError(f"the GENEVE header must be {GENEVE_LEN} bytes, got {len(geneve)}")
    return _update(returns_fd, bytes(geneve), action.pack(), "returns")


def delete_return(returns_fd: int, geneve: bytes) -> bool:
    return _delete(returns_fd, bytes(geneve), "returns")


def flow_counters(flows_fd: int) -> dict[FlowKey, Counters]:
    return {FlowKey.unpack(k): FlowAction.unpack(v).counters
            for k, v in _dump(flows_fd, FLOW_KEY.size, FLOW_VALUE.size, "flows")}


def return_counters(returns_fd: int) -> dict[bytes, Counters]:
    """By GENEVE header bytes."""
    return {k: ReturnAction.unpack(v).counters
            for k, v in _dump(returns_fd, GENEVE_LEN, RETURN_VALUE.size, "returns")}


def read_counters(counters_fd: int) -> dict[str, int]:
    """The per-CPU event counters, summed over CPUs, by name (see COUNTERS)."""
    with open("/sys/devices/system/cpu/possible") as f:
        cpus = possible_cpus(f.read())
    totals = {}
    for index, name in enumerate(COUNTERS):
        raw = _lookup(counters_fd, struct.pack("=I", index), 8 * cpus, "counters")
        totals[name] = sum_counters(raw, cpus) if raw else 0
    return totals


def main(argv: list[str]) -> int:
    if argv[:1] != ["build"] or len(argv) > 2:
        print("usage: python3 -m vpclab.engines.gwlb.fastpath build [OUT]", file=sys.stderr)
        return 2
    try:
        out = build(argv[1] if len(argv) > 1 else DEFAULT_OBJECT)
    except subprocess.CalledProcessError as error:
        print(f"fastpath: clang failed:\n{error.stderr}", file=sys.stderr)
        return 1
    except FileNotFoundError as error:
        print(f"fastpath: {error.filename} not found (apt-get install clang libbpf-dev)", file=sys.stderr)
        return 1
    print(f"fastpath: built {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
