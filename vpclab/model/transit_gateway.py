"""Transit gateways in the lab file: the gateways, their VPC attachments and route tables
(associations, propagations, static and blackhole routes), with CloudFormation's names.

The sections' field tables (pass 1), their defaults, validation and references (pass 2), the
routes a route table holds in effect (`effective_routes`, what `search-transit-gateway-routes`
shows) and the live changes AWS's API offers for them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Network
from typing import Any, Literal

from .common import _AddressClaim, _BuilderBase, _one_subnet_per_az
from .errors import ChangeError
from .reader import (
    BOOLEAN,
    NAMES,
    NETWORK,
    TEXT,
    Field,
    _between,
    _choice,
    _fields,
    _Invalid,
    _leaf,
    _list_of,
    _mapping,
    parse_network,
)
from .resources import (
    Lab,
    TransitGateway,
    TransitGatewayAttachment,
    TransitGatewayAttachmentEni,
    TransitGatewayRoute,
    TransitGatewayRouteTable,
)

MTU = 8500  # bytes, for VPC attachments: larger packets are dropped
DEFAULT_ASN = 64512
_ENABLE = _leaf(_choice("enable", "disable"))


def _static_route(value: Any, path: str) -> dict[str, Any]:
    props = _fields(value, path, {"DestinationCidrBlock": NETWORK, "TransitGatewayAttachmentId": TEXT,
                                  "Blackhole": BOOLEAN}, required=("DestinationCidrBlock",))
    if props.get("Blackhole") and "TransitGatewayAttachmentId" in props:
        raise _Invalid(f"{path}.Blackhole", "a blackhole route has no TransitGatewayAttachmentId; give one of them")
    if not props.get("Blackhole") and "TransitGatewayAttachmentId" not in props:
        raise _Invalid(path, "a route needs a TransitGatewayAttachmentId, or Blackhole: true")
    return props


# section -> (fields of each resource, required keys)
RESOURCE_SECTIONS: dict[str, tuple[dict[str, Field], tuple[str, ...]]] = {
    "transit_gateways": (
        {
            "AmazonSideAsn": _leaf(_between(1, 4294967294)),
            "DefaultRouteTableAssociation": _ENABLE,
            "DefaultRouteTablePropagation": _ENABLE,
            "Description": TEXT,
        },
        (),
    ),
    "transit_gateway_attachments": (
        {
            "TransitGatewayId": TEXT,
            "VpcId": TEXT,
            "SubnetIds": NAMES,
            "Options": _mapping({"ApplianceModeSupport": _ENABLE, "DnsSupport": _ENABLE}),
        },
        ("TransitGatewayId", "VpcId", "SubnetIds"),
    ),
    "transit_gateway_route_tables": (
        {
            "TransitGatewayId": TEXT,
            "Associations": NAMES,  # AWS::EC2::TransitGatewayRouteTableAssociation, by attachment
            "Propagations": NAMES,  # AWS::EC2::TransitGatewayRouteTablePropagation, by attachment
            "Routes": _list_of(_static_route),  # AWS::EC2::TransitGatewayRoute
        },
        ("TransitGatewayId",),
    ),
}
SECTIONS = ("transit_gateways", "transit_gateway_attachments", "transit_gateway_route_tables")
KIND_LABELS = {
    "transit_gateways": "transit gateway",
    "transit_gateway_attachments": "transit gateway attachment",
    "transit_gateway_route_tables": "transit gateway route table",
}


class TransitGatewayBuilder(_BuilderBase):
    """Transit gateways, their attachments (whose ENIs take addresses) and route tables."""

    def _transit_gateways(self) -> None:
        for spec in self.doc.specs["transit_gateways"]:
            association = spec.props.get("DefaultRouteTableAssociation", "enable") == "enable"
            propagation = spec.props.get("DefaultRouteTablePropagation", "enable") == "enable"
            default = None
            if association or propagation:
                default = f"{spec.name}-default"
                self._implicit(default, f"the default route table of transit gateway {spec.name}")
            self._add("transit_gateways", TransitGateway(
                spec.name, self._id("tgw", self.account, spec.name), self.account,
                spec.props.get("AmazonSideAsn", DEFAULT_ASN), association, propagation, default))

    def _tgw_claims(self) -> list[_AddressClaim]:
        """The addresses of the attachments' network interfaces, one per subnet (AZ)."""
        claims: list[_AddressClaim] = []
        attached: dict[tuple[str, str], str] = {}  # (gateway, VPC) -> attachment
        for spec in self.doc.specs["transit_gateway_attachments"]:
            tgw = self._ref("transit_gateways", spec.props["TransitGatewayId"], spec.at("TransitGatewayId"))
            vpc = self._vpc_of(spec)
            if (tgw.name, vpc.name) in attached:
                raise _Invalid(spec.at("VpcId"), f"VPC {vpc.name} is already attached to transit gateway "
                                                 f"{tgw.name} by {attached[(tgw.name, vpc.name)]}")
            attached[(tgw.name, vpc.name)] = spec.name
            mine: list[_AddressClaim] = []
            subnets = spec.props["SubnetIds"]
            if not subnets:
                raise _Invalid(spec.at("SubnetIds"), "an attachment needs one subnet in each AZ it serves")
            for i, value in enumerate(subnets):
                path = f"{spec.at('SubnetIds')}[{i}]"
                subnet = self._ref("subnets", value, path, vpc)
                _one_subnet_per_az(mine, subnet, path, "transit gateway attachment")
                mine.append(_AddressClaim(spec, f"transit gateway attachment {spec.name}", subnet, False, path=path))
            claims += mine
        return claims

    def _tgw_addressed(self, claims: list[_AddressClaim]) -> None:
        enis: dict[str, list[TransitGatewayAttachmentEni]] = {}
        for claim in claims:
            if claim.spec.section == "transit_gateway_attachments":
                account = self._subnet_vpc(claim.subnet.name).account
                eni_id = self._id("eni", account, f"{claim.spec.name}/{claim.subnet.name}")
                enis.setdefault(claim.spec.name, []).append(
                    TransitGatewayAttachmentEni(claim.subnet.name, claim.subnet.az, eni_id, claim.private_ip))
        for spec in self.doc.specs["transit_gateway_attachments"]:
            vpc = self._vpc_of(spec)
            tgw = self._ref("transit_gateways", spec.props["TransitGatewayId"], spec.at("TransitGatewayId"))
            options = spec.props.get("Options", {})
            self._add("transit_gateway_attachments", TransitGatewayAttachment(
                spec.name, self._id("tgw-attach", vpc.account, spec.name), tgw.name, vpc.name,
                tuple(enis[spec.name]), options.get("ApplianceModeSupport", "disable") == "enable"))

    def _tgw_route_tables(self) -> None:
        associated: dict[str, str] = {}  # attachment -> its route table
        tables: dict[str, TransitGatewayRouteTable] = {}
        for spec in self.doc.specs["transit_gateway_route_tables"]:
            tgw = self._ref("transit_gateways", spec.props["TransitGatewayId"], spec.at("TransitGatewayId"))
            associations = []
            for i, value in enumerate(spec.props.get("Associations", [])):
                path = f"{spec.at('Associations')}[{i}]"
                attachment = self._attachment_of(tgw, value, path)
                if attachment.name in associated:
                    raise _Invalid(path, f"attachment {attachment.name} is already associated with route table "
                                         f"{associated[attachment.name]}; an attachment has one route table")
                associated[attachment.name] = spec.name
                associations.append(attachment.name)
            propagations = []
            for i, value in enumerate(spec.props.get("Propagations", [])):
                path = f"{spec.at('Propagations')}[{i}]"
                attachment = self._attachment_of(tgw, value, path)
                if attachment.name in propagations:
                    raise _Invalid(path, f"attachment {attachment.name} already propagates to this route table")
                propagations.append(attachment.name)
            routes: list[TransitGatewayRoute] = []
            for i, props in enumerate(spec.props.get("Routes", [])):
                path = f"{spec.at('Routes')}[{i}]"
                destination = props["DestinationCidrBlock"]
                if any(r.destination == destination for r in routes):
                    raise _Invalid(f"{path}.DestinationCidrBlock", f"{destination} already has a static route here")
                target = None
                if "TransitGatewayAttachmentId" in props:
                    target = self._attachment_of(tgw, props["TransitGatewayAttachmentId"],
                                                 f"{path}.TransitGatewayAttachmentId").name
                routes.append(TransitGatewayRoute(destination, target))
            tables[spec.name] = TransitGatewayRouteTable(
                spec.name, self._id("tgw-rtb", tgw.account, spec.name), tgw.name, tuple(associations),
                tuple(propagations), tuple(routes))
        defaults = {}
        for tgw in self.built["transit_gateways"].values():
            if tgw.default_route_table is None:
                continue
            mine = [a for a in self.built["transit_gateway_attachments"].values() if a.transit_gateway == tgw.name]
            # an attachment the file associates elsewhere is not associated with the default table
            associations = tuple(a.name for a in mine if tgw.default_route_table_association
                                 and a.name not in associated)
            propagations = tuple(a.name for a in mine) if tgw.default_route_table_propagation else ()
            defaults[tgw.default_route_table] = TransitGatewayRouteTable(
                tgw.default_route_table, self._id("tgw-rtb", tgw.account, tgw.default_route_table), tgw.name,
                associations, propagations, default=True)
        self.built["transit_gateway_route_tables"] = {**defaults, **tables}

    def _attachment_of(self, tgw: TransitGateway, value: str, path: str) -> TransitGatewayAttachment:
        attachment = self._ref("transit_gateway_attachments", value, path)
        if attachment.transit_gateway != tgw.name:
            raise _Invalid(path, f"attachment {attachment.name} is to transit gateway {attachment.transit_gateway}, "
                                 f"not {tgw.name}")
        return attachment


BUILDER = TransitGatewayBuilder
CLAIMS = "_tgw_claims"
STEPS = {  # loader.PHASES
    "networks": ("_transit_gateways",),
    "addresses": ("_tgw_addressed",),
    "routes": ("_tgw_route_tables",),
}


# -- What a route table holds in effect --


@dataclass(frozen=True)
class EffectiveRoute:
    """One route as search-transit-gateway-routes shows it."""

    destination: IPv4Network
    attachment: str | None  # None: a blackhole
    type: Literal["static", "propagated"]

    @property
    def state(self) -> str:
        return "blackhole" if self.attachment is None else "active"


def effective_routes(lab: Lab, table: str) -> tuple[EffectiveRoute, ...]:
    """The routes a transit gateway route table holds: its static routes, and each propagating
    attachment's VPC CIDR unless it is identical to or overlaps a CIDR already propagated; a static
    route replaces a propagated one for the same prefix. Sorted by destination."""
    rt = lab.transit_gateway_route_tables[table]
    routes: dict[IPv4Network, EffectiveRoute] = {}
    for name in rt.propagations:
        cidr = lab.vpcs[lab.transit_gateway_attachments[name].vpc].cidr
        if not any(cidr.overlaps(taken) for taken in routes):
            routes[cidr] = EffectiveRoute(cidr, name, "propagated")
    for route in rt.routes:
        routes[route.destination] = EffectiveRoute(route.destination, route.attachment, "static")
    return tuple(sorted(routes.values(), key=lambda r: (r.destination.network_address, r.destination.prefixlen)))


def route_table_of(lab: Lab, attachment: str) -> TransitGatewayRouteTable | None:
    """The route table an attachment is associated with (its traffic is routed by it), if any."""
    return next((rt for rt in lab.transit_gateway_route_tables.values() if attachment in rt.associations), None)


def lookup(lab: Lab, table: str, address) -> EffectiveRoute | None:
    """Longest prefix match in a route table."""
    matches = [r for r in effective_routes(lab, table) if address in r.destination]
    return max(matches, key=lambda r: r.destination.prefixlen, default=None)


# -- Live changes (CreateTransitGatewayRoute ... ModifyTransitGatewayVpcAttachment) --


def _table(lab: Lab, name_or_id: str) -> TransitGatewayRouteTable:
    for rt in lab.transit_gateway_route_tables.values():
        if name_or_id in (rt.name, rt.id):
            return rt
    raise ChangeError("InvalidRouteTableID.NotFound", f"no transit gateway route table {name_or_id!r}")


def _attachment(lab: Lab, name_or_id: str, rt: TransitGatewayRouteTable | None = None) -> TransitGatewayAttachment:
    for a in lab.transit_gateway_attachments.values():
        if name_or_id in (a.name, a.id):
            if rt is not None and a.transit_gateway != rt.transit_gateway:
                raise ChangeError("InvalidParameterValue", f"attachment {a.name} is to transit gateway "
                                  f"{a.transit_gateway}, not {rt.transit_gateway}")
            return a
    raise ChangeError("InvalidTransitGatewayAttachmentID.NotFound", f"no transit gateway attachment {name_or_id!r}")


def _network(cidr: Any) -> IPv4Network:
    try:
        return parse_network(cidr)
    except ValueError as e:
        raise ChangeError("InvalidParameterValue", str(e)) from None


def _with_table(lab: Lab, rt: TransitGatewayRouteTable) -> Lab:
    return replace(lab, transit_gateway_route_tables={**lab.transit_gateway_route_tables, rt.name: rt})


def create_transit_gateway_route(lab: Lab, table: str, cidr: Any, attachment: str | None = None,
                                 blackhole: bool = False) -> Lab:
    rt = _table(lab, table)
    destination = _network(cidr)
    if blackhole == (attachment is not None):
        raise ChangeError("InvalidParameterCombination", "give a transit gateway attachment, or blackhole; not both")
    if any(r.destination == destination for r in rt.routes):
        raise ChangeError("RouteAlreadyExists", f"route table {rt.id} already has a static route to {destination}")
    target = None if blackhole else _attachment(lab, attachment, rt).name
    return _with_table(lab, replace(rt, routes=rt.routes + (TransitGatewayRoute(destination, target),)))


def delete_transit_gateway_route(lab: Lab, table: str, cidr: Any) -> Lab:
    rt = _table(lab, table)
    destination = _network(cidr)
    routes = tuple(r for r in rt.routes if r.destination != destination)
    if routes == rt.routes:
        raise ChangeError("InvalidRoute.NotFound", f"route table {rt.id} has no static route to {destination}")
    return _with_table(lab, replace(rt, routes=routes))


def enable_transit_gateway_route_table_propagation(lab: Lab, table: str, attachment: str) -> Lab:
    rt = _table(lab, table)
    name = _attachment(lab, attachment, rt).name
    if name in rt.propagations:
        raise ChangeError("TransitGatewayRouteTablePropagation.Duplicate",
                          f"attachment {name} already propagates to {rt.id}")
    return _with_table(lab, replace(rt, propagations=rt.propagations + (name,)))


def disable_transit_gateway_route_table_propagation(lab: Lab, table: str, attachment: str) -> Lab:
    rt = _table(lab, table)
    name = _attachment(lab, attachment, rt).name
    if name not in rt.propagations:
        raise ChangeError("InvalidRouteTableId.NotFound", f"attachment {name} does not propagate to {rt.id}")
    return _with_table(lab, replace(rt, propagations=tuple(p for p in rt.propagations if p != name)))


def modify_transit_gateway_vpc_attachment(lab: Lab, attachment: str, appliance_mode_support: str) -> Lab:
    """ApplianceModeSupport: enable or disable."""
    a = _attachment(lab, attachment)
    if appliance_mode_support not in ("enable", "disable"):
        raise ChangeError("InvalidParameterValue",
                          f"ApplianceModeSupport is enable or disable, got {appliance_mode_support!r}")
    new = replace(a, appliance_mode_support=appliance_mode_support == "enable")
    return replace(lab, transit_gateway_attachments={**lab.transit_gateway_attachments, a.name: new})


# -- Inspection --


def find_route_table(lab: Lab, name_or_id: str) -> TransitGatewayRouteTable:
    """A route table by its name in the lab or its tgw-rtb- id (ChangeError if none)."""
    return _table(lab, name_or_id)


def search_routes(lab: Lab, table: str) -> list[dict]:
    """A route table's routes as `aws ec2 search-transit-gateway-routes` shows them."""
    rt = _table(lab, table)
    out = []
    for route in effective_routes(lab, rt.name):
        entry: dict[str, Any] = {"DestinationCidrBlock": str(route.destination)}
        if route.attachment is not None:
            a = lab.transit_gateway_attachments[route.attachment]
            entry["TransitGatewayAttachments"] = [{"ResourceId": lab.vpcs[a.vpc].id, "TransitGatewayAttachmentId": a.id,
                                                   "ResourceType": "vpc"}]
        entry.update({"Type": route.type, "State": route.state})
        out.append(entry)
    return out


def transit_gateway_status(lab: Lab) -> list[dict]:
    """`vpclab status --json`'s transit gateways: attachments, route tables, associations,
    propagations and the routes each table holds."""
    out = []
    for tgw in lab.transit_gateways.values():
        attachments = [a for a in lab.transit_gateway_attachments.values() if a.transit_gateway == tgw.name]
        tables = [t for t in lab.transit_gateway_route_tables.values() if t.transit_gateway == tgw.name]
        ids = {a.name: a.id for a in attachments}
        out.append({
            "name": tgw.name, "id": tgw.id, "amazon_side_asn": tgw.amazon_side_asn,
            "default_route_table_association": "enable" if tgw.default_route_table_association else "disable",
            "default_route_table_propagation": "enable" if tgw.default_route_table_propagation else "disable",
            "attachments": [{
                "name": a.name, "id": a.id, "vpc": a.vpc, "vpc_id": lab.vpcs[a.vpc].id,
                "appliance_mode_support": "enable" if a.appliance_mode_support else "disable",
                "route_table": (route_table_of(lab, a.name).id if route_table_of(lab, a.name) else None),
                "enis": [{"id": e.id, "subnet": e.subnet, "az": e.az, "ip": str(e.ip)} for e in a.enis],
            } for a in attachments],
            "route_tables": [{
                "name": t.name, "id": t.id, "default": t.default,
                "associations": [ids[n] for n in t.associations],
                "propagations": [ids[n] for n in t.propagations],
                "routes": search_routes(lab, t.name),
            } for t in tables],
        })
    return out
