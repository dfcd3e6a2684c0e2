"""Compile transit gateways: one router namespace per gateway, with a veth into each VPC
router per attachment subnet (AZ), as every other ENI has.

Inside the gateway's namespace:
- the route table is picked by the ingress attachment: `ip rule iif <link>` per attachment
  link, and the table holds the route table's effective routes (model.transit_gateway), so
  longest prefix match, static over propagated, blackholes and the overlap rule are AWS's;
- the egress AZ: the AZ the packet came in on when the destination attachment has it (AZ
  affinity); with appliance mode on the destination attachment, one AZ per flow by a flow
  hash. The hash is taken once per connection (`ct state new`) into its conntrack mark, so
  the reply, in the same conntrack entry, carries the same mark; `ip rule fwmark` then picks
  one of the per-(ingress AZ, hash) tables, whose routes leave by that AZ. Changing appliance
  mode, routes or propagations changes routes only, so the fabric applies it live;
- MTU 8,500: the gateway's side of each veth has that MTU, and a veth drops a frame longer
  than the receiving side's MTU, so a larger packet is dropped as at AWS (no ICMP); TCP's MSS
  is clamped to it, as the gateway does.
"""
from __future__ import annotations

from ipaddress import IPv4Address

from vpclab.model.resources import Lab, TransitGatewayAttachment, Vpc
from vpclab.model.transit_gateway import MTU, effective_routes, route_table_of
from vpclab.plan.common import BASE_SYSCTLS, FORWARDING, Eni, ifname_for, tgw_ns, tgw_owner
from vpclab.plan.wiring import Namespace, Wiring

FIRST_TABLE = 1000  # + 100 * route table index + 10 * ingress AZ index + flow hash bucket
# The mark of a flow's hash bucket (1..buckets) fits the low bits; no other mark is set here.


def link_names(lab: Lab) -> dict[tuple[str, str], str]:
    """(attachment, AZ) -> the gateway's side of its veth, unique within the gateway's namespace."""
    names: dict[tuple[str, str], str] = {}
    taken: dict[str, set[str]] = {}
    for a in lab.transit_gateway_attachments.values():
        used = taken.setdefault(a.transit_gateway, {"lo"})
        for eni in a.enis:
            names[(a.name, eni.az)] = ifname_for("", f"{a.name}-{eni.az[-1]}", used)
    return names


def attachment_enis(lab: Lab, vpc: Vpc, taken: set[str]) -> list[Eni]:
    """The ENIs transit gateways place in the VPC's attachment subnets, as its router sees them:
    no security groups, no source/destination check (the gateway forwards)."""
    names = link_names(lab)
    enis = []
    for a in lab.transit_gateway_attachments.values():
        if a.vpc != vpc.name:
            continue
        for eni in a.enis:
            enis.append(Eni(eni.id, tgw_owner(a.transit_gateway, eni.az), tgw_ns(a.transit_gateway),
                            ifname_for("t-", f"{a.name}-{eni.az[-1]}", taken), eni.ip, lab.subnets[eni.subnet],
                            (), False, owner_ifname=names[(a.name, eni.az)]))
    return enis


def zones(lab: Lab, tgw: str) -> list[str]:
    """Every AZ any of the gateway's attachments has, sorted."""
    return sorted({e.az for a in lab.transit_gateway_attachments.values() if a.transit_gateway == tgw
                   for e in a.enis})


def buckets(lab: Lab, tgw: str) -> int:
    """Flow hash buckets: the most AZs one attachment has (1..6)."""
    return max((len(a.enis) for a in lab.transit_gateway_attachments.values() if a.transit_gateway == tgw),
               default=1)


def egress_az(attachment: TransitGatewayAttachment, ingress_az: str, bucket: int) -> str:
    """The AZ a packet leaves the gateway by into `attachment`: where it came in if the attachment
    has that AZ and appliance mode is off; else one AZ by the flow's hash bucket (1-based)."""
    azs = [e.az for e in attachment.enis]
    if not attachment.appliance_mode_support and ingress_az in azs:
        return ingress_az
    return azs[(bucket - 1) % len(azs)]


def forward(lab: Lab, ingress: str, ingress_az: str, destination: IPv4Address,
            bucket: int = 1) -> tuple[str, str] | None:
    """Where the gateway sends a packet that came in by attachment `ingress` in `ingress_az`:
    (attachment, AZ), or None when it drops it (no route table, no route, or a blackhole)."""
    rt = route_table_of(lab, ingress)
    if rt is None:
        return None
    matches = [r for r in effective_routes(lab, rt.name) if destination in r.destination]
    route = max(matches, key=lambda r: r.destination.prefixlen, default=None)
    if route is None or route.attachment is None:
        return None
    attachment = lab.transit_gateway_attachments[route.attachment]
    return attachment.name, egress_az(attachment, ingress_az, bucket)


def table_number(lab: Lab, route_table: str, az: str, bucket: int) -> int:
    rt = lab.transit_gateway_route_tables[route_table]
    index = [n for n, t in lab.transit_gateway_route_tables.items() if t.transit_gateway == rt.transit_gateway]
    return FIRST_TABLE + 100 * index.index(route_table) + 10 * zones(lab, rt.transit_gateway).index(az) + bucket


def transit_gateways(lab: Lab) -> Wiring:
    return Wiring(tuple(_gateway(lab, name) for name in lab.transit_gateways), ())


def _gateway(lab: Lab, tgw: str) -> Namespace:
    names = link_names(lab)
    attachments = [a for a in lab.transit_gateway_attachments.values() if a.transit_gateway == tgw]
    n = buckets(lab, tgw)
    batch = ["link set lo up"]
    pref = 1000
    for a in attachments:
        rt = route_table_of(lab, a.name)
        for eni in a.enis:
            ifname = names[(a.name, eni.az)]
            batch += [f"link set {ifname} mtu {MTU}", f"link set {ifname} up", f"addr add {eni.ip}/32 dev {ifname}"]
            if rt is None:
                continue  # not associated: dropped by the last rule
            for bucket in range(2, n + 1):
                batch.append(f"rule add pref {pref} iif {ifname} fwmark {bucket} "
                             f"lookup {table_number(lab, rt.name, eni.az, bucket)}")
                pref += 1
            batch.append(f"rule add pref {pref} iif {ifname} lookup {table_number(lab, rt.name, eni.az, 1)}")
            pref += 1
    batch.append("rule add pref 30000 blackhole")  # what no route table routes is dropped
    for rt in (t for t in lab.transit_gateway_route_tables.values() if t.transit_gateway == tgw):
        batch += route_table_lines(lab, rt.name)
    return Namespace(name=tgw_ns(tgw), kind="tgw", sysctls=BASE_SYSCTLS + FORWARDING, ip_batch=tuple(batch),
                     nft=_ruleset(n))


def route_table_lines(lab: Lab, route_table: str) -> list[str]:
    """A route table's effective routes, once per (ingress AZ, flow hash bucket)."""
    rt = lab.transit_gateway_route_tables[route_table]
    names = link_names(lab)
    lines = []
    for az in zones(lab, rt.transit_gateway):
        for bucket in range(1, buckets(lab, rt.transit_gateway) + 1):
            table = table_number(lab, rt.name, az, bucket)
            for route in effective_routes(lab, rt.name):
                if route.attachment is None:
                    lines.append(f"route add blackhole {route.destination} table {table}")
                    continue
                attachment = lab.transit_gateway_attachments[route.attachment]
                out = egress_az(attachment, az, bucket)
                subnet = lab.subnets[attachment.eni_in(out).subnet]
                lines.append(f"route add {route.destination} via {subnet.router_ip} "
                             f"dev {names[(attachment.name, out)]} onlink table {table}")
    return lines


def _ruleset(n: int) -> str:
    return f"""table inet tgw {{
\tchain prerouting {{
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tmeta nfproto ipv6 drop
\t\tct state new meta l4proto {{ tcp, udp }} ct mark set jhash ip saddr . ip daddr . meta l4proto . th sport . th dport mod {n} offset 1
\t\tct state new ct mark 0 ct mark set jhash ip saddr . ip daddr . meta l4proto mod {n} offset 1
\t\tmeta mark set ct mark
\t}}
\tchain input {{
\t\ttype filter hook input priority filter; policy drop;
\t}}
\tchain forward {{
\t\ttype filter hook forward priority mangle; policy accept;
\t\ttcp flags syn tcp option maxseg size set rt mtu comment "MSS clamped to the {MTU}-byte MTU (never raised)"
\t}}
}}
"""


def vpc_route(tgw: str, az: str | None, destination, table: int, by_owner: dict[str, Eni]) -> str:
    """A VPC route to a transit gateway, for the subnets of one AZ: to the attachment's ENI in
    that AZ, or dropped where the attachment has none (the gateway is unreachable from there)."""
    eni = by_owner.get(tgw_owner(tgw, az)) if az is not None else None
    if eni is None:
        return f"route add blackhole {destination} table {table}"
    return f"route add {destination} via {eni.ip} dev {eni.ifname} onlink table {table}"
