"""Compile Route 53: the VPC resolver (AmazonProvidedDNS) of each VPC with DNS support, with its
private hosted zones, and the AWS names (load balancers, interface endpoints) resolvers answer."""
from __future__ import annotations

from vpclab.model.resources import HostedZone, Lab, Vpc, txt_text
from vpclab.plan.common import ALT_DNS_IP, router_ns
from vpclab.plan.wiring import Service, Wiring


def vpc_resolver(lab: Lab, vpc: Vpc) -> Wiring:
    """The VPC's resolver, on its router, if the VPC has DNS support."""
    services: list[Service] = []
    if vpc.enable_dns_support:
        services.append(_vpc_dns(lab, vpc))
    return Wiring((), (), tuple(services))


def aws_dns_names(lab: Lab) -> tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...]:
    """The public names of NLBs (regional and zonal, §3.1), ALBs (regional only, `internal-` for an
    internal one) and interface endpoints (§6), each with its addresses as (ip, load balancer, az):
    the resolver drops a load balancer's AZs that are out of service (load balancer "" for
    endpoint names, which never change)."""
    names = []
    for lb in lab.load_balancers.values():
        if lb.type not in ("network", "application"):
            continue
        entries = tuple((str(ip), lb.name, n.az) for n in lb.nodes  # a scaled-out ALB: several per AZ
                        for ip in ((n.public_ip,) if n.public_ip else n.ips))
        names.append((lb.dns_name, entries))
        if lb.type == "network":
            names += [(lb.zonal_dns_name(entry[2]), (entry,)) for entry in entries]
    for ep in lab.vpc_endpoints.values():
        if ep.type != "Interface" or not ep.dns_entries:
            continue
        entries = tuple((str(eni.ip), "", eni.az) for eni in ep.enis)
        names.append((ep.dns_entries[0], entries))
        names += [(name, (entry,)) for name, entry in zip(ep.dns_entries[1:], entries)]
    return tuple(names)


def _vpc_dns(lab: Lab, vpc: Vpc) -> Service:
    instances = tuple(
        (i.hostname, str(i.private_ip)) for i in lab.instances.values()
        if lab.subnets[i.subnet].vpc == vpc.name
    )
    public = tuple((h.dns_name, str(h.ip)) for h in lab.internet_hosts.values())
    params = (("region", lab.region), ("instances", instances), ("public_names", public),
              ("enable_dns_hostnames", vpc.enable_dns_hostnames), ("aws_names", aws_dns_names(lab)))
    # §7: the resolver answers private hosted zones only with both DNS attributes on.
    if vpc.enable_dns_support and vpc.enable_dns_hostnames:
        zones = tuple(_private_zone(zone) for zone in lab.hosted_zones_of(vpc.name))
        if zones:
            params += (("private_zones", zones),)
    return Service(router_ns(vpc.name), "dns", (f"{vpc.resolver_ip}:53", f"{ALT_DNS_IP}:53"), params)


def _private_zone(zone: HostedZone) -> tuple[str, tuple[tuple[str, str, int, tuple[str, ...], str], ...]]:
    """A zone as plain data for the resolver: (domain, ((name, type, ttl, values, alias target), ...)).

    Aliases are already A records (the model resolved them), with the DNS name they point to
    ("" for other records): the daemon answers an alias to a load balancer's name as that name
    answers now. TXT values are their text."""
    records = tuple(
        (r.name, r.type, r.ttl, tuple(txt_text(v) for v in r.values) if r.type == "TXT" else r.values,
         r.alias_target or "")
        for r in zone.records
    )
    return zone.domain, records
