"""The default services of a lab host: the test page on :80 and an SSH-style banner on :22.

The test page tells who served a request and whom it saw, so a lab can show
which target a load balancer picked and what address NAT left on the packet.
A connection may start with a PROXY protocol v2 header, as a target behind an
NLB with proxy_protocol_v2.enabled receives it (reference §3.5): the page then
also shows what the header says, and its bytes; a LOCAL header (a health
check) is consumed silently.
`HttpConnection` is the sans-IO core: bytes in, bytes out. The `serve_*`
coroutines are thin asyncio shells over sockets the daemon has already bound.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping

from vpclab.engines.io.proxy_protocol import ProxyHeader, ProxyProtocolError, bytes_needed, parse_header

log = logging.getLogger(__name__)

BANNER = b"SSH-2.0-vpclab\r\n"
BANNER_TIMEOUT = 5.0
HTTP_IDLE_TIMEOUT = 10.0
LINGER_TIMEOUT = 5.0  # for the last bytes of a connection to drain before it is reset
MAX_HEAD_BYTES = 8192
SERVER_NAME = "vpclab"

# Identity keys shown together on the first line of the page, in this order.
HEADLINE_KEYS = ("name", "instance_id", "az")

Client = tuple[str, int]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    505: "HTTP Version Not Supported",
}


class BadRequest(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str
    version: str  # "HTTP/1.0" or "HTTP/1.1"
    headers: tuple[tuple[str, str], ...]  # names lowercased, in arrival order

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0].split("#", 1)[0]

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    @property
    def has_body(self) -> bool:
        # We never read bodies, so a request with one ends the connection after its reply.
        length = int(self.header("content-length") or 0)
        return length > 0 or self.header("transfer-encoding") is not None


def parse_request_head(head: bytes) -> HttpRequest:
    """Parse a request line and headers (without the blank line that ends them)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("non-ASCII request head") from None
    lines = text.replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not all(parts):
        raise BadRequest(f"bad request line {lines[0][:80]!r}")
    method, target, version = parts
    if not version.startswith("HTTP/") or not method.isalpha() or not method.isupper():
        raise BadRequest(f"bad request line {lines[0][:80]!r}")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(f"unsupported {version}", status=505)
    if not target.startswith("/"):
        raise BadRequest(f"bad request target {target[:80]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"bad header line {line[:80]!r}")
        headers.append((name.lower(), value.strip()))
    request = HttpRequest(method, target, version, tuple(headers))
    length = request.header("content-length")
    if length is not None and not length.isdigit():
        raise BadRequest(f"bad Content-Length {length!r}")
    return request


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    extra_headers: tuple[tuple[str, str], ...] = ()

    def encode(self, *, head_only: bool = False, close: bool = False, http10: bool = False) -> bytes:
        headers = [
            ("Server", SERVER_NAME),
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            *self.extra_headers,
        ]
        if close:
            headers.append(("Connection", "close"))
        elif http10:
            headers.append(("Connection", "keep-alive"))
        lines = [f"HTTP/1.1 {self.status} {_REASONS[self.status]}"]
        lines += [f"{k}: {v}" for k, v in headers]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        return head if head_only else head + self.body


def format_client(client: Client) -> str:
    host, port = client[0], client[1]
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    return f"{host}:{port}"


def proxy_protocol_fields(header: ProxyHeader) -> dict[str, str]:
    """What the page shows of a PROXY header: source, destination, vpc-endpoint-id when present."""
    fields = {}
    if header.source is not None and header.destination is not None:
        fields["source"] = format_client(header.source)
        fields["destination"] = format_client(header.destination)
    else:
        fields["family"] = header.family_name
    if header.vpc_endpoint_id is not None:
        fields["vpc-endpoint-id"] = header.vpc_endpoint_id
    return fields


@dataclass(frozen=True)
class TestPage:
    """What the page shows: a host's identity (any plain dict) and an optional message.

    An instance passes name, instance_id, az, private_ip and hostname; an internet
    host passes name and ip. Keys print as given, with `_` shown as `-`.
    """

    identity: Mapping[str, str]
    message: str | None = None

    def headline(self) -> str:
        return " ".join(str(self.identity[k]) for k in HEADLINE_KEYS if self.identity.get(k))

    def text(self, client: Client, proxy: ProxyHeader | None = None, forwarded: tuple = ()) -> str:
        """`client` is the connection's peer (the IP header's source); `proxy`, the
        PROXY header the connection started with, adds `proxy-protocol:` and
        `proxy-protocol-hex:` lines; `forwarded`, the X-Forwarded-* headers a load
        balancer added (name, value), one line each."""
        lines = [self.message] if self.message else []
        headline = self.headline()
        if headline:
            lines.append(headline)
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in self.identity.items()
                  if k not in HEADLINE_KEYS]
        lines.append(f"client: {format_client(client)}")
        lines += [f"{name}: {value}" for name, value in forwarded]
        if proxy is not None:
            fields = " ".join(f"{k}={v}" for k, v in proxy_protocol_fields(proxy).items())
            lines += [f"proxy-protocol: {fields}", f"proxy-protocol-hex: {proxy.raw.hex()}"]
        return "\n".join(lines) + "\n"

    def json(self, client: Client, proxy: ProxyHeader | None = None) -> str:
        document: dict[str, object] = {k: str(v) for k, v in self.identity.items()}
        if self.message:
            document["message"] = self.message
        document["client"] = format_client(client)
        document["client_ip"], document["client_port"] = client[0], client[1]
        if proxy is not None:
            fields = {k.replace("-", "_"): v for k, v in proxy_protocol_fields(proxy).items()}
            document["proxy_protocol"] = {**fields, "hex": proxy.raw.hex()}
        return json.dumps(document, indent=2) + "\n"

    def respond(self, request: HttpRequest, client: Client, proxy: ProxyHeader | None = None) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(405, b"method not allowed\n", extra_headers=(("Allow", "GET, HEAD"),))
        if request.path == "/":
            forwarded = tuple((k, v) for k, v in request.headers if k.startswith("x-forwarded-"))
            return HttpResponse(200, self.text(client, proxy, forwarded).encode())
        if request.path == "/json":
            return HttpResponse(200, self.json(client, proxy).encode(), "application/json")
        # says who answered, so a load balancer's path rule shows which target it chose
        return HttpResponse(404, f"not found on {self.headline()}\n".encode())


class HttpConnection:
    """One client connection to the test page, without I/O.

    Feed received bytes to `receive`; send what it returns; close once `closing`
    is set and the output is sent. Pipelined requests are answered in order.
    A PROXY v2 header may come first: a PROXY one is kept in `proxy_header` and
    shown on every page of the connection, a LOCAL one is dropped, and a
    malformed one gets a 400.
    """

    def __init__(self, page: TestPage, client: Client) -> None:
        self.page = page
        self.client = client
        self.closing = False
        self.proxy_header: ProxyHeader | None = None
        self._at_start = True  # a PROXY header may still be arriving
        self._buffer = b""

    def receive(self, data: bytes) -> bytes:
        self._buffer += data
        if self._at_start:
            try:
                if not self._take_proxy_header():
                    return b""
            except ProxyProtocolError as error:
                return self._fail(BadRequest(f"bad PROXY protocol header: {error}"))
        out = []
        # RFC 9112 §2.2: ignore empty lines before a request line.
        self._buffer = self._buffer.lstrip(b"\r\n")
        while not self.closing:
            end, gap = _end_of_head(self._buffer)
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    out.append(self._fail(BadRequest("request head too large", status=431)))
                break
            if end > MAX_HEAD_BYTES:
                out.append(self._fail(BadRequest("request head too large", status=431)))
                break
            head, self._buffer = self._buffer[:end], self._buffer[end + gap:]
            try:
                request = parse_request_head(head)
            except BadRequest as error:
                out.append(self._fail(error))
                break
            self.closing = not request.keep_alive or request.has_body
            response = self.page.respond(request, self.client, self.proxy_header)
            out.append(response.encode(head_only=request.method == "HEAD", close=self.closing,
                                       http10=request.version == "HTTP/1.0"))
        return b"".join(out)

    def _take_proxy_header(self) -> bool:
        """Consume a PROXY v2 header at the start; False while more bytes are needed."""
        needed = bytes_needed(self._buffer)
        if needed is not None and len(self._buffer) < needed:
            return False
        self._at_start = False
        header = parse_header(self._buffer)
        if header is not None:
            self._buffer = self._buffer[header.header_length:]
            if not header.is_local:
                self.proxy_header = header
        return True

    def _fail(self, error: BadRequest) -> bytes:
        log.debug("test page: %s from %s", error, format_client(self.client))
        self.closing = True
        return HttpResponse(error.status, f"{error}\n".encode()).encode(close=True)


def _end_of_head(buffer: bytes) -> tuple[int, int]:
    """Where the blank line after the headers starts, and its length; (-1, 0) if not yet."""
    ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := buffer.find(sep)) >= 0]
    return min(ends) if ends else (-1, 0)


# ---------------------------------------------------------------- asyncio shell

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve_stream(sock: socket.socket, handler: StreamHandler) -> None:
    """Accept on `sock` until cancelled; then close it and every open connection.

    asyncio 3.11's Server.close() leaves accepted connections open, and a stopped
    service must stop answering, e.g. so a health check sees it fail.
    """
    connections: set[asyncio.Task] = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await handler(reader, writer)
            writer.close()
            async with asyncio.timeout(LINGER_TIMEOUT):
                await writer.wait_closed()
        except (ConnectionError, TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            connections.discard(task)
            writer.transport.abort()  # drops what a stuck client never read; no-op once closed

    server = await asyncio.start_server(on_connection, sock=sock)
    try:
        await asyncio.Future()
    finally:
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)


async def serve_test_page(
    sock: socket.socket,
    identity: Mapping[str, str],
    *,
    message: str | None = None,
    idle_timeout: float = HTTP_IDLE_TIMEOUT,
) -> None:
    """Serve the test page on a bound TCP socket until cancelled (the socket is then closed)."""
    page = TestPage(dict(identity), message)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = HttpConnection(page, writer.get_extra_info("peername")[:2])
        while not connection.closing:
            async with asyncio.timeout(idle_timeout):
                data = await reader.read(65536)
            if not data:
                return
            reply = connection.receive(data)
            if reply:
                writer.write(reply)
                async with asyncio.timeout(idle_timeout):
                    await writer.drain()
        # Half-close, so the client reads the whole reply rather than a reset.
        if writer.can_write_eof():
            writer.write_eof()

    await _serve_stream(sock, handle)


async def serve_banner(sock: socket.socket, *, timeout: float = BANNER_TIMEOUT) -> None:
    """Greet like sshd on a bound TCP socket, then close after one line or `timeout`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER)
        with contextlib.suppress(TimeoutError, ValueError):  # ValueError: line over the limit
            async with asyncio.timeout(timeout):
                await writer.drain()
                await reader.readline()

    await _serve_stream(sock, handle)


class _EchoProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP echo error: %s", exc)


async def serve_udp_echo(sock: socket.socket) -> None:
    """Echo every datagram back to its sender on a bound UDP socket until cancelled."""
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(_EchoProtocol, sock=sock)
    try:
        await asyncio.Future()
    finally:
        transport.close()
