"""EC2 and VPC in the lab file: VPCs, subnets, internet and NAT gateways, route tables,
security groups, network ACLs, instances and the internet's hosts.

The sections' field tables (pass 1), and their defaults, validation and references (pass 2);
routes and network ACLs in routing.py, the rules' permissions in rules.py.
"""
from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import IPv4Network
from typing import Any

from ..alloc import ELASTIC_IP_POOL, internet_pool
from ..appliance import ApplianceConfig, ApplianceConfigError
from ..common import _AddressClaim, _assign
from ..ids import hostname_for
from ..quotas import NAT_GATEWAYS_PER_AZ, RULES_PER_SG, SUBNETS_PER_VPC, VPCS_PER_REGION
from ..reader import (
    ADDRESS,
    BOOLEAN,
    NAMES,
    TEXT,
    Field,
    _account,
    _choice,
    _cidr_sized,
    _commands,
    _describe,
    _dns_name,
    _Invalid,
    _leaf,
    _list_of,
    _Spec,
)
from ..resources import Instance, InternetGateway, InternetHost, NatGateway, SecurityGroup, SgRule, Subnet, Vpc
from .routing import Ec2RoutingBuilder, _route
from .rules import ALL_TRAFFIC_OUT, _nacl_entry, _sg_rule, permission_key
from .rules import port_range, same_permission  # the live changes' (model.changes) use of EC2


def _appliance(value: Any, path: str) -> dict[str, Any]:
    """The reference appliance's settings, validated as `vpclab appliance` reads them."""
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected a mapping of appliance settings, got {_describe(value)}")
    try:
        ApplianceConfig.from_dict(value)
    except ApplianceConfigError as e:
        raise _Invalid(path + e.where[len("appliance") :], e.reason) from None
    return value


VPC_CIDR = _leaf(_cidr_sized(16, 28))

# section -> (fields of each resource, required keys)
RESOURCE_SECTIONS: dict[str, tuple[dict[str, Field], tuple[str, ...]]] = {
    "vpcs": (
        {
            "CidrBlock": VPC_CIDR,
            "EnableDnsSupport": BOOLEAN,
            "EnableDnsHostnames": BOOLEAN,
            "Account": _leaf(_account),
        },
        ("CidrBlock",),
    ),
    "subnets": (
        {"VpcId": TEXT, "CidrBlock": VPC_CIDR, "AvailabilityZone": TEXT},
        ("VpcId", "CidrBlock"),
    ),
    "route_tables": (
        {
            "VpcId": TEXT,
            "Main": BOOLEAN,
            "Routes": _list_of(_route),
            "SubnetAssociations": NAMES,
            "EdgeAssociations": NAMES,
        },
        ("VpcId",),
    ),
    "internet_gateways": ({"VpcId": TEXT}, ("VpcId",)),
    "nat_gateways": (
        {"SubnetId": TEXT, "PrivateIpAddress": ADDRESS, "PublicIp": ADDRESS},
        ("SubnetId",),
    ),
    "security_groups": (
        {
            "VpcId": TEXT,
            "GroupDescription": TEXT,
            "SecurityGroupIngress": _list_of(_sg_rule("SourceSecurityGroupId")),
            "SecurityGroupEgress": _list_of(_sg_rule("DestinationSecurityGroupId")),
        },
        ("VpcId",),
    ),
    "network_acls": (
        {"VpcId": TEXT, "Entries": _list_of(_nacl_entry), "SubnetAssociations": NAMES},
        ("VpcId",),
    ),
    "instances": (
        {
            "SubnetId": TEXT,
            "PrivateIpAddress": ADDRESS,
            "AssociatePublicIpAddress": BOOLEAN,
            "PublicIpAddress": ADDRESS,
            "SecurityGroupIds": NAMES,
            "SourceDestCheck": BOOLEAN,
            "Role": _leaf(_choice("instance", "appliance")),
            "Run": _commands,
            "DefaultServices": BOOLEAN,
            "TestPageMessage": TEXT,
            "Appliance": _appliance,
        },
        ("SubnetId",),
    ),
    "hosts": (  # internet.hosts
        {"Ip": ADDRESS, "DnsName": _leaf(_dns_name), "Run": _commands, "DefaultServices": BOOLEAN},
        (),
    ),
}
INTERNET_FIELDS = {"CidrBlock": _leaf(_cidr_sized(8, 28)), "hosts": lambda value, path: value}  # hosts: resources
SECTIONS = ("vpcs", "subnets", "route_tables", "internet_gateways", "nat_gateways", "security_groups",
            "network_acls", "instances", "internet")  # fmt: skip
KIND_LABELS = {
    "vpcs": "VPC",
    "subnets": "subnet",
    "route_tables": "route table",
    "internet_gateways": "internet gateway",
    "nat_gateways": "NAT gateway",
    "security_groups": "security group",
    "network_acls": "network ACL",
    "instances": "instance",
    "hosts": "internet host",
}


class Ec2Builder(Ec2RoutingBuilder):
    """VPCs, subnets, gateways, security groups, instances and internet hosts; route tables and
    network ACLs from Ec2RoutingBuilder."""

    def _vpcs(self) -> None:
        per_account: dict[str, int] = {}
        for spec in self.doc.specs["vpcs"]:
            cidr: IPv4Network = spec.props["CidrBlock"]
            for taken, what in ((ELASTIC_IP_POOL, "the Elastic IP pool"), (self.internet_cidr, "the internet")):
                if cidr.overlaps(taken):
                    raise _Invalid(spec.at("CidrBlock"), f"{cidr} overlaps {what} {taken}")
            account = spec.props.get("Account", self.account)
            self._count(per_account, account, VPCS_PER_REGION, spec.path,
                        lambda n: f"account {account} would have {n} VPCs in {self.region}")  # fmt: skip
            self._add(
                "vpcs",
                Vpc(
                    spec.name,
                    self._id("vpc", account, spec.name),
                    cidr,
                    account,
                    spec.props.get("EnableDnsSupport", True),
                    spec.props.get("EnableDnsHostnames", False),
                ),
            )

    def _subnets(self) -> None:
        per_vpc: dict[str, int] = {}
        for spec in self.doc.specs["subnets"]:
            vpc = self._vpc_of(spec)
            self._count(per_vpc, vpc.name, SUBNETS_PER_VPC, spec.path,
                        lambda n: f"VPC {vpc.name} would have {n} subnets")  # fmt: skip
            cidr: IPv4Network = spec.props["CidrBlock"]
            if not cidr.subnet_of(vpc.cidr):
                raise _Invalid(spec.at("CidrBlock"), f"{cidr} is outside VPC {vpc.name} ({vpc.cidr})")
            for other in self.built["subnets"].values():
                if other.vpc == vpc.name and cidr.overlaps(other.cidr):
                    raise _Invalid(spec.at("CidrBlock"), f"{cidr} overlaps subnet {other.name} ({other.cidr})")
            zone = self._zone(spec.props.get("AvailabilityZone", "a"), spec.at("AvailabilityZone"))
            self._add("subnets", Subnet(spec.name, self._id("subnet", vpc.account, spec.name), vpc.name, zone, cidr))

    def _zone(self, value: str, path: str) -> str:
        if re.fullmatch(r"[a-f]", value):
            return self.region + value
        if re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d{1,2}[a-f]", value):
            if value[:-1] != self.region:
                raise _Invalid(path, f"zone {value} is not in the lab's region {self.region}")
            return value
        raise _Invalid(path, f"expected a zone letter a-f or a zone name like {self.region}a, got '{value}'")

    def _internet_gateways(self) -> None:
        for spec in self.doc.specs["internet_gateways"]:
            vpc = self._vpc_of(spec)
            for other in self.built["internet_gateways"].values():
                if other.vpc == vpc.name:
                    raise _Invalid(spec.at("VpcId"), f"VPC {vpc.name} already has internet gateway {other.name}")
            igw = InternetGateway(spec.name, self._id("igw", vpc.account, spec.name), vpc.name)
            self._add("internet_gateways", igw)

    def _security_groups(self) -> None:
        groups = self.built["security_groups"]
        for vpc in self.built["vpcs"].values():
            name = f"{vpc.name}-default"
            self._implicit(name, f"the default security group of VPC {vpc.name}")
            everything_from_members = SgRule("-1", group=name)
            self._add(
                "security_groups",
                SecurityGroup(
                    name,
                    self._id("sg", vpc.account, name),
                    vpc.name,
                    "default VPC security group",
                    (everything_from_members,),
                    (ALL_TRAFFIC_OUT,),
                ),
            )
        # Groups first, rules second: a rule may name any group, itself included.
        specs = self.doc.specs["security_groups"]
        for spec in specs:
            vpc = self._vpc_of(spec)
            description = spec.props.get("GroupDescription", "")
            self._add(
                "security_groups",
                SecurityGroup(spec.name, self._id("sg", vpc.account, spec.name), vpc.name, description, (), ()),
            )
        for spec in specs:
            group = groups[spec.name]
            ingress = self._rules(group, spec, "SecurityGroupIngress", "SourceSecurityGroupId")
            if "SecurityGroupEgress" in spec.props:
                egress = self._rules(group, spec, "SecurityGroupEgress", "DestinationSecurityGroupId")
            else:
                egress = (ALL_TRAFFIC_OUT,)
            groups[spec.name] = replace(group, ingress=ingress, egress=egress)

    def _rules(self, group: SecurityGroup, spec: _Spec, key: str, peer_key: str) -> tuple[SgRule, ...]:
        rules: list[SgRule] = []
        index_of: dict[SgRule, int] = {}  # permission -> its first rule: one lookup per rule, not a scan
        direction = "inbound" if key == "SecurityGroupIngress" else "outbound"
        for i, rule in enumerate(spec.props.get(key, [])):
            path = f"{spec.at(key)}[{i}]"
            self._within(RULES_PER_SG, i + 1, path, lambda n: f"security group {group.name} has {n} {direction} rules")
            if rule.group is not None:
                vpc = self.built["vpcs"][group.vpc]
                peer = self._ref("security_groups", rule.group, f"{path}.{peer_key}", vpc)
                rule = replace(rule, group=peer.name)
            j = index_of.setdefault(permission_key(rule), i)
            if j != i:
                raise _Invalid(path, f"this rule duplicates {key}[{j}]")
            rules.append(rule)
        return tuple(rules)

    def _ec2_claims(self) -> list[_AddressClaim]:
        """The addresses NAT gateways and instances take."""
        claims = [self._nat_claim(spec) for spec in self.doc.specs["nat_gateways"]]
        per_zone: dict[tuple[str, str], int] = {}
        for claim in claims:
            account, zone = self._subnet_vpc(claim.subnet.name).account, claim.subnet.az
            self._count(per_zone, (account, zone), NAT_GATEWAYS_PER_AZ, claim.spec.path,
                        lambda n: f"account {account} would have {n} NAT gateways in {zone}")  # fmt: skip
        return claims + [self._instance_claim(spec) for spec in self.doc.specs["instances"]]

    def _ec2_addressed(self, claims: list[_AddressClaim]) -> None:
        """The NAT gateways and instances, once their claims have addresses."""
        for claim in claims:
            spec, subnet = claim.spec, claim.subnet
            if spec.section not in ("nat_gateways", "instances"):
                continue
            account = self._subnet_vpc(subnet.name).account
            if spec.section == "nat_gateways":
                resource: Any = NatGateway(
                    spec.name,
                    self._id("nat", account, spec.name),
                    subnet.name,
                    self._id("eni", account, spec.name),
                    claim.private_ip,
                    self._id("eipalloc", account, spec.name),
                    claim.public_ip,
                )
            else:
                role = spec.props.get("Role", "instance")
                resource = Instance(
                    name=spec.name,
                    id=self._id("i", account, spec.name),
                    subnet=subnet.name,
                    eni_id=self._id("eni", account, spec.name),
                    private_ip=claim.private_ip,
                    public_ip=claim.public_ip,
                    security_groups=claim.groups,
                    source_dest_check=spec.props.get("SourceDestCheck", True),
                    role=role,
                    run=spec.props.get("Run", ()),
                    appliance=spec.props.get("Appliance"),
                    default_services=spec.props.get("DefaultServices", role == "instance"),
                    hostname=hostname_for(claim.private_ip, self.region),
                    test_page_message=spec.props.get("TestPageMessage"),
                )
                if resource.test_page_message is not None and not resource.default_services:
                    raise _Invalid(
                        spec.at("TestPageMessage"),
                        "the message is shown on the test page, which this instance does not serve: it needs "
                        "DefaultServices: true",
                    )
            self._add(spec.section, resource)

    def _nat_claim(self, spec: _Spec) -> _AddressClaim:
        subnet = self._subnet_for(spec)
        self._need_internet_gateway(subnet, "a NAT gateway (public, with an Elastic IP)", spec.at("SubnetId"))
        return _AddressClaim(
            spec, f"NAT gateway {spec.name}", subnet, True,
            explicit=spec.props.get("PrivateIpAddress"), explicit_path=spec.at("PrivateIpAddress"),
            explicit_public=spec.props.get("PublicIp"), explicit_public_path=spec.at("PublicIp"),
        )  # fmt: skip

    def _instance_claim(self, spec: _Spec) -> _AddressClaim:
        subnet = self._subnet_for(spec)
        vpc = self._subnet_vpc(subnet.name)
        groups = self._security_groups_of(spec, vpc, "an instance needs at least one security group")
        associate = spec.props.get("AssociatePublicIpAddress")
        if "PublicIpAddress" in spec.props and associate is False:
            raise _Invalid(spec.at("AssociatePublicIpAddress"), "false contradicts the PublicIpAddress given")
        public = "PublicIpAddress" in spec.props or bool(associate)
        if public:
            key = "PublicIpAddress" if "PublicIpAddress" in spec.props else "AssociatePublicIpAddress"
            self._need_internet_gateway(subnet, "a public IP address", spec.at(key))
        if "Appliance" in spec.props:
            if spec.props.get("Role", "instance") != "appliance":
                raise _Invalid(
                    spec.at("Appliance"), "Appliance configures a GWLB appliance: it needs Role: appliance"
                )
            if spec.props.get("Run"):
                raise _Invalid(
                    spec.at("Appliance"),
                    "Appliance configures vpclab's appliance (reference or hairpin), which does not run when Run "
                    "is given; drop one",
                )
        return _AddressClaim(
            spec, f"instance {spec.name}", subnet, public, groups,
            explicit=spec.props.get("PrivateIpAddress"), explicit_path=spec.at("PrivateIpAddress"),
            explicit_public=spec.props.get("PublicIpAddress"), explicit_public_path=spec.at("PublicIpAddress"),
        )  # fmt: skip

    def _internet_hosts(self) -> None:
        specs = self.doc.specs["hosts"]
        pool = internet_pool(self.internet_cidr)
        addresses = {
            spec.name: _assign(pool, spec.props["Ip"], f"internet host {spec.name}", spec.at("Ip"))
            for spec in specs
            if "Ip" in spec.props
        }
        for spec in specs:
            if spec.name not in addresses:
                addresses[spec.name] = _assign(pool, None, f"internet host {spec.name}", spec.path)
        owner_of_dns_name: dict[str, str] = {}
        for spec in specs:
            dns_name = spec.props.get("DnsName", f"{spec.name.lower()}.internet.test")
            if dns_name in owner_of_dns_name:
                raise _Invalid(
                    spec.at("DnsName"), f"{dns_name} is already the name of internet host {owner_of_dns_name[dns_name]}"
                )
            owner_of_dns_name[dns_name] = spec.name
            self._add(
                "hosts",
                InternetHost(
                    spec.name,
                    addresses[spec.name],
                    dns_name,
                    spec.props.get("Run", ()),
                    spec.props.get("DefaultServices", True),
                ),
            )


BUILDER = Ec2Builder
CLAIMS = "_ec2_claims"  # the builder's method that lists the addresses its resources take in subnets
STEPS = {  # loader.PHASES
    "networks": ("_vpcs", "_subnets", "_internet_gateways", "_security_groups"),
    "addresses": ("_ec2_addressed",),
    "routes": ("_route_tables", "_network_acls", "_internet_hosts"),
}
