"""One health check (TCP, HTTP or HTTPS) sent on a fresh connection (asyncio)."""
from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Awaitable, Callable

from vpclab.engines.health.state import USER_AGENT, ProbeResult, Reason, response_code_mismatch_description
from vpclab.engines.io.proxy_protocol import local_header
from vpclab.model.health_check import HealthCheckConfig, match_http_code

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# Probes (asyncio)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connect = Callable[[str, int], Awaitable[Streams]]


async def open_tcp_connection(host: str, port: int) -> Streams:
    """The default `connect`: a TCP connection from this network namespace."""
    return await asyncio.open_connection(host, port)


_tls_context: ssl.SSLContext | None = None


def _insecure_tls_context() -> ssl.SSLContext:
    # ELB doesn't validate target certificates (self-signed and expired are fine).
    global _tls_context
    if _tls_context is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _tls_context = context
    return _tls_context


def health_check_request(path: str, host_header: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        "Connection: close\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Accept-Encoding: gzip, compressed\r\n"
        "\r\n"
    ).encode("ascii")


def parse_status_line(line: bytes) -> int:
    """The status code of an HTTP/1.x status line; ValueError when malformed."""
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise ValueError(f"malformed status line {line[:80]!r}")
    return int(parts[1])


async def _http_check(config: HealthCheckConfig, streams: Streams, host_header: str) -> ProbeResult:
    reader, writer = streams
    if config.protocol == "HTTPS":
        await writer.start_tls(_insecure_tls_context())
    writer.write(health_check_request(config.path, host_header))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")  # the whole head must arrive; the body needn't
    code = parse_status_line(head.split(b"\r\n", 1)[0])
    if match_http_code(config.matcher, code):
        return ProbeResult(True)
    return ProbeResult(False, Reason.RESPONSE_CODE_MISMATCH, response_code_mismatch_description(code))


async def probe(
    config: HealthCheckConfig,
    target_ip: str,
    traffic_port: int,
    connect: Connect = open_tcp_connection,
    *,
    host_header: str | None = None,
    timeout: float | None = None,
    proxy_protocol_v2: bool = False,
) -> ProbeResult:
    """Send one health check on a fresh connection and close it.

    TCP passes when the connection opens; HTTP(S) sends a GET and needs a
    matching status, all within `timeout_seconds`. `host_header` defaults to
    `<target ip>:<port>`; an NLB sends its node IP and listener port (§3.6).
    `proxy_protocol_v2` sends the 100-byte PROXY v2 LOCAL header first (before
    any TLS handshake). `timeout` overrides `timeout_seconds` (tests use
    sub-second ones). Errors the target causes become failed results; anything
    else raises.
    """
    port = config.port_for(traffic_port)
    if host_header is None:
        host_header = f"[{target_ip}]:{port}" if ":" in target_ip else f"{target_ip}:{port}"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(config.timeout_seconds if timeout is None else timeout):
            streams = await connect(target_ip, port)
            writer = streams[1]
            if proxy_protocol_v2:
                writer.write(local_header())
                await writer.drain()
            if config.protocol == "TCP":
                return ProbeResult(True)
            return await _http_check(config, streams, host_header)
    except TimeoutError:
        return ProbeResult(False, Reason.TIMEOUT)
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        # Refused, reset, TLS failure, or a malformed response.
        log.debug("health check of %s:%s failed: %r", target_ip, port, exc)
        return ProbeResult(False, Reason.FAILED_HEALTH_CHECKS)
    finally:
        if writer is not None:
            _close(writer)


def _close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
    except Exception:  # a transport already torn down has nothing left to close
        log.debug("closing a health check connection failed", exc_info=True)
