"""Route tables and network ACLs: their routes' targets and AWS's rules for routes."""
from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

from ..common import _BuilderBase
from ..quotas import ROUTES_PER_TABLE, RULES_PER_NACL
from ..reader import NETWORK, TEXT, _fields, _Invalid, _join, _Spec, _unsupported
from ..resources import Instance, NaclEntry, NetworkAcl, Route, RouteTable, Vpc, VpcEndpoint
from .rules import ANYWHERE

ROUTE_TARGETS = {
    "GatewayId": "igw",
    "NatGatewayId": "nat",
    "InstanceId": "instance",
    "NetworkInterfaceId": "eni",
    "VpcEndpointId": "vpce",
    "TransitGatewayId": "tgw",
}
_ROUTE = {
    "DestinationCidrBlock": NETWORK,
    **{key: TEXT for key in ROUTE_TARGETS},
    "DestinationIpv6CidrBlock": _unsupported("IPv6 routes"),
    "DestinationPrefixListId": _unsupported("prefix-list routes"),
    "EgressOnlyInternetGatewayId": _unsupported("routes to egress-only internet gateways"),
    "VpcPeeringConnectionId": _unsupported("routes to peering connections"),
    "CarrierGatewayId": _unsupported("routes to carrier gateways"),
    "LocalGatewayId": _unsupported("routes to local gateways"),
}


def _route(value: Any, path: str) -> dict[str, Any]:
    props = _fields(value, path, _ROUTE, required=("DestinationCidrBlock",))
    targets = [key for key in props if key in ROUTE_TARGETS]
    if not targets:
        raise _Invalid(
            path, "a route needs a target: GatewayId, NatGatewayId, InstanceId, NetworkInterfaceId, VpcEndpointId or "
            "TransitGatewayId"
        )
    if len(targets) > 1:
        raise _Invalid(
            _join(path, targets[1]), f"a route has exactly one target, and this one already has {targets[0]}"
        )
    return props


class Ec2RoutingBuilder(_BuilderBase):
    """Route tables and network ACLs, which name the resources of the VPC."""


    def _route_tables(self) -> None:
        table_of_subnet: dict[str, str] = {}
        table_of_gateway: dict[str, str] = {}
        main_of_vpc: dict[str, str] = {}
        for spec in self.doc.specs["route_tables"]:
            vpc = self._vpc_of(spec)
            main = spec.props.get("Main", False)
            if main and vpc.name in main_of_vpc:
                raise _Invalid(
                    spec.at("Main"), f"VPC {vpc.name} already has a main route table: {main_of_vpc[vpc.name]}"
                )
            if main:
                main_of_vpc[vpc.name] = spec.name
            edge = bool(spec.props.get("EdgeAssociations"))
            routes = self._routes(spec, vpc, edge)
            subnets = self._associate(spec, "SubnetAssociations", "subnets", vpc, table_of_subnet)
            gateways = self._associate(spec, "EdgeAssociations", "internet_gateways", vpc, table_of_gateway)
            self._add(
                "route_tables",
                RouteTable(
                    spec.name,
                    self._id("rtb", vpc.account, spec.name),
                    vpc.name,
                    routes,
                    subnets,
                    main,
                    gateways,
                ),
            )
        implicit = {}
        for vpc in self.built["vpcs"].values():
            if vpc.name not in main_of_vpc:
                name = f"{vpc.name}-main"
                self._implicit(name, f"the main route table of VPC {vpc.name}")
                local = Route(vpc.cidr, "local", "local")
                implicit[name] = RouteTable(name, self._id("rtb", vpc.account, name), vpc.name, (local,), main=True)
        self.built["route_tables"] = {**implicit, **self.built["route_tables"]}

    def _routes(self, spec: _Spec, vpc: Vpc, edge: bool) -> tuple[Route, ...]:
        """The local route first, then the file's routes; a route to the VPC CIDR replaces the local one."""
        routes = [Route(vpc.cidr, "local", "local")]
        subnet_cidrs = {s.cidr for s in self.built["subnets"].values() if s.vpc == vpc.name}
        first_of: dict[IPv4Network, int] = {}
        for i, props in enumerate(spec.props.get("Routes", [])):
            path = f"{spec.at('Routes')}[{i}]"
            destination: IPv4Network = props["DestinationCidrBlock"]
            if destination in first_of:
                reason = f"{destination} is already routed by Routes[{first_of[destination]}]"
                raise _Invalid(f"{path}.DestinationCidrBlock", reason)
            first_of[destination] = i
            key = next(key for key in props if key in ROUTE_TARGETS)
            kind, target = self._route_target(vpc, key, props[key], f"{path}.{key}")
            reason = _route_refusal(destination, kind, vpc.cidr, subnet_cidrs, edge)
            if reason:
                raise _Invalid(path, reason)
            route = Route(destination, kind, target)
            if destination == vpc.cidr:
                routes[0] = route
                continue
            routes.append(route)
            self._within(ROUTES_PER_TABLE, len(routes) - 1, path,
                         lambda n: f"route table {spec.name} has {n} routes besides the local route")
        return tuple(routes)

    def _route_target(self, vpc: Vpc, key: str, value: str, path: str) -> tuple[str, str]:
        kind = ROUTE_TARGETS[key]
        if kind == "igw":
            if value == "local":
                return "local", "local"
            return kind, self._ref("internet_gateways", value, path, vpc).name
        if kind == "nat":
            return kind, self._ref("nat_gateways", value, path, vpc).name
        if kind == "vpce":
            endpoint: VpcEndpoint = self._ref("vpc_endpoints", value, path, vpc)
            if endpoint.type != "GatewayLoadBalancer":
                reason = f"VPC endpoint {endpoint.name} is {endpoint.type}; routes take GatewayLoadBalancer endpoints"
                raise _Invalid(path, reason)
            return kind, endpoint.name
        if kind == "tgw":
            tgw = self._ref("transit_gateways", value, path)
            if not any(a.transit_gateway == tgw.name and a.vpc == vpc.name
                       for a in self.built["transit_gateway_attachments"].values()):
                raise _Invalid(path, f"VPC {vpc.name} is not attached to transit gateway {tgw.name}: "
                                     "give it a transit_gateway_attachments entry first")
            return kind, tgw.name
        if kind == "eni":
            instance = self._interface(value, path)
            self._check_vpc("instances", instance, vpc, path)
            return kind, instance.name
        return kind, self._ref("instances", value, path, vpc).name

    def _interface(self, value: str, path: str) -> Instance:
        """An instance by its ENI's ID, or by its own name or ID."""
        for instance in self.built["instances"].values():
            if instance.eni_id == value:
                return instance
        if value.startswith("eni-"):
            raise _Invalid(path, f"unknown network interface '{value}'")
        return self._ref("instances", value, path)

    def _network_acls(self) -> None:
        implicit = {}
        for vpc in self.built["vpcs"].values():
            name = f"{vpc.name}-default-acl"
            self._implicit(name, f"the default network ACL of VPC {vpc.name}")
            allow_all = tuple(NaclEntry(100, "-1", "allow", egress, ANYWHERE) for egress in (False, True))
            implicit[name] = NetworkAcl(name, self._id("acl", vpc.account, name), vpc.name, allow_all, (), default=True)
        acl_of_subnet: dict[str, str] = {}
        for spec in self.doc.specs["network_acls"]:
            vpc = self._vpc_of(spec)
            entries: list[NaclEntry] = []
            index_of: dict[tuple[int, bool], int] = {}  # (rule number, egress) -> its entry
            per_direction: dict[bool, int] = {}
            for i, entry in enumerate(spec.props.get("Entries", [])):
                way = "outbound" if entry.egress else "inbound"
                self._count(per_direction, entry.egress, RULES_PER_NACL, f"{spec.at('Entries')}[{i}]",
                            lambda n: f"network ACL {spec.name} has {n} {way} rules")  # fmt: skip
                j = index_of.setdefault((entry.rule_number, entry.egress), i)
                if j != i:
                    direction = "egress" if entry.egress else "ingress"
                    raise _Invalid(
                        f"{spec.at('Entries')}[{i}].RuleNumber",
                        f"{direction} rule {entry.rule_number} is already Entries[{j}]",
                    )
                entries.append(entry)
            subnets = self._associate(spec, "SubnetAssociations", "subnets", vpc, acl_of_subnet)
            entries.sort(key=lambda e: (e.egress, e.rule_number))
            acl = NetworkAcl(spec.name, self._id("acl", vpc.account, spec.name), vpc.name, tuple(entries), subnets)
            self._add("network_acls", acl)
        self.built["network_acls"] = {**implicit, **self.built["network_acls"]}


def _route_refusal(
    destination: IPv4Network, kind: str, vpc_cidr: IPv4Network, subnet_cidrs: set[IPv4Network], edge: bool
) -> str | None:
    """Why AWS would refuse this route, or None."""
    middlebox = ("instance", "eni", "vpce") if edge else ("nat", "instance", "eni", "vpce")
    if kind == "local" and destination != vpc_cidr:
        return f"only the VPC CIDR {vpc_cidr} routes to local"
    if edge and kind not in ("local", "instance", "eni", "vpce"):
        return (
            "a table edge-associated with a gateway can only route to local, an instance, a network interface "
            "or a Gateway Load Balancer endpoint"
        )
    if destination == vpc_cidr:
        if kind != "local" and not edge:
            return f"{destination} is the VPC CIDR: its route is the local route, which can only target local"
        return None
    if destination.subnet_of(vpc_cidr):
        if destination not in subnet_cidrs:
            return (
                f"{destination} is more specific than the local route ({vpc_cidr}) "
                "but is not exactly a subnet's CIDR, as AWS requires"
            )
        if kind not in middlebox:
            allowed = "an instance, a network interface or a Gateway Load Balancer endpoint"
            allowed = allowed if edge else f"a NAT gateway, {allowed}"
            return f"a route to subnet CIDR {destination} (more specific than local) must target {allowed}"
        return None
    if edge:
        return f"a table edge-associated with a gateway routes only the VPC CIDR or a subnet's CIDR, not {destination}"
    return None
