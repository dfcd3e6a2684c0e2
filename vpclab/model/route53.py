"""Route 53 in the lab file: private hosted zones with their record sets, the names the VPC
resolver answers.

The section's field table (pass 1), and its defaults, validation and references (pass 2):
aliases may point at instances, load balancers and interface endpoints, so zones come last.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any

from .common import _BuilderBase
from .ids import hosted_zone_id, hostname_domain
from .reader import (
    BOOLEAN,
    DNS_NAME,
    TEXT,
    Field,
    _a,
    _between,
    _did_you_mean,
    _fields,
    _Invalid,
    _join,
    _leaf,
    _list_of,
    _mapping,
    _region,
    _Spec,
    _text,
    _unsupported,
    parse_address,
)
from .resources import RECORD_TYPES, HostedZone, RecordSet, Vpc, txt_strings

# -- Route 53 (AWS::Route53::HostedZone, with its record sets inline) --

OTHER_RECORD_TYPES = ("MX", "NS", "SOA", "SRV", "PTR", "CAA", "NAPTR", "SPF", "DS", "HTTPS", "SVCB", "TLSA", "SSHFP")
TXT_STRING_MAX = 255  # characters in one quoted string of a TXT value
DEFAULT_RECORD_TTL = 300  # the Route 53 console's default


def _record_type(value: Any) -> str:
    text = _text(value).strip().upper()
    if text in RECORD_TYPES:
        return text
    if text in OTHER_RECORD_TYPES:
        raise ValueError(f"{text} records are not supported yet; a hosted zone holds A, AAAA, CNAME and TXT records")
    choices = RECORD_TYPES + OTHER_RECORD_TYPES
    raise ValueError(f"unknown record type '{value}'{_did_you_mean(text, choices)}")


def _record_name(value: Any) -> str:
    """A fully qualified name, lowercase, without the trailing dot."""
    text = _text(value).strip().lower().rstrip(".")
    if text.startswith("*"):
        raise ValueError("wildcard records are not supported yet")
    if not DNS_NAME.fullmatch(text):
        raise ValueError(f"'{value}' is not a DNS name like web.example.local")
    return text


def _record_value(rtype: str, value: Any) -> str:
    """One of ResourceRecords, checked against the record type and written as Route 53 shows it."""
    if rtype == "A":
        return str(parse_address(value))
    text = _text(value)
    if rtype == "AAAA":
        try:
            return str(IPv6Address(text.strip()))
        except ValueError:
            raise ValueError(f"'{text}' is not an IPv6 address like 2001:db8::10") from None
    if rtype == "CNAME":
        return _record_name(text)
    for string in txt_strings(text):  # TXT
        if len(string) > TXT_STRING_MAX:
            raise ValueError(
                f"a TXT string is at most {TXT_STRING_MAX} characters; split it into several quoted strings"
            )
    return text


def _vpc_association(value: Any, path: str) -> dict[str, Any]:
    """A VPC a private zone is associated with: its name or ID, or CloudFormation's
    `{VPCId: ..., VPCRegion: ...}`; `at` is where its VPCId is written."""
    if isinstance(value, str):
        return {"VPCId": value, "at": path}
    props = _fields(value, path, {"VPCId": TEXT, "VPCRegion": _leaf(_region)}, required=("VPCId",))
    return {**props, "at": _join(path, "VPCId")}


_ALIAS_TARGET = {"DNSName": _leaf(_record_name), "HostedZoneId": TEXT, "EvaluateTargetHealth": BOOLEAN}
_ROUTING_POLICY = _unsupported("routing policies (weighted, latency, failover, geolocation, multivalue...)")
_RECORD_SET = {
    "Name": _leaf(_record_name),
    "Type": _leaf(_record_type),
    "TTL": _leaf(_between(0, 2**31 - 1)),
    "ResourceRecords": lambda value, path: value,  # checked below, once the type is known
    "AliasTarget": _mapping(_ALIAS_TARGET, required=("DNSName",)),
    "Comment": TEXT,
    **{key: _ROUTING_POLICY for key in ("SetIdentifier", "Weight", "Region", "Failover", "GeoLocation",
                                        "MultiValueAnswer", "CidrRoutingConfig", "GeoProximityLocation")},
    "HealthCheckId": _unsupported("Route 53 health checks"),
}


def _record_set(value: Any, path: str) -> dict[str, Any]:
    """One record set; its values are checked here, its name against the zone in pass 2."""
    props = _fields(value, path, _RECORD_SET, required=("Name", "Type"))
    rtype = props["Type"]
    if "AliasTarget" in props:
        alias = _join(path, "AliasTarget")
        if "ResourceRecords" in props:
            reason = "an alias record has no ResourceRecords: its target gives them"
            raise _Invalid(_join(path, "ResourceRecords"), reason)
        if "TTL" in props:
            raise _Invalid(_join(path, "TTL"), "an alias record takes its TTL from its target; drop TTL")
        if rtype != "A":
            reason = f"an alias answers with its target's A records: Type must be A, not {rtype}"
            raise _Invalid(_join(path, "Type"), reason)
        if props["AliasTarget"].get("EvaluateTargetHealth"):
            raise _Invalid(_join(alias, "EvaluateTargetHealth"), "evaluating target health is not supported yet")
        return props
    read_values = _list_of(_leaf(lambda value: _record_value(rtype, value)))
    values = read_values(props.get("ResourceRecords"), _join(path, "ResourceRecords"))
    if not values:
        raise _Invalid(
            _join(path, "ResourceRecords"),
            "a record set needs at least one value in ResourceRecords, or an AliasTarget",
        )
    index_of: dict[str, int] = {}
    for i, item in enumerate(values):
        j = index_of.setdefault(item, i)
        if j != i:
            raise _Invalid(f"{_join(path, 'ResourceRecords')}[{i}]", f"{item} is already ResourceRecords[{j}]")
    if rtype == "CNAME" and len(values) > 1:
        raise _Invalid(_join(path, "ResourceRecords"), f"a CNAME has exactly one value, got {len(values)}")
    return {**props, "ResourceRecords": values}


# section -> (fields of each resource, required keys)
RESOURCE_SECTIONS: dict[str, tuple[dict[str, Field], tuple[str, ...]]] = {
    "hosted_zones": (
        {
            "Name": _leaf(_record_name),
            "VPCs": _list_of(_vpc_association),
            "RecordSets": _list_of(_record_set),
            "HostedZoneConfig": _mapping({"Comment": TEXT}),
            "HostedZoneTags": lambda value, path: value,
            "QueryLoggingConfig": _unsupported("query logging configurations"),
        },
        ("Name",),
    ),
}
SECTIONS = ("hosted_zones",)
KIND_LABELS = {
    "hosted_zones": "hosted zone",
}
ELB_ALIAS_TTL = 60  # an alias to a load balancer or endpoint answers with its records' TTL (Route 53: 60 s)


class Route53Builder(_BuilderBase):
    """Private hosted zones, checked and resolved once every other resource exists."""

    def _hosted_zones(self) -> None:
        """Zones first, each with its records checked; then aliases, which may point into any zone."""
        zones: dict[str, _ZoneDraft] = {}
        owner_of_domain: dict[tuple[str, str], str] = {}  # (VPC, domain) -> zone
        for spec in self.doc.specs["hosted_zones"]:
            domain = spec.props["Name"]
            self._check_zone_domain(domain, spec.at("Name"))
            vpcs = self._zone_vpcs(spec, domain, owner_of_domain)
            zones[spec.name] = _ZoneDraft(spec, domain, vpcs, self._zone_records(spec, domain))
        self._alias_tables()
        for draft in zones.values():
            records = []
            for i, (props, path) in enumerate(draft.records):
                if "AliasTarget" in props:
                    values, ttl = self._alias(zones, draft.spec.name, i, ())
                    target = props["AliasTarget"]["DNSName"]
                    if "HostedZoneId" not in props["AliasTarget"]:
                        target = self._alias_dns_name(zones, target, path)
                    record = RecordSet(props["Name"], "A", ttl, values, target)
                else:
                    ttl = props.get("TTL", DEFAULT_RECORD_TTL)
                    record = RecordSet(props["Name"], props["Type"], ttl, tuple(props["ResourceRecords"]))
                records.append(record)
            spec = draft.spec
            zone_id = hosted_zone_id(self.account, spec.name)
            self._add("hosted_zones", HostedZone(spec.name, zone_id, draft.domain, draft.vpcs, tuple(records)))

    def _check_zone_domain(self, domain: str, path: str) -> None:
        if domain == hostname_domain(self.region):
            raise _Invalid(
                path,
                f"{domain} holds the instances' private hostnames in every VPC of {self.region}; choose another domain",
            )
        if domain.endswith(("in-addr.arpa", "ip6.arpa")):
            raise _Invalid(path, "reverse lookup zones are not supported yet (PTR records are not)")

    def _zone_vpcs(self, spec: _Spec, domain: str, owner_of_domain: dict[tuple[str, str], str]) -> tuple[str, ...]:
        associations = spec.props.get("VPCs")
        if not associations:
            reason = "a private hosted zone needs at least one VPC; public hosted zones are not supported yet"
            raise _Invalid(spec.at("VPCs"), reason if associations is None else reason.split(";")[0])
        vpcs: list[str] = []
        for i, association in enumerate(associations):
            vpc: Vpc = self._ref("vpcs", association["VPCId"], association["at"])
            if "VPCRegion" in association and association["VPCRegion"] != self.region:
                raise _Invalid(
                    f"{spec.at('VPCs')}[{i}].VPCRegion", f"VPC {vpc.name} is in the lab's region {self.region}"
                )
            if vpc.name in vpcs:
                raise _Invalid(association["at"], f"VPC {vpc.name} is listed twice")
            if vpc.account != self.account:
                raise _Invalid(
                    association["at"],
                    f"VPC {vpc.name} is in account {vpc.account}, the zone in the lab's account {self.account}: "
                    "associating another account's VPC (CreateVPCAssociationAuthorization) is not supported yet",
                )
            other = owner_of_domain.get((vpc.name, domain))
            if other is not None:
                raise _Invalid(
                    association["at"],
                    f"VPC {vpc.name} is already associated with hosted zone {other}, also for {domain}; "
                    "a VPC can't be associated with two private zones of the same name (ConflictingDomainExists)",
                )
            owner_of_domain[(vpc.name, domain)] = spec.name
            if not (vpc.enable_dns_support and vpc.enable_dns_hostnames):
                off = " and ".join(
                    key for key, on in (("EnableDnsSupport", vpc.enable_dns_support),
                                        ("EnableDnsHostnames", vpc.enable_dns_hostnames)) if not on
                )  # fmt: skip
                self.notes.append(
                    f"{association['at']}: VPC {vpc.name} has {off} false, so its resolver does not answer "
                    f"{domain}: a private hosted zone needs both EnableDnsSupport and EnableDnsHostnames"
                )
            vpcs.append(vpc.name)
        return tuple(vpcs)

    def _zone_records(self, spec: _Spec, domain: str) -> list[tuple[dict[str, Any], str]]:
        """The record sets, each inside the zone, one per name and type, a CNAME alone at its name."""
        records: list[tuple[dict[str, Any], str]] = []
        types_at: dict[str, list[tuple[int, str]]] = {}  # name -> (index, type) of its record sets so far
        for i, props in enumerate(spec.props.get("RecordSets", [])):
            path = f"{spec.at('RecordSets')}[{i}]"
            name, rtype = props["Name"], props["Type"]
            if not _in_domain(name, domain):
                hint = f" (write the full name, like {name}.{domain})" if "." not in name else ""
                raise _Invalid(f"{path}.Name", f"{name} is not in zone {domain}{hint}")
            if rtype == "CNAME" and name == domain:
                raise _Invalid(
                    f"{path}.Type", f"a CNAME can't be at the zone apex {domain}; use an alias (AliasTarget) there"
                )
            for j, earlier_type in types_at.get(name, ()):  # a few at most: one per type
                if earlier_type == rtype:
                    raise _Invalid(
                        f"{path}.Type",
                        f"{name} already has a record set of type {rtype}, RecordSets[{j}]; give all its values there",
                    )
                if "CNAME" in (rtype, earlier_type):
                    raise _Invalid(
                        f"{path}.Type",
                        f"{name} already has a record set of type {earlier_type}, RecordSets[{j}], and a CNAME "
                        "must be the only record set at its name",
                    )
            types_at.setdefault(name, []).append((i, rtype))
            records.append((props, path))
        return records

    def _alias(
        self, zones: dict[str, _ZoneDraft], zone: str, index: int, chain: tuple[tuple[str, int], ...]
    ) -> tuple[tuple[str, ...], int]:
        """The A values and TTL an alias record resolves to, following aliases to aliases."""
        props, path = zones[zone].records[index]
        target: str = props["AliasTarget"]["DNSName"]
        at = f"{path}.AliasTarget.DNSName"
        if (zone, index) in chain:
            loop = " -> ".join(zones[z].records[i][0]["Name"] for z, i in (*chain, (zone, index)))
            first = zones[chain[0][0]].records[chain[0][1]][1]
            raise _Invalid(f"{first}.AliasTarget.DNSName", f"these aliases form a loop: {loop}")
        chain = (*chain, (zone, index))
        if "HostedZoneId" in props["AliasTarget"]:
            where = self._alias_zone(zones, props["AliasTarget"]["HostedZoneId"], f"{path}.AliasTarget.HostedZoneId")
            if not _in_domain(target, zones[where].domain):
                raise _Invalid(at, f"{target} is not in hosted zone {where} ({zones[where].domain})")
            return self._alias_record(zones, where, target, at, chain)
        for instance in self.built["instances"].values():
            if instance.hostname == target:
                return (str(instance.private_ip),), 60
        target = self._alias_dns_name(zones, target, at)
        if target in self.alias_names:
            values = self.alias_names[target]
            if isinstance(values, str):
                raise _Invalid(at, values)
            return values, ELB_ALIAS_TTL
        holders = [name for name, draft in zones.items() if _in_domain(target, draft.domain)]
        if not holders:
            known = [i.hostname for i in self.built["instances"].values()]
            known += [*self.alias_names, *self.lab_alias_names]
            known += [p["Name"] for draft in zones.values() for p, _ in draft.records]
            raise _Invalid(
                at,
                f"{target} is not a name the lab knows: an alias points to an instance's private hostname, "
                "a record in a hosted zone of the lab, a Network Load Balancer's or interface endpoint's DNS name "
                "(regional or zonal), or the lab name of a Network Load Balancer or interface endpoint"
                f"{_did_you_mean(target, known)}",
            )
        deepest = max(len(zones[name].domain) for name in holders)
        holders = [name for name in holders if len(zones[name].domain) == deepest]
        if zone in holders:
            holders = [zone]
        if len(holders) > 1:
            raise _Invalid(
                at, f"{target} is in hosted zones {', '.join(holders)}, all for {zones[holders[0]].domain}: "
                "give AliasTarget.HostedZoneId to choose one",
            )
        return self._alias_record(zones, holders[0], target, at, chain)

    def _alias_tables(self) -> None:
        """What an alias may name besides hostnames and records: the DNS names of load balancers and
        interface endpoints (`alias_names`: name -> A values, or why it can't be aliased) and, as
        vpclab's convenience, their lab names (`lab_alias_names`: name -> DNS name, None for none)."""
        self.alias_names: dict[str, tuple[str, ...] | str] = {}
        self.lab_alias_names: dict[str, str | None] = {}
        for lb in self.built["load_balancers"].values():
            self.lab_alias_names[lb.name.lower()] = lb.dns_name
            if lb.type == "gateway":
                self.alias_names[lb.dns_name] = (
                    f"{lb.dns_name} is Gateway Load Balancer {lb.name}'s name, and a GWLB has no addresses to "
                    "alias: traffic reaches it through its endpoints' routes"
                )
                continue
            public = lb.scheme == "internet-facing"
            addresses = {n.az: str(n.public_ip if public else n.private_ip) for n in lb.nodes}
            self.alias_names[lb.dns_name] = tuple(addresses.values())
            if lb.type == "network":  # an ALB has no zonal names
                self.alias_names.update({lb.zonal_dns_name(az): (ip,) for az, ip in addresses.items()})
        for endpoint in self.built["vpc_endpoints"].values():
            if endpoint.type != "Interface":
                self.lab_alias_names[endpoint.name.lower()] = None
                continue
            regional, *zonal = endpoint.dns_entries
            self.lab_alias_names[endpoint.name.lower()] = regional
            self.alias_names[regional] = tuple(str(eni.ip) for eni in endpoint.enis)
            self.alias_names.update({name: (str(eni.ip),) for name, eni in zip(zonal, endpoint.enis)})

    def _alias_dns_name(self, zones: dict[str, _ZoneDraft], target: str, at: str) -> str:
        """`target`, or, when it is no DNS name the lab knows and in no hosted zone, the regional
        DNS name of the Network Load Balancer or interface endpoint it is the lab name of."""
        if target in self.alias_names or any(_in_domain(target, draft.domain) for draft in zones.values()):
            return target
        if target not in self.lab_alias_names:
            return target
        dns_name = self.lab_alias_names[target]
        if dns_name is None:
            raise _Invalid(
                at,
                f"{target} is a Gateway Load Balancer endpoint, which has no DNS name or addresses to alias: "
                "routes send traffic to it",
            )
        return dns_name

    def _alias_zone(self, zones: dict[str, _ZoneDraft], value: str, path: str) -> str:
        for name in zones:
            if value in (name, hosted_zone_id(self.account, name)):
                return name
        other = self.doc.name_kinds.get(value)
        if other is not None:
            raise _Invalid(path, f"'{value}' is {_a(self.KIND_LABELS[other])}, not a hosted zone")
        raise _Invalid(path, f"unknown hosted zone '{value}'{_did_you_mean(value, zones)}")

    def _alias_record(
        self, zones: dict[str, _ZoneDraft], zone: str, target: str, at: str, chain: tuple[tuple[str, int], ...]
    ) -> tuple[tuple[str, ...], int]:
        draft = zones[zone]
        for index, (props, _) in enumerate(draft.records):
            if props["Name"] == target and props["Type"] == "A":
                if "AliasTarget" in props:
                    return self._alias(zones, zone, index, chain)
                return tuple(props["ResourceRecords"]), props.get("TTL", DEFAULT_RECORD_TTL)
        types = [p["Type"] for p, _ in draft.records if p["Name"] == target]
        has = f" (it has {', '.join(types)})" if types else ""
        raise _Invalid(at, f"hosted zone {zone} has no A record at {target}{has}; an alias here points to A records")


BUILDER = Route53Builder
CLAIMS = None  # hosted zones take no addresses
STEPS = {"names": ("_hosted_zones",)}  # loader.PHASES


@dataclass
class _ZoneDraft:
    """A hosted zone read in pass 2, before its aliases are resolved."""

    spec: _Spec
    domain: str
    vpcs: tuple[str, ...]
    records: list[tuple[dict[str, Any], str]]  # (record set props, its key path)


def _in_domain(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)
