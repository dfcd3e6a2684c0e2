"""The VPC resolver: AWS's answers (reference §7) from the core, and the shell on real sockets."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from vpclab.engines.dns.resolver import (
    MAX_CNAME_HOPS,
    Record,
    Resolver,
    Zone,
    build_public_zone,
    build_vpc_zones,
    ec2_private_hostname,
    serve_dns,
)

INSTANCES = [("ip-10-0-1-10.ec2.internal", "10.0.1.10"), ("ip-10-0-2-20.ec2.internal", "10.0.2.20")]
PUBLIC = {"client.example.net": "198.51.100.10", "www.example.com": "203.0.113.80"}


def a(ip: str, ttl: int = 300) -> list[Record]:
    return [Record("A", ip, ttl)]


def cname(target: str) -> list[Record]:
    return [Record("CNAME", target)]


def vpc_resolver(*private_zones: Zone, hostnames: bool = True) -> Resolver:
    return Resolver(build_vpc_zones("us-east-1", INSTANCES, PUBLIC, hostnames, private_zones))


def query(name: str, qtype: str = "A", *, edns: int | None = None) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    return q


def ask(resolver: Resolver, name: str, qtype: str = "A", **kw) -> DNSRecord:
    wire = resolver.answer(query(name, qtype).pack(), **kw)
    assert wire is not None
    return DNSRecord.parse(wire)


def values(answers) -> list[str]:
    return [answer.value for answer in answers]


# ---------------------------------------------------------------- zone data


def test_instance_hostname_resolves_to_private_ip():
    rcode, answers = vpc_resolver().resolve("ip-10-0-1-10.ec2.internal", "A")
    assert (rcode, values(answers)) == ("NOERROR", ["10.0.1.10"])


def test_hostname_domain_follows_region():
    assert ec2_private_hostname("us-east-1", "10.0.1.10") == "ip-10-0-1-10.ec2.internal"
    assert ec2_private_hostname("eu-west-1", "10.0.1.10") == "ip-10-0-1-10.eu-west-1.compute.internal"
    host = ec2_private_hostname("eu-west-1", "10.0.1.10")
    resolver = Resolver(build_vpc_zones("eu-west-1", [(host, "10.0.1.10")], {}, True))
    assert values(resolver.resolve(host, "A")[1]) == ["10.0.1.10"]


def test_reverse_lookup_of_instance_ip_gives_its_hostname():
    rcode, answers = vpc_resolver().resolve("10.1.0.10.in-addr.arpa", "PTR")
    assert (rcode, values(answers)) == ("NOERROR", ["ip-10-0-1-10.ec2.internal."])


def test_reverse_lookup_of_internet_host_comes_from_public_zone():
    rcode, answers = vpc_resolver().resolve("10.100.51.198.in-addr.arpa", "PTR")
    assert (rcode, values(answers)) == ("NOERROR", ["client.example.net."])


def test_public_names_resolve_inside_the_vpc():
    assert vpc_resolver().resolve("www.example.com", "A") == vpc_resolver().resolve("WWW.example.com.", "A")
    assert values(vpc_resolver().resolve("www.example.com", "A")[1]) == ["203.0.113.80"]


def test_without_dns_hostnames_only_public_names_resolve():
    private = Zone("corp.internal", {"db.corp.internal": a("10.0.3.3")})
    resolver = vpc_resolver(private, hostnames=False)
    assert resolver.resolve("ip-10-0-1-10.ec2.internal", "A") == ("NXDOMAIN", ())
    assert resolver.resolve("10.1.0.10.in-addr.arpa", "PTR") == ("NXDOMAIN", ())
    assert resolver.resolve("db.corp.internal", "A") == ("NXDOMAIN", ())
    assert resolver.resolve("www.example.com", "A")[0] == "NOERROR"


def test_public_resolver_serves_only_public_names():
    internet = Resolver([build_public_zone(PUBLIC)])
    assert values(internet.resolve("client.example.net", "A")[1]) == ["198.51.100.10"]
    assert internet.resolve("ip-10-0-1-10.ec2.internal", "A") == ("NXDOMAIN", ())


# ---------------------------------------------------------------- resolution rules


def test_names_are_case_insensitive():
    zone = Zone("Example.LOCAL", {"Web.Example.Local.": a("10.0.0.5")})
    rcode, answers = Resolver([zone]).resolve("wEB.example.local", "A")
    assert (rcode, values(answers)) == ("NOERROR", ["10.0.0.5"])


def test_most_specific_private_zone_wins():
    outer = Zone("example.local", {"api.svc.example.local": a("10.0.0.1")})
    inner = Zone("svc.example.local", {"api.svc.example.local": a("10.0.0.2")})
    rcode, answers = vpc_resolver(outer, inner).resolve("api.svc.example.local", "A")
    assert (rcode, values(answers)) == ("NOERROR", ["10.0.0.2"])


def test_name_in_zone_without_record_is_nxdomain():
    # The more specific zone matches but lacks the name: no fallback to the outer zone.
    outer = Zone("example.local", {"db.svc.example.local": a("10.0.0.1")})
    inner = Zone("svc.example.local", {"api.svc.example.local": a("10.0.0.2")})
    resolution = vpc_resolver(outer, inner).lookup("db.svc.example.local", "A")
    assert resolution.rcode == "NXDOMAIN"
    assert resolution.answers == ()
    assert [(r.name, r.rtype) for r in resolution.authority] == [("svc.example.local.", "SOA")]


def test_private_zone_hides_public_zone_of_the_same_name():
    private = Zone("example.com", {"internal.example.com": a("10.0.9.9")}, private=True)
    public = Zone("example.com", {"www.example.com": a("203.0.113.80")}, private=False)
    resolver = Resolver([public, private])
    assert values(resolver.resolve("internal.example.com", "A")[1]) == ["10.0.9.9"]
    assert resolver.resolve("www.example.com", "A") == ("NXDOMAIN", ())


def test_existing_name_without_the_type_is_nodata():
    resolution = vpc_resolver().lookup("ip-10-0-1-10.ec2.internal", "AAAA")
    assert (resolution.rcode, resolution.answers) == ("NOERROR", ())
    assert [r.rtype for r in resolution.authority] == ["SOA"]


def test_empty_non_terminal_is_nodata_not_nxdomain():
    zone = Zone("example.local", {"a.b.example.local": a("10.0.0.1")})
    assert Resolver([zone]).resolve("b.example.local", "A") == ("NOERROR", ())


def test_name_matching_no_zone_is_nxdomain():
    resolution = Resolver([Zone("example.local", {})]).lookup("www.example.org", "A")
    assert (resolution.rcode, resolution.authority, resolution.authoritative) == ("NXDOMAIN", (), False)


def test_cname_is_followed_within_our_data():
    zone = Zone("example.local", {
        "www.example.local": cname("web.example.local"),
        "web.example.local": cname("www.example.com"),
    })
    rcode, answers = vpc_resolver(zone).resolve("www.example.local", "A")
    assert rcode == "NOERROR"
    assert [(x.name, x.rtype, x.value) for x in answers] == [
        ("www.example.local.", "CNAME", "web.example.local."),
        ("web.example.local.", "CNAME", "www.example.com."),
        ("www.example.com.", "A", "203.0.113.80"),
    ]


def test_cname_query_returns_the_cname_without_following_it():
    zone = Zone("example.local", {"www.example.local": cname("web.example.local")})
    assert values(Resolver([zone]).resolve("www.example.local", "CNAME")[1]) == ["web.example.local."]


def test_cname_to_missing_name_is_nxdomain_with_the_chain():
    zone = Zone("example.local", {"www.example.local": cname("gone.example.local")})
    rcode, answers = Resolver([zone]).resolve("www.example.local", "A")
    assert (rcode, [x.rtype for x in answers]) == ("NXDOMAIN", ["CNAME"])


def test_cname_loop_is_servfail():
    zone = Zone("example.local", {
        "a.example.local": cname("b.example.local"),
        "b.example.local": cname("A.example.local"),
    })
    assert Resolver([zone]).resolve("a.example.local", "A") == ("SERVFAIL", ())


def test_cname_chain_longer_than_the_limit_is_servfail():
    def chain(hops: int) -> Zone:
        records = {f"n{i}.example.local": cname(f"n{i + 1}.example.local") for i in range(hops)}
        records[f"n{hops}.example.local"] = a("10.0.0.1")
        return Zone("example.local", records)

    assert Resolver([chain(MAX_CNAME_HOPS)]).resolve("n0.example.local", "A")[0] == "NOERROR"
    assert Resolver([chain(MAX_CNAME_HOPS + 1)]).resolve("n0.example.local", "A") == ("SERVFAIL", ())


def test_soa_query_at_apex_answers_the_soa():
    rcode, answers = Resolver([Zone("example.local", {})]).resolve("example.local", "SOA")
    assert (rcode, [x.rtype for x in answers]) == ("NOERROR", ["SOA"])


def test_zone_rejects_bad_data():
    with pytest.raises(ValueError):
        Zone("example.local", {"www.example.com": a("10.0.0.1")})  # outside the zone
    with pytest.raises(ValueError):
        Zone("example.local", {"www.example.local": cname("x.example.local") + a("10.0.0.1")})
    with pytest.raises(ValueError):
        Zone("example.local", {"example.local": cname("x.example.local")})  # CNAME at the apex
    with pytest.raises(ValueError):
        Record("A", "10.0.0.256")
    with pytest.raises(ValueError):
        Record("MX", "mail.example.local")
    with pytest.raises(ValueError):
        Resolver([Zone("example.local", {}), Zone("EXAMPLE.local.", {})])


def test_replacing_zones_changes_answers_live():
    resolver = Resolver([Zone("example.local", {"db.example.local": a("10.0.0.1")})])
    resolver.replace_zones([Zone("example.local", {"db.example.local": a("10.0.0.2")})])
    assert values(resolver.resolve("db.example.local", "A")[1]) == ["10.0.0.2"]


def test_invalid_zone_set_leaves_the_old_one_in_place():
    resolver = Resolver([Zone("example.local", {"db.example.local": a("10.0.0.1")})])
    with pytest.raises(ValueError):
        resolver.replace_zones([Zone("x.local", {}), Zone("x.local", {})])
    assert values(resolver.resolve("db.example.local", "A")[1]) == ["10.0.0.1"]


# ---------------------------------------------------------------- wire format


def test_reply_echoes_id_and_question_and_sets_aa_and_ra():
    q = query("IP-10-0-1-10.ec2.internal")
    reply = DNSRecord.parse(vpc_resolver().answer(q.pack()))
    assert reply.header.id == q.header.id
    assert reply.header.qr and reply.header.aa and reply.header.ra and reply.header.rd
    assert str(reply.q.qname) == "IP-10-0-1-10.ec2.internal."
    assert [str(rr.rdata) for rr in reply.rr] == ["10.0.1.10"]


def test_nxdomain_reply_carries_the_zone_soa_in_authority():
    reply = ask(vpc_resolver(), "nope.ec2.internal")
    assert reply.header.rcode == RCODE.NXDOMAIN and reply.header.aa
    assert [(str(rr.rname), rr.rtype) for rr in reply.auth] == [("ec2.internal.", QTYPE.SOA)]


def test_name_matching_no_zone_is_nxdomain_without_aa():
    reply = ask(Resolver([]), "www.example.org")
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert not reply.header.aa and reply.header.ra


def test_malformed_query_is_counted_not_fatal():
    resolver = vpc_resolver()
    for garbage in (b"", b"\x00", b"\xff" * 11, query("x.example.com").pack()[:-3], b"\x12\x34" + b"\xc0" * 40):
        assert resolver.answer(garbage) is None
    assert resolver.counters.malformed == 5
    assert resolver.counters.queries == 0
    assert ask(resolver, "www.example.com").header.rcode == RCODE.NOERROR


def test_responses_are_never_answered():
    resolver = vpc_resolver()
    response = query("www.example.com").reply()
    assert resolver.answer(response.pack()) is None
    assert resolver.counters.malformed == 1


def test_non_query_opcode_is_notimp():
    q = query("www.example.com")
    q.header.opcode = 4  # NOTIFY
    assert ask_raw(vpc_resolver(), q).header.rcode == RCODE.NOTIMP


def test_query_without_exactly_one_question_is_formerr():
    q = query("www.example.com")
    q.add_question(*query("client.example.net").questions)
    assert ask_raw(vpc_resolver(), q).header.rcode == RCODE.FORMERR


def test_non_internet_class_is_refused():
    q = DNSRecord.question("version.bind", "TXT", "CH")
    assert ask_raw(vpc_resolver(), q).header.rcode == RCODE.REFUSED


def ask_raw(resolver: Resolver, q: DNSRecord) -> DNSRecord:
    return DNSRecord.parse(resolver.answer(q.pack()))


def test_counters_count_queries_and_answers_by_rcode():
    resolver = vpc_resolver()
    ask(resolver, "www.example.com")
    ask(resolver, "nope.ec2.internal")
    ask(resolver, "ip-10-0-1-10.ec2.internal", "AAAA")
    assert resolver.counters.snapshot() == {
        "queries": 3, "malformed": 0, "truncated": 0, "answers": {"NOERROR": 2, "NXDOMAIN": 1},
    }


def big_txt_resolver() -> Resolver:
    records = [Record("TXT", f"{i:02d}" + "x" * 200) for i in range(4)]
    return Resolver([Zone("example.local", {"big.example.local": records})])


def test_udp_answer_over_512_bytes_without_edns_is_truncated():
    resolver = big_txt_resolver()
    q = query("big.example.local", "TXT")
    wire = resolver.answer(q.pack())
    reply = DNSRecord.parse(wire)
    assert len(wire) <= 512
    assert reply.header.tc and reply.rr == []
    assert str(reply.q.qname) == "big.example.local."
    assert resolver.counters.truncated == 1


def test_large_answer_fits_with_edns_and_over_tcp():
    resolver = big_txt_resolver()
    over_edns = DNSRecord.parse(resolver.answer(query("big.example.local", "TXT", edns=1232).pack()))
    over_tcp = DNSRecord.parse(resolver.answer(query("big.example.local", "TXT").pack(), tcp=True))
    for reply in (over_edns, over_tcp):
        assert not reply.header.tc and len(reply.rr) == 4
    assert [rr.rtype for rr in over_edns.ar] == [QTYPE.OPT]


# ---------------------------------------------------------------- the asyncio shell


def bound_sockets() -> tuple[socket.socket, socket.socket]:
    """Bound as the daemon does it, then handed over."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    return udp, tcp


async def udp_exchange(address: tuple, payload: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.setblocking(False)
        await loop.sock_sendto(client, payload, address)
        return await loop.sock_recv(client, 65535)


async def tcp_exchange(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, payload: bytes) -> bytes:
    writer.write(struct.pack("!H", len(payload)) + payload)
    (length,) = struct.unpack("!H", await reader.readexactly(2))
    return await reader.readexactly(length)


def run_with_dns_server(resolver: Resolver, scenario) -> None:
    async def main() -> None:
        udp, tcp = bound_sockets()
        addresses = udp.getsockname(), tcp.getsockname()
        server = asyncio.create_task(serve_dns(resolver, [udp], [tcp]))
        try:
            await asyncio.wait_for(scenario(*addresses), timeout=10)
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server
        assert udp.fileno() == -1 and tcp.fileno() == -1  # closed on the way out

    asyncio.run(main())


def test_udp_and_tcp_queries_are_answered_on_handed_over_sockets():
    resolver = vpc_resolver()

    async def scenario(udp_address, tcp_address):
        reply = DNSRecord.parse(await udp_exchange(udp_address, query("www.example.com").pack()))
        assert [str(rr.rdata) for rr in reply.rr] == ["203.0.113.80"]
        reader, writer = await asyncio.open_connection(*tcp_address)
        for name, ip in INSTANCES:  # several queries on one connection
            reply = DNSRecord.parse(await tcp_exchange(writer, reader, query(name).pack()))
            assert [str(rr.rdata) for rr in reply.rr] == [ip]
        writer.close()

    run_with_dns_server(resolver, scenario)
    assert resolver.counters.queries == 3


def test_udp_server_survives_malformed_datagrams():
    resolver = vpc_resolver()

    async def scenario(udp_address, _):
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.setblocking(False)
            await loop.sock_sendto(client, b"\xde\xad\xbe\xef", udp_address)
            await loop.sock_sendto(client, query("www.example.com").pack(), udp_address)
            # The only reply is to the good query, so the garbage was dropped, not answered.
            reply = DNSRecord.parse(await loop.sock_recv(client, 65535))
        assert reply.header.rcode == RCODE.NOERROR

    run_with_dns_server(resolver, scenario)
    assert resolver.counters.malformed == 1


def test_tcp_server_survives_garbage_and_dead_clients():
    resolver = vpc_resolver()

    async def scenario(_, tcp_address):
        _, writer = await asyncio.open_connection(*tcp_address)
        writer.write(b"\x00\x04\xde\xad\xbe\xef")  # a framed but malformed message
        writer.close()
        _, writer = await asyncio.open_connection(*tcp_address)
        writer.write(b"\x01\x00half")  # promises 256 bytes, then vanishes with a reset
        writer.transport.abort()
        reader, writer = await asyncio.open_connection(*tcp_address)
        reply = DNSRecord.parse(await tcp_exchange(writer, reader, query("www.example.com").pack()))
        assert reply.header.rcode == RCODE.NOERROR
        writer.close()

    run_with_dns_server(resolver, scenario)


def test_tcp_connection_is_closed_after_a_malformed_message():
    async def scenario(_, tcp_address):
        reader, writer = await asyncio.open_connection(*tcp_address)
        writer.write(b"\x00\x04\xde\xad\xbe\xef")
        assert await reader.read() == b""
        writer.close()

    run_with_dns_server(vpc_resolver(), scenario)


def test_zones_swapped_live_are_served_at_once():
    resolver = Resolver([Zone("example.local", {"db.example.local": a("10.0.0.1")})])

    async def scenario(udp_address, _):
        resolver.replace_zones([Zone("example.local", {"db.example.local": a("10.0.0.2")})])
        reply = DNSRecord.parse(await udp_exchange(udp_address, query("db.example.local").pack()))
        assert [str(rr.rdata) for rr in reply.rr] == ["10.0.0.2"]

    run_with_dns_server(resolver, scenario)
