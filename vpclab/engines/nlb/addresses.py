"""The relay's socket addresses: parsing and showing them, the original destination
conntrack NAT gave a connection, and closing with a reset."""
from __future__ import annotations

import ipaddress
import socket
import struct

Address = tuple[str, int]

SO_ORIGINAL_DST = 80
_SOCKADDR_IN = struct.Struct("!2xH4s8x")


def parse_address(text: str) -> Address:
    """`IP:PORT` or `[IPv6]:PORT` as (ip, port); ValueError if it is neither."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected IP:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return str(ipaddress.ip_address(host)), int(port)


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


def _unmapped(address: tuple) -> Address:
    """(ip, port) of a socket address, with IPv4-mapped IPv6 shown as IPv4."""
    ip = ipaddress.ip_address(address[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), address[1]


def original_destination(sock: socket.socket) -> Address | None:
    """Where the client sent its SYN before conntrack NAT redirected it; None if unknown."""
    if sock.family != socket.AF_INET:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, _SOCKADDR_IN.size)
    except OSError:
        return None  # no conntrack entry, or conntrack not loaded
    port, packed = _SOCKADDR_IN.unpack(raw)
    return socket.inet_ntoa(packed), port


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _show(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
