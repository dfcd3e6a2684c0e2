"""The default services of a lab host: the test page core, and the shells on real sockets."""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket

import pytest

from vpclab.engines.services import (
    BANNER,
    MAX_HEAD_BYTES,
    BadRequest,
    HttpConnection,
    HttpRequest,
    TestPage as Page,  # aliased so pytest doesn't take it for a test class
    parse_request_head,
    serve_banner,
    serve_test_page,
    serve_udp_echo,
)
from vpclab.engines.io.proxy_protocol import local_header, proxy_header

INSTANCE = {
    "name": "web-1",
    "instance_id": "i-0abc1234def567890",
    "az": "us-east-1a",
    "private_ip": "10.0.1.10",
    "hostname": "ip-10-0-1-10.ec2.internal",
}
CLIENT = ("198.51.100.10", 53314)
# Reference §3.5's PrivateLink header: consumer 172.31.7.113:51442 to the endpoint ENI 172.31.10.31:80.
VPCE = "vpce-08d2bf15fac5001c9"
PP2 = proxy_header(("172.31.7.113", 51442), ("172.31.10.31", 80), vpc_endpoint_id=VPCE)


def exchange(raw: bytes, page: Page = Page(INSTANCE)) -> tuple[bytes, bool]:
    connection = HttpConnection(page, CLIENT)
    return connection.receive(raw), connection.closing


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines), body


# ---------------------------------------------------------------- the sans-IO core


def test_test_page_shows_identity_and_client_address():
    assert Page(INSTANCE).text(CLIENT) == (
        "web-1 i-0abc1234def567890 us-east-1a\n"
        "private-ip: 10.0.1.10\n"
        "hostname: ip-10-0-1-10.ec2.internal\n"
        "client: 198.51.100.10:53314\n"
    )


def test_internet_host_page_shows_name_ip_and_client():
    page = Page({"name": "www", "ip": "203.0.113.80"})
    assert page.text(("203.0.113.5", 40000)) == "www\nip: 203.0.113.80\nclient: 203.0.113.5:40000\n"


def test_custom_message_heads_the_page():
    page = Page(INSTANCE, message="Hello from Provider VPC on Subnet 2")
    assert page.text(CLIENT).splitlines()[0] == "Hello from Provider VPC on Subnet 2"
    assert json.loads(page.json(CLIENT))["message"] == "Hello from Provider VPC on Subnet 2"


def test_ipv6_client_is_bracketed():
    assert Page({"name": "x"}).text(("::1", 80)).endswith("client: [::1]:80\n")


def test_get_root_returns_the_page():
    response, closing = exchange(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
    status, headers, body = split(response)
    assert status == "HTTP/1.1 200 OK"
    assert body == Page(INSTANCE).text(CLIENT).encode()
    assert int(headers["Content-Length"]) == len(body)
    assert not closing


def test_json_path_returns_the_same_as_json():
    status, headers, body = split(exchange(b"GET /json HTTP/1.1\r\n\r\n")[0])
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {**INSTANCE, "client": "198.51.100.10:53314",
                                "client_ip": "198.51.100.10", "client_port": 53314}


def test_query_string_is_ignored():
    assert split(exchange(b"GET /json?x=1 HTTP/1.1\r\n\r\n")[0])[0] == "HTTP/1.1 200 OK"


def test_head_has_headers_but_no_body():
    status, headers, body = split(exchange(b"HEAD / HTTP/1.1\r\n\r\n")[0])
    assert status == "HTTP/1.1 200 OK" and body == b""
    assert int(headers["Content-Length"]) == len(Page(INSTANCE).text(CLIENT).encode())


def test_unknown_path_is_404():
    assert split(exchange(b"GET /admin HTTP/1.1\r\n\r\n")[0])[0] == "HTTP/1.1 404 Not Found"


def test_other_methods_are_405():
    status, headers, _ = split(exchange(b"DELETE / HTTP/1.1\r\n\r\n")[0])
    assert status == "HTTP/1.1 405 Method Not Allowed" and headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("raw", [
    b"garbage\r\n\r\n",
    b"GET /\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\n\r\n",
    b"get / HTTP/1.1\r\n\r\n",
    b"GET http://x/ HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nno-colon\r\n\r\n",
    b"GET / HTTP/1.1\r\n folded: header\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"GET /\xff HTTP/1.1\r\n\r\n",
])
def test_bad_request_is_400_and_closes(raw):
    response, closing = exchange(raw)
    status, headers, _ = split(response)
    assert status == "HTTP/1.1 400 Bad Request"
    assert headers["Connection"] == "close" and closing


def test_unsupported_http_version_is_505():
    assert split(exchange(b"GET / HTTP/2.0\r\n\r\n")[0])[0] == "HTTP/1.1 505 HTTP Version Not Supported"


def test_oversized_request_head_is_431():
    connection = HttpConnection(Page(INSTANCE), CLIENT)
    response = connection.receive(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES)
    assert split(response)[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert connection.closing


def test_connection_close_is_honoured():
    response, closing = exchange(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert split(response)[1]["Connection"] == "close" and closing


def test_http10_closes_unless_keep_alive_is_asked():
    assert exchange(b"GET / HTTP/1.0\r\n\r\n")[1]
    response, closing = exchange(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    assert split(response)[1]["Connection"] == "keep-alive" and not closing


def test_request_with_a_body_closes_after_its_reply():
    assert exchange(b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")[1]


def test_pipelined_requests_are_answered_in_order():
    response, closing = exchange(b"GET /json HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    assert re.findall(rb"HTTP/1\.1 \d{3} [A-Za-z ]+", response) == [
        b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK"]
    assert not closing


def test_request_split_across_reads_is_assembled():
    connection = HttpConnection(Page(INSTANCE), CLIENT)
    assert connection.receive(b"GET / HT") == b""
    assert connection.receive(b"TP/1.1\r\nHost: x\r\n") == b""
    assert connection.receive(b"\r\n").startswith(b"HTTP/1.1 200 OK")


def test_bare_newlines_are_accepted():
    assert exchange(b"GET / HTTP/1.1\nHost: x\n\n")[0].startswith(b"HTTP/1.1 200 OK")


def test_parse_request_head_reads_headers_case_insensitively():
    request = parse_request_head(b"GET /json HTTP/1.1\r\nHOST: web\r\nConnection: Close")
    assert (request.method, request.path, request.header("host")) == ("GET", "/json", "web")
    assert not request.keep_alive
    with pytest.raises(BadRequest):
        parse_request_head(b"")


# ---------------------------------------------------------------- PROXY protocol v2


def test_page_reports_the_proxy_protocol_header_and_its_bytes():
    response, closing = exchange(PP2 + b"GET / HTTP/1.1\r\n\r\n")
    status, _, body = split(response)
    assert status == "HTTP/1.1 200 OK" and not closing
    assert body.decode() == (
        "web-1 i-0abc1234def567890 us-east-1a\n"
        "private-ip: 10.0.1.10\n"
        "hostname: ip-10-0-1-10.ec2.internal\n"
        "client: 198.51.100.10:53314\n"  # the IP header's source, as before
        f"proxy-protocol: source=172.31.7.113:51442 destination=172.31.10.31:80 vpc-endpoint-id={VPCE}\n"
        f"proxy-protocol-hex: {PP2.hex()}\n"
    )


def test_json_page_reports_the_proxy_protocol_header():
    document = json.loads(split(exchange(PP2 + b"GET /json HTTP/1.1\r\n\r\n")[0])[2])
    assert document["client"] == "198.51.100.10:53314"
    assert document["proxy_protocol"] == {
        "source": "172.31.7.113:51442",
        "destination": "172.31.10.31:80",
        "vpc_endpoint_id": VPCE,
        "hex": PP2.hex(),
    }


def test_header_without_endpoint_id_shows_only_the_addresses():
    header = proxy_header(("2001:db8::7", 40000), ("2001:db8::1", 80))
    body = split(exchange(header + b"GET / HTTP/1.1\r\n\r\n")[0])[2].decode()
    assert "proxy-protocol: source=[2001:db8::7]:40000 destination=[2001:db8::1]:80\n" in body


def test_proxy_header_arriving_byte_by_byte_is_assembled():
    connection = HttpConnection(Page(INSTANCE), CLIENT)
    for i in range(len(PP2)):
        assert connection.receive(PP2[i:i + 1]) == b""
    assert connection.proxy_header is not None and connection.proxy_header.vpc_endpoint_id == VPCE
    assert b"proxy-protocol-hex: " + PP2.hex().encode() in connection.receive(b"GET / HTTP/1.1\r\n\r\n")


def test_every_request_on_the_connection_shows_the_header():
    response, _ = exchange(PP2 + b"GET / HTTP/1.1\r\n\r\n" * 2)
    assert response.count(b"proxy-protocol: source=172.31.7.113:51442") == 2


def test_health_check_local_header_is_consumed_silently():
    response, closing = exchange(local_header() + b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    status, _, body = split(response)
    assert status == "HTTP/1.1 200 OK" and closing
    assert body == Page(INSTANCE).text(CLIENT).encode()


def test_malformed_proxy_header_is_a_bad_request():
    garbled = PP2[:12] + b"\x31" + PP2[13:]  # version 3
    response, closing = exchange(garbled + b"GET / HTTP/1.1\r\n\r\n")
    status, headers, body = split(response)
    assert status == "HTTP/1.1 400 Bad Request" and closing
    assert body.startswith(b"bad PROXY protocol header")


def test_proxy_header_only_counts_at_the_start_of_a_connection():
    response, closing = exchange(b"GET / HTTP/1.1\r\n\r\n" + PP2 + b"GET / HTTP/1.1\r\n\r\n")
    assert re.findall(rb"HTTP/1\.1 \d{3}", response) == [b"HTTP/1.1 200", b"HTTP/1.1 400"]
    assert b"proxy-protocol" not in response and closing


def test_leading_blank_lines_are_still_skipped():
    assert exchange(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n")[0].startswith(b"HTTP/1.1 200 OK")


# ---------------------------------------------------------------- the asyncio shells


def listening_socket() -> socket.socket:
    """Bound and listening as the daemon hands it over."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def run_with_server(serve, sock: socket.socket, scenario) -> None:
    async def main() -> None:
        address = sock.getsockname()
        server = asyncio.create_task(serve(sock))
        try:
            await asyncio.wait_for(scenario(address), timeout=10)
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server
        assert sock.fileno() == -1  # closed on the way out

    asyncio.run(main())


def serving_page(identity=INSTANCE, **kw):
    return lambda sock: serve_test_page(sock, identity, **kw)


async def http_get(address, request: bytes) -> tuple[bytes, tuple[str, int]]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    response = await reader.read()  # the server closes after Connection: close
    client = writer.get_extra_info("sockname")[:2]
    writer.close()
    return response, client


def test_test_page_shows_client_address():
    async def scenario(address):
        response, (ip, port) = await http_get(address, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        status, _, body = split(response)
        assert status == "HTTP/1.1 200 OK"
        assert f"client: {ip}:{port}\n".encode() in body
        assert b"private-ip: 10.0.1.10\n" in body

    run_with_server(serving_page(), listening_socket(), scenario)


def test_test_page_reports_a_proxy_protocol_header_from_a_real_connection():
    async def scenario(address):
        reader, writer = await asyncio.open_connection(*address)
        ip, port = writer.get_extra_info("sockname")[:2]
        writer.write(PP2[:50])
        await writer.drain()
        writer.write(PP2[50:] + b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        body = split(await reader.read())[2].decode()
        writer.close()
        assert f"client: {ip}:{port}\n" in body
        assert f"proxy-protocol: source=172.31.7.113:51442 destination=172.31.10.31:80 vpc-endpoint-id={VPCE}\n" in body

    run_with_server(serving_page(), listening_socket(), scenario)


def test_test_page_serves_keep_alive_requests_on_one_connection():
    async def scenario(address):
        reader, writer = await asyncio.open_connection(*address)
        for path in (b"/", b"/json"):
            writer.write(b"GET " + path + b" HTTP/1.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(split(head)[1]["Content-Length"])
            await reader.readexactly(length)
        writer.close()

    run_with_server(serving_page(), listening_socket(), scenario)


def test_test_page_survives_bad_requests_and_resets():
    async def scenario(address):
        response, _ = await http_get(address, b"\x16\x03\x01 not http\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 400 Bad Request")
        _, writer = await asyncio.open_connection(*address)
        writer.write(b"GET / HTTP/1.1\r\n")  # half a request, then a reset
        writer.transport.abort()
        response, _ = await http_get(address, b"GET / HTTP/1.0\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 200 OK")

    run_with_server(serving_page(), listening_socket(), scenario)


def test_slow_client_is_dropped_after_idle_timeout():
    async def scenario(address):
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"GET / HT")  # and never finishes
        assert await reader.read() == b""
        writer.close()

    run_with_server(serving_page(idle_timeout=0.05), listening_socket(), scenario)


def test_stopping_the_service_closes_open_connections():
    async def main():
        sock = listening_socket()
        server = asyncio.create_task(serve_test_page(sock, INSTANCE))
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        with contextlib.suppress(ConnectionError):
            await reader.read()  # the open keep-alive connection ends, by FIN or reset
        assert reader.at_eof()
        writer.close()

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_banner_is_sent_and_connection_closes_after_a_line():
    async def scenario(address):
        reader, writer = await asyncio.open_connection(*address)
        assert await reader.readline() == BANNER
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        assert await reader.read() == b""
        writer.close()

    run_with_server(serve_banner, listening_socket(), scenario)


def test_banner_closes_on_a_silent_client():
    async def scenario(address):
        reader, writer = await asyncio.open_connection(*address)
        assert await reader.read() == BANNER  # banner, then EOF once the timeout passes
        writer.close()

    run_with_server(lambda sock: serve_banner(sock, timeout=0.05), listening_socket(), scenario)


def test_udp_echo_returns_each_datagram_to_its_sender():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))

    async def scenario(address):
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.setblocking(False)
            await loop.sock_sendto(client, b"ping", address)
            assert await loop.sock_recv(client, 100) == b"ping"

    run_with_server(serve_udp_echo, udp, scenario)


def test_page_shows_the_x_forwarded_headers_a_load_balancer_added():
    page = Page({"name": "web-1"})
    text = page.text(("10.0.1.10", 4000), forwarded=(("x-forwarded-for", "100.64.0.9"),))
    assert "x-forwarded-for: 100.64.0.9" in text.splitlines()


def test_not_found_names_the_host_that_answered():
    page = Page({"name": "web-2", "instance_id": "i-2"})
    request = HttpRequest("GET", "/api/x", "HTTP/1.1", ())
    assert page.respond(request, ("10.0.0.1", 1)).body == b"not found on web-2 i-2\n"
