"""Compile EC2: VPC routers, NAT and internet gateways, instances and the internet.

Each VPC has one router namespace and every ENI is a point-to-point veth into
it, so every packet between ENIs crosses the router (DESIGN.md). There:
- AWS route tables become Linux tables picked by `ip rule iif <eni>`; the
  local route compiles to `throw <vpc cidr>` so that lookup falls through to
  a lower-priority table of per-ENI /32 routes, and a route more specific
  than local still wins by longest prefix match, as at AWS;
- security groups (stateful), network ACLs (stateless, at the subnet
  boundary) and the source/destination check are nftables rules per ENI.
NAT sits on the router only for the NLB fast path, in VPCs where no flow crosses the
router twice (`plan.elbv2.nlb`); the internet gateway and NAT gateways each have a
namespace of their own. The filters themselves are compiled in `plan.ec2.security`.
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from vpclab.model.resources import (
    Instance,
    Lab,
    RouteTable,
    Subnet,
    Vpc,
)
from vpclab.plan.appliance import gwlb_node_ips, hairpin_rules, is_hairpin
from vpclab.plan.common import (
    ACCEPT_LOCAL,
    ALT_DNS_IP,
    BASE_SYSCTLS,
    FORWARDING,
    INTERNET_NS,
    PROXY_ARP,
    VPC_MTU,
    Eni,
    EndpointLink,
    InterfaceLink,
    ifname_for,
    igw_ns,
    nat_ns,
    router_ns,
    single_eni,
)
from vpclab.plan import privatelink, transit_gateway
from vpclab.plan.ec2.security import NLB_REPLY_MARK, nlb_node_enis, router_ruleset
from vpclab.plan.wiring import Link, Namespace, Service, Wiring

ENI_TABLE = 200  # per-ENI /32 routes: where the local route's throw lands
FIRST_AWS_TABLE = 1000
# The router <-> internet gateway link; each VPC has its own router namespace,
# so the same pair serves every VPC.
IGW_LINK_ROUTER = "169.254.0.1"
IGW_LINK_GATEWAY = "169.254.0.2"
# Internet gateway <-> internet links: one /30 each from TEST-NET-1.
IGW_TRANSIT = IPv4Network("192.0.2.0/24")

# The VPC router is the hypervisor, not a hop: TTL leaves it as it came (traceroute's first hop
# is the destination). Forwarding decrements it, so add one before; a packet that came with 255
# (no room) is marked and gets its one back after. nft's own `ip ttl set` is refused in a user
# namespace; the xt TTL target is not. Bit 31 of the mark: the router's fwmark rules never set it.
# One table, two base chains: each base chain costs every packet of every pass a hook call.
KEEP_TTL_MARK = 0x80000000
KEEP_TTL = f"""*mangle
:PREROUTING ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
-A PREROUTING -m ttl --ttl-eq 255 -j MARK --or-mark {KEEP_TTL_MARK:#x}
-A PREROUTING -m ttl --ttl-lt 255 -j TTL --ttl-inc 1
-A FORWARD -m mark --mark {KEEP_TTL_MARK:#x}/{KEEP_TTL_MARK:#x} -j TTL --ttl-inc 1
COMMIT
"""
NLB_REPLY_TABLE = 400  # + node index


def nat_gateway_enis(lab: Lab, vpc: Vpc, taken: set[str]) -> list[Eni]:
    """The ENIs of the VPC's NAT gateways, as its router sees them."""
    enis: list[Eni] = []
    for nat in lab.nat_gateways.values():
        subnet = lab.subnets[nat.subnet]
        if subnet.vpc == vpc.name:
            enis.append(
                Eni(nat.eni_id, nat.name, nat_ns(nat.name), ifname_for("n-", nat.name, taken),
                    nat.private_ip, subnet, (), False)
            )
    return enis


def instance_enis(lab: Lab, vpc: Vpc, taken: set[str]) -> list[Eni]:
    """The ENIs of the VPC's instances, as its router sees them."""
    enis: list[Eni] = []
    for inst in lab.instances.values():
        subnet = lab.subnets[inst.subnet]
        if subnet.vpc == vpc.name:
            enis.append(
                Eni(inst.eni_id, inst.name, inst.name, ifname_for("e-", inst.name, taken),
                    inst.private_ip, subnet, inst.security_groups, inst.source_dest_check)
            )
    return enis


def _internet_gateway_of(lab: Lab, vpc: Vpc):
    return next((g for g in lab.internet_gateways.values() if g.vpc == vpc.name), None)


def vpc_router(lab: Lab, vpc: Vpc, enis: list[Eni], own_endpoints: list[EndpointLink],
               nlb_fast_path: bool = False, interfaces: tuple[InterfaceLink, ...] | list = ()) -> Wiring:
    """The VPC's router and a veth from each of its ENIs (`enis`: every service's) to it;
    `nlb_fast_path`: it dispatches its clients' NLB connections itself (plan.elbv2.router_fast_path);
    `interfaces`: every interface endpoint link, those whose service this VPC provides end here."""
    igw = _internet_gateway_of(lab, vpc)
    links: list[Link] = []
    for eni in enis:
        links.append(Link(eni.owner_ns, eni.owner_ifname, router_ns(vpc.name), eni.ifname, VPC_MTU))
    provided = [link for link in interfaces if link.router_ns == router_ns(vpc.name)]
    return Wiring((_router(lab, vpc, enis, igw, own_endpoints, nlb_fast_path, provided),), tuple(links))


def nat_gateways_and_instances(lab: Lab, vpc: Vpc) -> Wiring:
    namespaces: list[Namespace] = []
    services: list[Service] = []
    for nat in (n for n in lab.nat_gateways.values() if lab.subnets[n.subnet].vpc == vpc.name):
        namespaces.append(_nat_gateway(nat.name, lab.subnets[nat.subnet], nat.private_ip))
    for inst in (i for i in lab.instances.values() if lab.subnets[i.subnet].vpc == vpc.name):
        namespaces.append(_instance(lab, vpc, inst))
        services.extend(_instance_services(lab, inst))
    return Wiring(tuple(namespaces), (), tuple(services))


class Internet:
    """The internet, and the internet gateway of each VPC into it, attached VPC after VPC."""

    def __init__(self) -> None:
        self.transits = iter(IGW_TRANSIT.subnets(new_prefix=30))
        self.internet_links: list[str] = []
        self.internet_routes: list[str] = []
        self.internet_taken: set[str] = set()

    def gateway(self, lab: Lab, vpc: Vpc) -> Wiring:
        """The VPC's internet gateway, if it has one, and its links to the router and the internet."""
        igw = _internet_gateway_of(lab, vpc)
        namespaces: list[Namespace] = []
        links: list[Link] = []
        if igw is not None:
            transit = next(self.transits)
            inet_side, gw_side = transit.network_address + 1, transit.network_address + 2
            public = _public_map(lab, vpc)
            namespaces.append(_internet_gateway(igw.name, vpc, public, gw_side, inet_side))
            links.append(Link(router_ns(vpc.name), "igw", igw_ns(igw.name), "vpc", VPC_MTU))
            inet_if = ifname_for("igw-", igw.name, self.internet_taken)
            links.append(Link(igw_ns(igw.name), "inet", INTERNET_NS, inet_if, VPC_MTU))
            self.internet_links += [f"link set {inet_if} up", f"addr add {inet_side}/30 dev {inet_if}"]
            self.internet_routes += [f"route add {pub}/32 via {gw_side} dev {inet_if}" for pub in public]
        return Wiring(tuple(namespaces), tuple(links))

    def internet(self, lab: Lab, aws_names: tuple) -> Wiring:
        """The internet's router, resolver and hosts; `aws_names` are what its resolver answers
        for AWS (route53.aws_dns_names)."""
        if not (lab.internet_hosts or self.internet_links):
            return Wiring((), ())
        inet_ns, host_namespaces, host_links, host_services = _internet(
            lab, self.internet_links + self.internet_routes, self.internet_taken, aws_names
        )
        return Wiring((inet_ns, *host_namespaces), tuple(host_links), tuple(host_services))


# --- the VPC router -------------------------------------------------------


def _router(lab: Lab, vpc: Vpc, enis: list[Eni], igw, endpoints: list[EndpointLink],
            nlb_fast_path: bool = False, provided: list[InterfaceLink] | None = None) -> Namespace:
    tables = {rt.name: FIRST_AWS_TABLE + i for i, rt in enumerate(
        rt for rt in lab.route_tables.values() if rt.vpc == vpc.name)}
    # A table with a route to a transit gateway is one per AZ: the route leaves by that AZ's ENI.
    azs = sorted({s.az for s in lab.subnets.values() if s.vpc == vpc.name})
    zonal = {(name, az): FIRST_AWS_TABLE + 500 + len(azs) * i + j
             for i, name in enumerate(n for n in tables if any(r.target_kind == "tgw" for r in
                                                               lab.route_tables[n].routes))
             for j, az in enumerate(azs)}
    table_of = lambda rt, az: zonal.get((rt, az), tables[rt])  # noqa: E731
    by_owner = {e.owner: e for e in enis}
    by_eni_id = {e.id: e for e in enis}
    batch = ["link set lo up"]
    if vpc.enable_dns_support:
        batch += [f"addr add {vpc.resolver_ip}/32 dev lo", f"addr add {ALT_DNS_IP}/32 dev lo"]
    pref = 1000
    for eni in enis:
        table = table_of(lab.route_table_of_subnet(eni.subnet.name).name, eni.subnet.az)
        batch += [
            f"link set {eni.ifname} up",
            f"addr add {eni.subnet.router_ip}/32 dev {eni.ifname}",
            f"ntable change name arp_cache dev {eni.ifname} proxy_delay 0",
            *(f"route add {ip}/32 dev {eni.ifname} table {ENI_TABLE}" for ip in eni.ips),
            # within a subnet traffic is layer 2 at AWS: no route table applies to it
            f"rule add pref {pref} iif {eni.ifname} to {eni.subnet.cidr} lookup {ENI_TABLE}",
            f"rule add pref {pref + 1} iif {eni.ifname} lookup {table}",
        ]
        pref += 2
    for ep in endpoints:
        # What the GWLB hands back is routed by the endpoint subnet's route table.
        table = table_of(lab.route_table_of_subnet(ep.subnet.name).name, ep.subnet.az)
        batch += [
            f"link set {ep.ifname} up",
            f"addr add {ep.router_ip}/30 dev {ep.ifname}",
            f"rule add pref {pref} iif {ep.ifname} lookup {table}",
        ]
        pref += 1
    if igw is not None:
        edge = next((rt for rt in lab.route_tables.values() if igw.name in rt.edge_associations), None)
        batch += [
            "link set igw up",
            f"addr add {IGW_LINK_ROUTER}/30 dev igw",
            f"rule add pref {pref} iif igw lookup {tables[edge.name] if edge else ENI_TABLE}",
        ]
    for rt in lab.route_tables.values():
        if rt.vpc == vpc.name:
            for az in [az for az in azs if (rt.name, az) in zonal] or [None]:
                batch += _route_table(rt, table_of(rt.name, az), by_owner, by_eni_id,
                                      {e.endpoint.name: e for e in endpoints}, az)
    for i, eni in enumerate(nlb_node_enis(enis)):
        # replies to connections an NLB node forwarded with the client's address go back through it
        batch += [f"route add default via {eni.ip} dev {eni.ifname} onlink table {NLB_REPLY_TABLE + i}",
                  f"rule add pref {100 + i} fwmark {NLB_REPLY_MARK + i:#x} lookup {NLB_REPLY_TABLE + i}"]
    batch += privatelink.provider_router_batch(provided or [], ENI_TABLE)
    batch += [
        f"rule add pref 2000 lookup {ENI_TABLE}",
        "rule add pref 2001 blackhole",  # no route: dropped silently, as at AWS
    ]
    own = dict.fromkeys(line.split()[2].split("/")[0] for line in batch if line.startswith("addr add"))
    return Namespace(
        name=router_ns(vpc.name),
        kind="router",
        sysctls=BASE_SYSCTLS + FORWARDING + PROXY_ARP + ACCEPT_LOCAL,
        ip_batch=tuple(batch),
        nft=router_ruleset(lab, vpc, enis, tuple(own), nlb_fast_path, provided or []),
        iptables=KEEP_TTL,
        # the GWLB node relays these packets raw: no partial checksums, no GSO super-packets
        tx_offload_off=tuple(e.ifname for e in endpoints),
    )


def _route_table(rt: RouteTable, table: int, by_owner: dict[str, Eni], by_eni_id: dict[str, Eni],
                 endpoints: dict[str, EndpointLink], az: str | None = None) -> list[str]:
    lines = []
    for route in rt.routes:
        dest = route.destination
        if route.target_kind == "local":
            lines.append(f"route add throw {dest} table {table}")
        elif route.target_kind == "igw":
            lines.append(f"route add {dest} via {IGW_LINK_GATEWAY} dev igw onlink table {table}")
        elif route.target_kind in ("nat", "instance", "eni"):
            eni = by_eni_id.get(route.target) or by_owner[route.target]
            lines.append(f"route add {dest} via {eni.ip} dev {eni.ifname} onlink table {table}")
        elif route.target_kind == "vpce":
            ep = endpoints[route.target]
            if ep.available:
                lines.append(f"route add {dest} via {ep.node_ip} dev {ep.ifname} onlink table {table}")
            else:  # pending or rejected: dropped, never sent around the endpoint
                lines.append(f"route add blackhole {dest} table {table}")
        elif route.target_kind == "tgw":
            lines.append(transit_gateway.vpc_route(route.target, az, dest, table, by_owner))
        else:  # targets of later capabilities are refused by the loader
            raise ValueError(f"route target {route.target_kind} is not supported")
    return lines


# --- instances, gateways, the internet -------------------------------------


def _resolv_conf(nameserver: str, search: str | None) -> str:
    lines = [f"nameserver {nameserver}"]
    if search:
        lines.append(f"search {search}")
    return "\n".join(lines) + "\n"


def dns_search_domain(region: str) -> str:
    return "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"


def _instance(lab: Lab, vpc: Vpc, inst: Instance) -> Namespace:
    subnet = lab.subnets[inst.subnet]
    sysctls = BASE_SYSCTLS
    if not inst.source_dest_check or is_hairpin(inst):
        # A middlebox: its OS forwards (the check off alone does not do that at AWS either,
        # but every lab that turns it off wants a forwarding instance).
        sysctls = sysctls + FORWARDING
    short = inst.hostname.split(".")[0]
    return Namespace(
        name=inst.name,
        kind="instance",
        hostname=short,
        resolv_conf=_resolv_conf(str(vpc.resolver_ip), dns_search_domain(lab.region)),
        etc_hosts=f"127.0.0.1 localhost\n{inst.private_ip} {inst.hostname} {short}\n",
        sysctls=sysctls,
        ip_batch=single_eni(inst.private_ip, subnet.cidr.prefixlen, subnet.router_ip),
        iptables=hairpin_rules(inst.private_ip, gwlb_node_ips(lab, vpc)) if is_hairpin(inst) else "",
    )


def _identity(**fields) -> tuple[tuple[str, object], ...]:
    return (("identity", tuple((k, str(v)) for k, v in fields.items() if v is not None)),)


def _instance_services(lab: Lab, inst: Instance) -> list[Service]:
    services: list[Service] = []
    identity = _identity(
        name=inst.name, instance_id=inst.id, az=lab.subnets[inst.subnet].az,
        private_ip=inst.private_ip, hostname=inst.hostname, public_ip=inst.public_ip,
    )
    if inst.default_services:
        if inst.test_page_message:
            identity += (("message", inst.test_page_message),)
        services.append(Service(inst.name, "test_page", ("0.0.0.0:80",), identity))
        services.append(Service(inst.name, "banner", ("0.0.0.0:22",)))
    services += [Service(inst.name, "command", params=(("command", c),)) for c in inst.run]
    if inst.role == "appliance" and not inst.run:  # else it runs a third-party appliance
        ports = [int(g.health_check.get("HealthCheckPort", 80)) for g in lab.target_groups.values()
                 if any(t.instance == inst.name for t in g.targets)]
        port = ports[0] if ports else 80
        if is_hairpin(inst):  # the kernel hairpins GENEVE; a web server answers health checks, as on AWS
            if not (inst.default_services and port == 80):
                services.append(Service(inst.name, "test_page", (f"0.0.0.0:{port}",), identity))
        else:
            services.append(Service(inst.name, "appliance", params=(
                ("config", dict(inst.appliance or {})), ("health_port", port))))
    return services




def _nat_gateway(name: str, subnet: Subnet, ip: IPv4Address) -> Namespace:
    nft = f"""table ip natgw {{
\tct timeout tcp_idle {{
\t\tprotocol tcp;
\t\tl3proto ip;
\t\tpolicy = {{ established: 350 }}
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter; policy drop;
\t\tmeta l4proto {{ tcp, udp, icmp }} accept comment "a NAT gateway carries TCP, UDP and ICMP only"
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tmeta l4proto tcp ct timeout set "tcp_idle" comment "a new connection's (none before conntrack)"
\t\toifname "eth0" ip saddr != {ip} meta l4proto {{ tcp, udp }} snat to {ip}:1024-65535
\t\toifname "eth0" ip saddr != {ip} snat to {ip}
\t}}
}}
"""
    return Namespace(
        name=nat_ns(name),
        kind="nat",
        sysctls=BASE_SYSCTLS + FORWARDING,
        ip_batch=single_eni(ip, subnet.cidr.prefixlen, subnet.router_ip),
        nft=nft,
    )


def _public_map(lab: Lab, vpc: Vpc) -> dict[IPv4Address, IPv4Address]:
    """Public (Elastic) IP -> private IP for every address the IGW translates."""
    public: dict[IPv4Address, IPv4Address] = {}
    for nat in lab.nat_gateways.values():
        if lab.subnets[nat.subnet].vpc == vpc.name:
            public[nat.public_ip] = nat.private_ip
    for inst in lab.instances.values():
        if inst.public_ip is not None and lab.subnets[inst.subnet].vpc == vpc.name:
            public[inst.public_ip] = inst.private_ip
    for lb in lab.load_balancers.values():  # an internet-facing NLB's Elastic IPs
        for node in lb.nodes:
            if node.public_ip is not None and lb.vpc == vpc.name:
                public[node.public_ip] = node.private_ip
    return public


def _internet_gateway(name: str, vpc: Vpc, public: dict, gw_side, inet_side) -> Namespace:
    pairs = ", ".join(f"{pub} : {priv}" for pub, priv in public.items())
    back = ", ".join(f"{priv} : {pub}" for pub, priv in public.items())
    privs = ", ".join(str(priv) for priv in public.values())
    elements = lambda e: f" elements = {{ {e} }};" if e else ""  # noqa: E731
    nft = f"""table ip igw {{
\tmap public_to_private {{ type ipv4_addr : ipv4_addr;{elements(pairs)} }}
\tmap private_to_public {{ type ipv4_addr : ipv4_addr;{elements(back)} }}
\tset translated {{ type ipv4_addr;{elements(privs)} }}
\tchain prerouting {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tiifname "inet" dnat to ip daddr map @public_to_private
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\toifname "inet" snat to ip saddr map @private_to_public
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter; policy drop;
\t\tct state established,related accept
\t\tiifname "vpc" oifname "inet" ip saddr @translated accept
\t\tiifname "inet" oifname "vpc" ct status dnat accept
\t}}
}}
"""
    return Namespace(
        name=igw_ns(name),
        kind="igw",
        sysctls=BASE_SYSCTLS + FORWARDING,
        ip_batch=(
            "link set lo up",
            "link set vpc up",
            f"addr add {IGW_LINK_GATEWAY}/30 dev vpc",
            f"route add {vpc.cidr} via {IGW_LINK_ROUTER} dev vpc",
            "link set inet up",
            f"addr add {gw_side}/30 dev inet",
            f"route add default via {inet_side} dev inet",
        ),
        nft=nft,
    )


def _internet(lab: Lab, gateway_lines: list[str], taken: set[str], aws_names: tuple):
    cidr = lab.internet_cidr
    gateway, resolver = cidr.network_address + 1, cidr.network_address + 2
    batch = ["link set lo up", f"addr add {resolver}/32 dev lo"]
    namespaces, links, services = [], [], []
    for host in lab.internet_hosts.values():
        ifname = ifname_for("h-", host.name, taken)
        links.append(Link(host.name, "eth0", INTERNET_NS, ifname, 1500))
        batch += [
            f"link set {ifname} up",
            f"addr add {gateway}/32 dev {ifname}",
            f"ntable change name arp_cache dev {ifname} proxy_delay 0",
            f"route add {host.ip}/32 dev {ifname}",
        ]
        namespaces.append(Namespace(
            name=host.name,
            kind="host",
            hostname=host.name,
            resolv_conf=_resolv_conf(str(resolver), None),
            etc_hosts=f"127.0.0.1 localhost\n{host.ip} {host.dns_name} {host.name}\n",
            sysctls=BASE_SYSCTLS,
            ip_batch=single_eni(host.ip, cidr.prefixlen, gateway),
        ))
        if host.default_services:
            identity = _identity(name=host.name, public_ip=host.ip, hostname=host.dns_name)
            services.append(Service(host.name, "test_page", ("0.0.0.0:80",), identity))
            services.append(Service(host.name, "banner", ("0.0.0.0:22",)))
        services += [Service(host.name, "command", params=(("command", c),)) for c in host.run]
    public_names = tuple((h.dns_name, str(h.ip)) for h in lab.internet_hosts.values())
    services.append(Service(
        INTERNET_NS, "dns", (f"{resolver}:53",),
        (("region", lab.region), ("instances", ()), ("public_names", public_names),
         ("enable_dns_hostnames", False), ("aws_names", aws_names)),
    ))
    inet = Namespace(
        name=INTERNET_NS,
        kind="internet",
        sysctls=BASE_SYSCTLS + FORWARDING + PROXY_ARP,
        ip_batch=tuple(batch + gateway_lines),
    )
    return inet, namespaces, links, services
