"""The Amazon-provided DNS server of a VPC (base + 2), and the lab's public resolver.

A sans-IO core (`Zone`, `Resolver`) answers DNS messages from zone data; a thin
asyncio shell (`serve_dns`) runs it on sockets the daemon has already bound.
Behaviour follows reference/aws-behaviour.md §7:

- names are case-insensitive, and the most specific zone containing the name wins;
  on a tie a private zone beats a public one (split-horizon);
- a matching zone without the name is NXDOMAIN with the zone's SOA, with no
  fallback to a less specific zone; the name without the type is NOERROR/NODATA;
- CNAMEs are followed within our zones, up to 8 hops; a loop or a longer chain is
  SERVFAIL;
- a name in no zone is NXDOMAIN: the lab has no internet to recurse into. The
  public "internet" is a zone at the root (`build_public_zone`), so with it loaded
  every name is in some zone.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple, Sequence

from dnslib import (
    AAAA,
    CLASS,
    CNAME,
    EDNS0,
    OPCODE,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SOA,
    TXT,
    A,
    DNSHeader,
    DNSLabel,
    DNSRecord,
)

log = logging.getLogger(__name__)

RECORD_TYPES = frozenset({"A", "AAAA", "CNAME", "TXT", "PTR"})
MAX_CNAME_HOPS = 8
TXT_MAX_CHARS = 4000  # Route 53's limit

# The SOA that Route 53 gives every hosted zone; its TTL bounds negative caching.
SOA_MNAME = "ns-1536.awsdns-00.co.uk."
SOA_RNAME = "awsdns-hostmaster.amazon.com."
SOA_TIMES = (1, 7200, 900, 1209600, 86400)  # serial refresh retry expire minimum
SOA_TTL = 900

UDP_PAYLOAD_WITHOUT_EDNS = 512
UDP_PAYLOAD_MAX = 4096  # what we advertise and honour over EDNS
TCP_IDLE_TIMEOUT = 10.0

# Labels are compared as lowercased bytes, so a label holding a dot or
# non-ASCII bytes can never alias another name.
Labels = tuple[bytes, ...]


def _labels(name: str | DNSLabel) -> Labels:
    if isinstance(name, str) and name.strip() in ("", "."):
        return ()
    return tuple(label.lower() for label in DNSLabel(name).label)


def _text(labels: Labels) -> str:
    return ".".join(label.decode("ascii", "backslashreplace") for label in labels) + "."


def _within(labels: Labels, apex: Labels) -> bool:
    return len(labels) >= len(apex) and labels[len(labels) - len(apex):] == apex


def _check_name(value: str) -> None:
    labels = DNSLabel(value).label
    if not labels or any(not 0 < len(l) <= 63 for l in labels) or sum(len(l) + 1 for l in labels) > 254:
        raise ValueError(f"not a valid DNS name: {value!r}")


@dataclass(frozen=True)
class Record:
    """One resource record's data: an address, a name (made absolute) or TXT text."""

    rtype: str
    value: str
    ttl: int = 300

    def __post_init__(self) -> None:
        object.__setattr__(self, "rtype", self.rtype.upper())
        if self.rtype not in RECORD_TYPES:
            raise ValueError(f"unsupported record type {self.rtype!r}")
        if not 0 <= self.ttl < 2**31:
            raise ValueError(f"TTL out of range: {self.ttl}")
        if self.rtype == "A":
            object.__setattr__(self, "value", str(ipaddress.IPv4Address(self.value)))
        elif self.rtype == "AAAA":
            object.__setattr__(self, "value", str(ipaddress.IPv6Address(self.value)))
        elif self.rtype in ("CNAME", "PTR"):
            _check_name(self.value)
            if not self.value.endswith("."):  # names are absolute everywhere in the API
                object.__setattr__(self, "value", self.value + ".")
        elif len(self.value) > TXT_MAX_CHARS:
            raise ValueError(f"TXT value longer than {TXT_MAX_CHARS} characters")


@dataclass(frozen=True)
class Zone:
    """A hosted zone: `records` maps absolute owner names to their records."""

    name: str
    records: Mapping[str, Sequence[Record]]
    private: bool = True
    _rrsets: Mapping[Labels, tuple[Record, ...]] = field(init=False, repr=False, compare=False)
    _names: frozenset[Labels] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        apex = _labels(self.name)
        rrsets: dict[Labels, list[Record]] = {}
        for owner, records in self.records.items():
            key = _labels(owner)
            if not _within(key, apex):
                raise ValueError(f"{owner!r} is not in zone {self.name!r}")
            rrsets.setdefault(key, []).extend(records)
        for key, records in rrsets.items():
            if any(r.rtype == "CNAME" for r in records) and (len(records) > 1 or key == apex):
                raise ValueError(f"a CNAME at {_text(key)} must stand alone, below the apex")
        # Every ancestor of an owner exists too (an empty non-terminal): NODATA, not NXDOMAIN.
        names = {apex}
        for key in rrsets:
            names.update(key[i:] for i in range(len(key) - len(apex)))
        object.__setattr__(self, "name", _text(apex))
        object.__setattr__(self, "_rrsets", {k: tuple(v) for k, v in rrsets.items()})
        object.__setattr__(self, "_names", frozenset(names))

    @property
    def apex(self) -> Labels:
        return _labels(self.name)

    def has_name(self, labels: Labels) -> bool:
        return labels in self._names

    def rrset(self, labels: Labels) -> tuple[Record, ...]:
        return self._rrsets.get(labels, ())

    def soa(self) -> Answer:
        value = " ".join([SOA_MNAME, SOA_RNAME, *map(str, SOA_TIMES)])
        return Answer(self.name, "SOA", value, SOA_TTL)


class Answer(NamedTuple):
    name: str  # absolute, with the trailing dot
    rtype: str
    value: str
    ttl: int


@dataclass(frozen=True)
class Resolution:
    rcode: str  # NOERROR, NXDOMAIN, SERVFAIL
    answers: tuple[Answer, ...] = ()
    authority: tuple[Answer, ...] = ()  # the SOA on NXDOMAIN and NODATA
    authoritative: bool = False  # the query name is in one of our zones


@dataclass
class DnsCounters:
    queries: int = 0
    malformed: int = 0  # dropped without an answer
    truncated: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # by rcode name

    def snapshot(self) -> dict[str, object]:
        return {
            "queries": self.queries,
            "malformed": self.malformed,
            "truncated": self.truncated,
            "answers": dict(self.answers),
        }


class Resolver:
    """Answers queries from a set of zones; `replace_zones` swaps them live."""

    def __init__(self, zones: Iterable[Zone] = ()) -> None:
        self.counters = DnsCounters()
        self._zones: dict[tuple[Labels, bool], Zone] = {}
        self.replace_zones(zones)

    @property
    def zones(self) -> tuple[Zone, ...]:
        return tuple(self._zones.values())

    def replace_zones(self, zones: Iterable[Zone]) -> None:
        """Validate the new set fully before swapping, so a bad set changes nothing."""
        index: dict[tuple[Labels, bool], Zone] = {}
        for zone in zones:
            key = (zone.apex, zone.private)
            if key in index:
                kind = "private" if zone.private else "public"
                raise ValueError(f"two {kind} zones named {zone.name}")
            index[key] = zone
        self._zones = index

    def _zone_for(self, labels: Labels) -> Zone | None:
        for i in range(len(labels) + 1):
            suffix = labels[i:]
            zone = self._zones.get((suffix, True)) or self._zones.get((suffix, False))
            if zone is not None:
                return zone
        return None

    def lookup(self, qname: str | DNSLabel, qtype: str) -> Resolution:
        """Resolve from our zones alone; `qtype` is a type name such as "A" or "ANY"."""
        qtype = qtype.upper()
        labels = _labels(qname)
        owner = str(qname) if isinstance(qname, DNSLabel) else _text(labels)
        first = self._zone_for(labels)
        authoritative = first is not None
        answers: list[Answer] = []
        seen = {labels}
        zone = first
        for hop in range(MAX_CNAME_HOPS + 1):
            if hop:
                zone = self._zone_for(labels)
            if zone is None:
                return Resolution("NXDOMAIN", tuple(answers), (), authoritative)
            if not zone.has_name(labels):
                return Resolution("NXDOMAIN", tuple(answers), (zone.soa(),), authoritative)
            rrset = zone.rrset(labels)
            apex_soa = labels == zone.apex and qtype in ("SOA", "ANY")
            if apex_soa:
                answers.append(zone.soa()._replace(name=owner))
            matches = [r for r in rrset if r.rtype == qtype or qtype == "ANY"]
            answers += [Answer(owner, r.rtype, r.value, r.ttl) for r in matches]
            if matches or apex_soa:
                return Resolution("NOERROR", tuple(answers), (), authoritative)
            cname = next((r for r in rrset if r.rtype == "CNAME"), None)
            if cname is None:
                return Resolution("NOERROR", tuple(answers), (zone.soa(),), authoritative)
            answers.append(Answer(owner, "CNAME", cname.value, cname.ttl))
            labels = _labels(cname.value)
            owner = _text(labels)
            if labels in seen:
                log.debug("CNAME loop at %s", owner)
                return Resolution("SERVFAIL", (), (), authoritative)
            seen.add(labels)
        log.debug("CNAME chain from %s is longer than %d", qname, MAX_CNAME_HOPS)
        return Resolution("SERVFAIL", (), (), authoritative)

    def resolve(self, qname: str, qtype: str) -> tuple[str, tuple[Answer, ...]]:
        resolution = self.lookup(qname, qtype)
        return resolution.rcode, resolution.answers

    def answer(self, query: bytes, *, tcp: bool = False) -> bytes | None:
        """The wire reply to one DNS message, or None when it must be dropped."""
        try:
            request = DNSRecord.parse(query)
        except Exception:  # dnslib raises a zoo of types on bad input
            self.counters.malformed += 1
            return None
        if request.header.qr:
            # Answering responses would let two servers ping-pong forever.
            self.counters.malformed += 1
            return None
        self.counters.queries += 1

        reply = DNSRecord(
            DNSHeader(id=request.header.id, qr=1, opcode=request.header.opcode,
                      rd=request.header.rd, ra=1),
            q=request.q if len(request.questions) == 1 else None,
        )
        edns = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
        if edns is not None:
            reply.add_ar(EDNS0(udp_len=UDP_PAYLOAD_MAX))

        if request.header.opcode != OPCODE.QUERY:
            reply.header.rcode = RCODE.NOTIMP
        elif len(request.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
        elif request.q.qclass != CLASS.IN:
            reply.header.rcode = RCODE.REFUSED
        else:
            resolution = self.lookup(request.q.qname, QTYPE[request.q.qtype])
            reply.header.rcode = getattr(RCODE, resolution.rcode)
            reply.header.aa = int(resolution.authoritative and resolution.rcode != "SERVFAIL")
            for a in resolution.answers:
                reply.add_answer(_to_rr(a))
            for a in resolution.authority:
                reply.add_auth(_to_rr(a))
        self.counters.answers[RCODE[reply.header.rcode]] += 1

        wire = reply.pack()
        if len(wire) > _size_limit(edns, tcp):
            self.counters.truncated += 1
            wire = _truncated(reply).pack()
        return wire


def _size_limit(edns: RR | None, tcp: bool) -> int:
    if tcp:
        return 0xFFFF  # the 2-byte length prefix
    if edns is None:
        return UDP_PAYLOAD_WITHOUT_EDNS
    # An OPT record carries the client's UDP payload size in its CLASS field.
    return min(max(edns.rclass, UDP_PAYLOAD_WITHOUT_EDNS), UDP_PAYLOAD_MAX)


def _truncated(reply: DNSRecord) -> DNSRecord:
    """TC set and the records dropped; unlike dnslib's `truncate`, keep the question."""
    header = DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap)
    header.tc = 1
    short = DNSRecord(header, q=reply.q if reply.questions else None)
    short.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    return short


def _to_rr(answer: Answer) -> RR:
    rtype, value = answer.rtype, answer.value
    if rtype == "A":
        rdata = A(value)
    elif rtype == "AAAA":
        rdata = AAAA(value)
    elif rtype == "CNAME":
        rdata = CNAME(value)
    elif rtype == "PTR":
        rdata = PTR(value)
    elif rtype == "TXT":
        raw = value.encode()
        rdata = TXT([raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""])
    elif rtype == "SOA":
        mname, rname, *times = value.split()
        rdata = SOA(mname, rname, tuple(int(t) for t in times))
    else:
        raise ValueError(f"cannot encode {rtype}")
    return RR(answer.name, getattr(QTYPE, rtype), rdata=rdata, ttl=answer.ttl)


# ---------------------------------------------------------------- zone data


def instance_hostname_domain(region: str) -> str:
    """us-east-1 keeps the legacy ec2.internal; other Regions use <region>.compute.internal."""
    return "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"


def ec2_private_hostname(region: str, ip: str) -> str:
    """The IP-based private DNS name AWS gives an instance, e.g. ip-10-0-1-10.ec2.internal."""
    dashed = str(ipaddress.IPv4Address(ip)).replace(".", "-")
    return f"ip-{dashed}.{instance_hostname_domain(region)}"


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer


AWS_NAME_TTL = 60  # ELB and endpoint names (reference §3.1)


def build_public_zone(public_names: Mapping[str, str], ttl: int = 300,
                      aws_names: Mapping[str, Sequence[str]] | None = None) -> Zone:
    """The lab's internet: one public zone at the root, with A and reverse PTR records.

    `aws_names` are the public names AWS gives load balancers and endpoints: A
    records only, TTL 60 (an internal NLB's name resolves to private IPs from
    anywhere, as at AWS). This zone alone also serves the internet hosts' own resolver.
    """
    records: dict[str, list[Record]] = {}
    for name, ip in public_names.items():
        records.setdefault(name, []).append(Record("A", ip, ttl))
        records.setdefault(reverse_name(ip), []).append(Record("PTR", name, ttl))
    for name, addresses in (aws_names or {}).items():
        records.setdefault(name, []).extend(Record("A", ip, AWS_NAME_TTL) for ip in addresses)
    return Zone(".", records, private=False)


def build_vpc_zones(
    region: str,
    instances: Iterable[tuple[str, str]],
    public_names: Mapping[str, str],
    enable_dns_hostnames: bool,
    private_zones: Iterable[Zone] = (),
    aws_names: Mapping[str, Sequence[str]] | None = None,
) -> list[Zone]:
    """The zones the resolver of one VPC serves.

    `instances` is (private DNS hostname, private IPv4) per instance. AWS documents
    that the resolver resolves the Amazon-provided private hostnames, and that
    private hosted zones work, only when both enableDnsSupport and
    enableDnsHostnames are true; the reverse-lookup rules are likewise created
    only with enableDnsHostnames. So with hostnames off, only public names
    resolve. With enableDnsSupport off there is no resolver at all: the daemon
    must not serve base + 2, so queries time out as at AWS.
    """
    zones = [build_public_zone(public_names, aws_names=aws_names)]
    if not enable_dns_hostnames:
        return zones
    domain = instance_hostname_domain(region)
    forward: dict[str, list[Record]] = {}
    reverse: dict[str, dict[str, list[Record]]] = {}
    for hostname, ip in instances:
        forward.setdefault(hostname, []).append(Record("A", str(ip), 60))
        ptr = reverse_name(str(ip))
        # One reverse zone per /24 that holds instances: narrow, so that it hides
        # no public PTRs beyond those /24s.
        reverse.setdefault(ptr.split(".", 1)[1], {}).setdefault(ptr, []).append(
            Record("PTR", hostname, 60))
    zones.append(Zone(domain, forward, private=True))
    zones += [Zone(name, records, private=True) for name, records in reverse.items()]
    zones += private_zones
    return zones


# ---------------------------------------------------------------- asyncio shell


class _DnsDatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        reply = self.resolver.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from clients that went away; nothing to do.
        log.debug("DNS UDP error: %s", exc)


async def _read_dns_message(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """The next length-prefixed message, or None at the end of the stream."""
    try:
        async with asyncio.timeout(timeout):
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None


async def _serve_dns_stream(
    resolver: Resolver,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    idle_timeout: float,
) -> None:
    """RFC 7766: length-prefixed messages, several per connection, answered in order."""
    try:
        while (query := await _read_dns_message(reader, idle_timeout)) is not None:
            reply = resolver.answer(query, tcp=True)
            if reply is None:
                break  # the stream can't be trusted to be in sync any more
            writer.write(struct.pack("!H", len(reply)) + reply)
            async with asyncio.timeout(idle_timeout):
                await writer.drain()
        writer.close()
        async with asyncio.timeout(idle_timeout):
            await writer.wait_closed()
    except (ConnectionError, TimeoutError, OSError):
        pass
    finally:
        writer.transport.abort()  # drops what a stuck client never read; no-op once closed


async def serve_dns(
    resolver: Resolver,
    udp_socks: Sequence[socket.socket] = (),
    tcp_socks: Sequence[socket.socket] = (),
    *,
    tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
) -> None:
    """Serve `resolver` on already-bound sockets until cancelled.

    The sockets are owned from here on and closed on the way out, together with
    any open TCP connections. Swap zones with `resolver.replace_zones`.
    """
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []
    servers: list[asyncio.Server] = []
    connections: set[asyncio.Task] = set()

    async def on_tcp_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await _serve_dns_stream(resolver, reader, writer, tcp_idle_timeout)
        finally:
            connections.discard(task)

    try:
        for sock in udp_socks:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _DnsDatagramProtocol(resolver), sock=sock)
            transports.append(transport)
        for sock in tcp_socks:
            servers.append(await asyncio.start_server(on_tcp_connection, sock=sock))
        await asyncio.Future()
    finally:
        for transport in transports:
            transport.close()
        for server in servers:
            server.close()
        for task in list(connections):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*connections, return_exceptions=True)
