"""PrivateLink in the lab file: endpoint services and VPC endpoints (interface and Gateway Load
Balancer endpoints).

The sections' field tables (pass 1), and their defaults, validation and references (pass 2).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from .common import _AddressClaim, _BuilderBase, _one_subnet_per_az
from .ids import aws_id
from .quotas import ENDPOINTS_PER_VPC
from .reader import (
    ADDRESS,
    BOOLEAN,
    NAMES,
    TEXT,
    Field,
    _did_you_mean,
    _Invalid,
    _leaf,
    _list_of,
    _mapping,
    _show,
    _Spec,
    _text,
    _unsupported,
)
from .resources import EndpointEni, LoadBalancer, VpcEndpoint, VpcEndpointService

# -- Endpoint service principals --

PRINCIPAL = re.compile(r"arn:aws:iam::(\d{12}):(root|role/[\w+=,.@-]{1,64}|user/[\w+=,.@-]{1,64})")


def parse_principal(value: Any) -> str:
    """`*` or `arn:aws:iam::<account>:root|role/<name>|user/<name>` (no paths, as AWS)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a principal ARN or *, got {_show(value)}")
    if value == "*" or PRINCIPAL.fullmatch(value):
        return value
    if re.fullmatch(r"\d{12}", value):
        raise ValueError(f"a principal is an ARN: write arn:aws:iam::{value}:root for the whole account")
    raise ValueError(
        f"'{value}' is not a principal: expected arn:aws:iam::<account>:root, "
        "arn:aws:iam::<account>:role/<name>, arn:aws:iam::<account>:user/<name> or *"
    )


def principal_account(principal: str) -> str | None:
    """The account a principal belongs to; None for `*` (everyone)."""
    match = PRINCIPAL.fullmatch(principal)
    return match[1] if match else None


def principal_allows(principals: Iterable[str], account: str) -> bool:
    """Whether `account` may connect: a role or user counts as its account, `*` as everyone."""
    return any(p == "*" or principal_account(p) == account for p in principals)


ENDPOINT_TYPES = ("GatewayLoadBalancer", "Interface", "Gateway")


def _endpoint_type(value: Any) -> str:
    text = _text(value)
    for choice in ENDPOINT_TYPES:
        if text.lower() == choice.lower():
            return choice
    raise ValueError(f"expected one of {', '.join(ENDPOINT_TYPES)}, got '{text}'{_did_you_mean(text, ENDPOINT_TYPES)}")

GATEWAY_ONLY = "a Gateway Load Balancer endpoint has"


# section -> (fields of each resource, required keys)
RESOURCE_SECTIONS: dict[str, tuple[dict[str, Field], tuple[str, ...]]] = {
    "vpc_endpoint_services": (
        {
            "GatewayLoadBalancerArns": NAMES,
            "NetworkLoadBalancerArns": NAMES,
            "AcceptanceRequired": BOOLEAN,
            "AllowedPrincipals": _list_of(_leaf(parse_principal)),
        },
        (),
    ),
    "vpc_endpoints": (
        {
            "VpcEndpointType": _leaf(_endpoint_type),
            "ServiceName": TEXT,
            "VpcId": TEXT,
            "SubnetIds": NAMES,
            "SecurityGroupIds": NAMES,
            "SubnetConfigurations": _list_of(
                _mapping({"SubnetId": TEXT, "Ipv4": ADDRESS, "Ipv6": _unsupported("IPv6 addresses")}, ("SubnetId",))
            ),
            "PolicyDocument": lambda value, path: value,
            "PrivateDnsEnabled": BOOLEAN,
        },
        ("ServiceName", "VpcId"),
    ),
}
SECTIONS = ("vpc_endpoint_services", "vpc_endpoints")
KIND_LABELS = {
    "vpc_endpoint_services": "endpoint service",
    "vpc_endpoints": "VPC endpoint",
}


class PrivateLinkBuilder(_BuilderBase):
    """Endpoint services and the VPC endpoints that connect to them."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.endpoint_enis: dict[str, list[EndpointEni]] = {}  # endpoint name -> its interfaces, once allocated
        self.endpoint_groups: dict[str, tuple[str, ...]] = {}  # interface endpoint name -> its security groups
        self.service_of: dict[str, str] = {}  # load balancer -> its endpoint service

    def _privatelink_claims(self) -> list[_AddressClaim]:
        """The addresses the endpoints' network interfaces take."""
        return [claim for spec in self.doc.specs["vpc_endpoints"] for claim in self._endpoint_claims(spec)]

    def _endpoint_services(self) -> None:
        for spec in self.doc.specs["vpc_endpoint_services"]:
            if "GatewayLoadBalancerArns" in spec.props and "NetworkLoadBalancerArns" in spec.props:
                raise _Invalid(
                    spec.at("NetworkLoadBalancerArns"),
                    "give GatewayLoadBalancerArns or NetworkLoadBalancerArns, not both: an endpoint service "
                    "fronts one kind of load balancer",
                )
            if "NetworkLoadBalancerArns" in spec.props:
                key, lb_type, service_type = "NetworkLoadBalancerArns", "network", "Interface"
            elif "GatewayLoadBalancerArns" in spec.props:
                key, lb_type, service_type = "GatewayLoadBalancerArns", "gateway", "GatewayLoadBalancer"
            else:
                raise _Invalid(
                    spec.at("NetworkLoadBalancerArns"),
                    "required key is missing: an endpoint service needs NetworkLoadBalancerArns (for interface "
                    "endpoints) or GatewayLoadBalancerArns (for Gateway Load Balancer endpoints)",
                )
            names: list[str] = []
            account: str | None = None
            if not spec.props[key]:
                raise _Invalid(spec.at(key), f"an endpoint service needs at least one {lb_type.title()} Load Balancer")
            for i, value in enumerate(spec.props[key]):
                path = f"{spec.at(key)}[{i}]"
                lb: LoadBalancer = self._ref("load_balancers", value, path)
                if lb.type != lb_type:
                    raise _Invalid(path, f"load balancer {lb.name} is a {lb.type} load balancer, not a {lb_type} one")
                if lb.name in self.service_of:
                    raise _Invalid(
                        path, f"load balancer {lb.name} already serves endpoint service {self.service_of[lb.name]}"
                    )
                lb_account = self.built["vpcs"][lb.vpc].account
                if account is not None and lb_account != account:
                    raise _Invalid(
                        path, f"load balancer {lb.name} is in account {lb_account}, the service's others in {account}"
                    )
                account = lb_account
                self.service_of[lb.name] = spec.name
                names.append(lb.name)
            principals: list[str] = []
            for i, principal in enumerate(spec.props.get("AllowedPrincipals", [])):
                if principal in principals:
                    raise _Invalid(f"{spec.at('AllowedPrincipals')}[{i}]", f"principal {principal} is listed twice")
                principals.append(principal)
            assert account is not None
            service_id = aws_id("vpce-svc", account, self.region, spec.name)
            self._add(
                "vpc_endpoint_services",
                VpcEndpointService(
                    name=spec.name,
                    id=service_id,
                    service_name=f"com.amazonaws.vpce.{self.region}.{service_id}",
                    type=service_type,
                    load_balancers=tuple(names),
                    acceptance_required=spec.props.get("AcceptanceRequired", True),
                    allowed_principals=tuple(principals),
                    account=account,
                ),
            )

    def _endpoint_claims(self, spec: _Spec) -> list[_AddressClaim]:
        """A GatewayLoadBalancer endpoint: one interface in one subnet of its VPC. An
        Interface endpoint: one interface in each of its subnets, at most one per AZ."""
        endpoint_type = spec.props.get("VpcEndpointType")
        if endpoint_type is None:
            raise _Invalid(
                spec.at("VpcEndpointType"),
                "VpcEndpointType defaults to Gateway, as in CloudFormation, and gateway endpoints (S3, DynamoDB) "
                "are not supported yet: write VpcEndpointType: Interface or GatewayLoadBalancer",
            )
        if endpoint_type == "Gateway":
            raise _Invalid(spec.at("VpcEndpointType"), "gateway endpoints (S3, DynamoDB) are not supported yet")
        if endpoint_type == "GatewayLoadBalancer":
            for key, what in (
                ("SecurityGroupIds", "no security groups"),
                ("PolicyDocument", "no endpoint policy"),
                ("PrivateDnsEnabled", "no private DNS"),
                ("SubnetConfigurations", "no subnet configurations: its address comes from its subnet"),
            ):
                if key in spec.props:
                    raise _Invalid(spec.at(key), f"{GATEWAY_ONLY} {what}")
        else:
            if "PolicyDocument" in spec.props:
                raise _Invalid(spec.at("PolicyDocument"), "endpoint policies are not supported yet")
            if spec.props.get("PrivateDnsEnabled"):
                raise _Invalid(
                    spec.at("PrivateDnsEnabled"),
                    "private DNS names for interface endpoints are not supported yet; alias the endpoint's "
                    "DNS name in a private hosted zone instead",
                )
        vpc = self._vpc_of(spec)
        subnets = spec.props.get("SubnetIds", [])
        if endpoint_type == "GatewayLoadBalancer" and len(subnets) != 1:
            raise _Invalid(
                spec.at("SubnetIds"), f"{GATEWAY_ONLY} exactly one subnet (one AZ), got {len(subnets)}"
            )
        if not subnets:
            raise _Invalid(spec.at("SubnetIds"), "an interface endpoint needs at least one subnet (one per AZ)")
        if endpoint_type == "Interface":
            self.endpoint_groups[spec.name] = self._security_groups_of(
                spec, vpc, f"an interface endpoint needs at least one security group; leave SecurityGroupIds out for "
                f"{vpc.name}-default",
            )  # fmt: skip
        claims: list[_AddressClaim] = []
        for i, value in enumerate(subnets):
            path = f"{spec.at('SubnetIds')}[{i}]"
            subnet = self._ref("subnets", value, path, vpc)
            _one_subnet_per_az(claims, subnet, path, "interface endpoint")
            claims.append(_AddressClaim(spec, f"VPC endpoint {spec.name}", subnet, False, path=path))
        for i, config in enumerate(spec.props.get("SubnetConfigurations", [])):
            path = f"{spec.at('SubnetConfigurations')}[{i}]"
            subnet = self._ref("subnets", config["SubnetId"], f"{path}.SubnetId", vpc)
            claim = next((c for c in claims if c.subnet.name == subnet.name), None)
            if claim is None:
                raise _Invalid(f"{path}.SubnetId", f"subnet {subnet.name} is not one of the endpoint's SubnetIds")
            if claim.explicit_path:
                raise _Invalid(f"{path}.SubnetId", f"subnet {subnet.name} is configured twice")
            claim.explicit, claim.explicit_path = config.get("Ipv4"), f"{path}.Ipv4"
        return claims

    def _endpoint_interfaces(self, claims: list[_AddressClaim]) -> None:
        """The endpoints' network interfaces, once their claims have addresses."""
        for claim in claims:
            spec, subnet = claim.spec, claim.subnet
            if spec.section == "vpc_endpoints":
                account = self._subnet_vpc(subnet.name).account
                eni = EndpointEni(subnet.name, subnet.az, self._id("eni", account, f"{spec.name}/{subnet.name}"),
                                  claim.private_ip)  # fmt: skip
                self.endpoint_enis.setdefault(spec.name, []).append(eni)

    def _endpoints(self) -> None:
        per_vpc: dict[str, int] = {}
        for spec in self.doc.specs["vpc_endpoints"]:
            vpc = self._vpc_of(spec)
            self._count(per_vpc, vpc.name, ENDPOINTS_PER_VPC, spec.path,
                        lambda n: f"VPC {vpc.name} would have {n} interface and Gateway Load Balancer "
                                  "endpoints")  # fmt: skip
            path = spec.at("ServiceName")
            service: VpcEndpointService = self._ref("vpc_endpoint_services", spec.props["ServiceName"], path)
            endpoint_type = spec.props["VpcEndpointType"]
            if service.type != endpoint_type:
                raise _Invalid(path, f"endpoint service {service.name} is of type {service.type}, not {endpoint_type}")
            if not principal_allows(service.allowed_principals, vpc.account):
                raise _Invalid(
                    path,
                    f"account {vpc.account} (VPC {vpc.name}'s) is not an allowed principal of endpoint service "
                    f"{service.name} ({service.id}): add arn:aws:iam::{vpc.account}:root to its AllowedPrincipals",
                )
            enis = self.endpoint_enis[spec.name]
            balancers = [self.built["load_balancers"][name] for name in service.load_balancers]
            zones = sorted({node.az for lb in balancers for node in lb.nodes})
            for i, eni in enumerate(enis):
                if eni.az not in zones:
                    raise _Invalid(
                        f"{spec.at('SubnetIds')}[{i}]",
                        f"subnet {eni.subnet} is in {eni.az}, but endpoint service {service.name} is only in "
                        f"{', '.join(zones)} (where its load balancers have nodes)",
                    )
            endpoint_id = aws_id("vpce", vpc.account, self.region, spec.name)
            dns_entries: tuple[str, ...] = ()
            if endpoint_type == "Interface":
                suffix = f"{service.id}.{self.region}.vpce.amazonaws.com"
                dns_entries = (f"{endpoint_id}.{suffix}", *(f"{endpoint_id}-{eni.az}.{suffix}" for eni in enis))
            self._add(
                "vpc_endpoints",
                VpcEndpoint(
                    name=spec.name,
                    id=endpoint_id,
                    type=endpoint_type,
                    vpc=vpc.name,
                    service=service.name,
                    enis=tuple(enis),
                    state="pendingAcceptance" if service.acceptance_required else "available",
                    account=vpc.account,
                    security_groups=self.endpoint_groups.get(spec.name, ()),
                    dns_entries=dns_entries,
                ),
            )


BUILDER = PrivateLinkBuilder
CLAIMS = "_privatelink_claims"  # the builder's method that lists the addresses its resources take in subnets
STEPS = {"addresses": ("_endpoint_interfaces",), "attachments": ("_endpoint_services", "_endpoints")}  # loader.PHASES
