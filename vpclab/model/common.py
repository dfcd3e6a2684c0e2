"""What every service's pass 2 shares: references between resources, quotas and the
addresses that NAT gateways, instances, load balancer nodes and endpoints take in subnets."""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Callable, Mapping

from .alloc import DEFAULT_INTERNET_CIDR, AddressError, AddressPool, elastic_ip_pool, subnet_pool
from .ids import aws_id
from .quotas import SGS_PER_ENI, over_quota
from .reader import _a, _did_you_mean, _Invalid, _Spec
from .resources import Subnet, Vpc


@dataclass
class _AddressClaim:
    """A resource's address in one subnet, before allocation: a NAT gateway, an
    instance, a load balancer node or a VPC endpoint's network interface."""

    spec: _Spec
    owner: str  # "instance web-1", for messages
    subnet: Subnet
    public: bool  # needs a public address
    groups: tuple[str, ...] = ()  # an instance's security groups
    explicit: IPv4Address | None = None  # the private address the file gives
    explicit_path: str = ""  # where it gives it
    explicit_public: IPv4Address | None = None  # the public address the file gives
    explicit_public_path: str = ""  # where it gives it
    path: str = ""  # where a failed allocation is reported; the resource's path if empty
    private_ip: IPv4Address | None = None
    public_ip: IPv4Address | None = None


def _one_subnet_per_az(claims: list[_AddressClaim], subnet: Subnet, path: str, what: str) -> None:
    """A load balancer or interface endpoint takes one subnet per AZ: `subnet` may join `claims`."""
    for earlier in claims:
        if earlier.subnet.az == subnet.az:
            raise _Invalid(
                path,
                f"subnet {subnet.name} is in {subnet.az}, where the {what} already has subnet "
                f"{earlier.subnet.name}; {_a(what)} takes one subnet per AZ",
            )


def _assign(pool: AddressPool, explicit: IPv4Address | None, owner: str, path: str) -> IPv4Address:
    """Take the explicit address, or else the lowest free one."""
    try:
        if explicit is None:
            return pool.allocate(owner)
        pool.take(explicit, owner)
        return explicit
    except AddressError as e:
        raise _Invalid(path, str(e)) from None


def _is_named(resource: Any, value: str) -> bool:
    """Whether `value` is the resource's ID, ARN or (endpoint service) service name."""
    return value in (getattr(resource, key, None) for key in ("id", "arn", "service_name"))


class _BuilderBase:
    """The state and helpers each service's builder uses; the loader composes the services."""

    # every service's section -> its label ("security group"), set by the loader
    KIND_LABELS: Mapping[str, str] = {}

    def __init__(self, document: Any, region: str, account: str):
        self.doc = document  # the loader's pass 1: specs, names and the lab and internet sections
        self.region = region
        self.account = account
        self.internet_cidr: IPv4Network = document.internet.get("CidrBlock", DEFAULT_INTERNET_CIDR)
        # section -> name -> resource, as resolved so far (implicit resources included)
        self.built: dict[str, dict[str, Any]] = {section: {} for section in document.specs}
        self.notes: list[str] = []  # "<key path>: <remark>" for what is valid but inert
        self.quotas: dict[str, int] = document.lab.get("quotas", {})  # AWS quota name -> the lab's increase

    def _id(self, prefix: str, account: str, name: str) -> str:
        return aws_id(prefix, account, self.region, name)

    def _ref(self, section: str, value: str, path: str, vpc: Vpc | None = None) -> Any:
        """The resource of `section` that `value` names, by name, ID or ARN (or service name);
        if `vpc` is given, in that VPC."""
        resources = self.built[section]
        found = resources.get(value) or next((r for r in resources.values() if _is_named(r, value)), None)
        if found is not None:
            if vpc is not None:
                self._check_vpc(section, found, vpc, path)
            return found
        label = self.KIND_LABELS[section]
        other = self.doc.name_kinds.get(value)
        if other is not None and other != section:
            raise _Invalid(path, f"'{value}' is {_a(self.KIND_LABELS[other])}, not {_a(label)}")
        raise _Invalid(path, f"unknown {label} '{value}'{_did_you_mean(value, resources)}")

    def _vpc_of(self, spec: _Spec) -> Vpc:
        return self._ref("vpcs", spec.props["VpcId"], spec.at("VpcId"))

    def _subnet_vpc(self, subnet_name: str) -> Vpc:
        return self.built["vpcs"][self.built["subnets"][subnet_name].vpc]

    def _check_vpc(self, section: str, resource: Any, vpc: Vpc, path: str) -> None:
        its_vpc = resource.vpc if hasattr(resource, "vpc") else self.built["subnets"][resource.subnet].vpc
        if its_vpc != vpc.name:
            where, where_not = ("attached to", "to") if section == "internet_gateways" else ("in", "in")
            name = f"{self.KIND_LABELS[section]} {resource.name}"
            raise _Invalid(path, f"{name} is {where} VPC {its_vpc}, not {where_not} VPC {vpc.name}")

    def _associate(self, spec: _Spec, key: str, section: str, vpc: Vpc, taken: dict[str, str]) -> tuple[str, ...]:
        """The resources listed under `key`, each in `vpc` and not yet associated (`taken`: name -> owner)."""
        names = []
        for i, value in enumerate(spec.props.get(key, [])):
            path = f"{spec.at(key)}[{i}]"
            resource = self._ref(section, value, path, vpc)
            if resource.name in taken:
                owner = f"{self.KIND_LABELS[spec.section]} {taken[resource.name]}"
                raise _Invalid(path, f"{self.KIND_LABELS[section]} {resource.name} is already associated with {owner}")
            taken[resource.name] = spec.name
            names.append(resource.name)
        return tuple(names)

    def _implicit(self, name: str, what: str) -> None:
        """Claim the name of a resource vpclab creates, as AWS does, for each VPC."""
        if name in self.doc.name_paths:
            raise _Invalid(self.doc.name_paths[name], f"the name '{name}' is taken by {what}; rename this resource")

    def _add(self, section: str, resource: Any) -> None:
        self.built[section][resource.name] = resource

    def _within(self, quota: str, count: int, path: str, what: Callable[[int], str]) -> None:
        """`count` of what AWS's `quota` limits (`what(count)` says what), refused at `path` if over it."""
        reason = over_quota(self.quotas, quota, count, what(count))
        if reason:
            raise _Invalid(path, reason)

    def _count(self, counts: dict[Any, int], key: Any, quota: str, path: str, what: Callable[[int], str]) -> None:
        """One more of what `quota` limits per `key` (a VPC, an account...)."""
        counts[key] = counts.get(key, 0) + 1
        self._within(quota, counts[key], path, what)

    def _subnet_for(self, spec: _Spec) -> Subnet:
        return self._ref("subnets", spec.props["SubnetId"], spec.at("SubnetId"))

    def _need_internet_gateway(self, subnet: Subnet, what: str, path: str, hint: str = "") -> None:
        vpc = self._subnet_vpc(subnet.name)
        if not any(igw.vpc == vpc.name for igw in self.built["internet_gateways"].values()):
            raise _Invalid(path, f"{what} needs an internet gateway attached to VPC {vpc.name}, and it has none{hint}")

    def _allocate(self, claims: list[_AddressClaim]) -> None:
        """Explicit addresses first, then the lowest free ones, in file order."""
        subnets = {name: subnet_pool(s.cidr, f"subnet {name} ({s.cidr})") for name, s in self.built["subnets"].items()}
        public = elastic_ip_pool()
        for claim in claims:
            if claim.explicit is not None:
                claim.private_ip = _assign(subnets[claim.subnet.name], claim.explicit, claim.owner, claim.explicit_path)
        for claim in claims:
            if claim.explicit_public is not None:
                claim.public_ip = _assign(public, claim.explicit_public, claim.owner, claim.explicit_public_path)
        for claim in claims:
            if claim.private_ip is None:
                claim.private_ip = _assign(subnets[claim.subnet.name], None, claim.owner, claim.path or claim.spec.path)
        for claim in claims:
            if claim.public and claim.public_ip is None:
                claim.public_ip = _assign(public, None, claim.owner, claim.spec.path)

    def _security_groups_of(self, spec: _Spec, vpc: Vpc, none_given: str) -> tuple[str, ...]:
        """The groups of an instance or interface endpoint (`SecurityGroupIds`), all in `vpc`, each
        once: by default the VPC's default group. `none_given` refuses an empty list."""
        groups: list[str] = []
        for i, value in enumerate(spec.props.get("SecurityGroupIds", [f"{vpc.name}-default"])):
            path = f"{spec.at('SecurityGroupIds')}[{i}]"
            eni = f"{self.KIND_LABELS[spec.section]} {spec.name}'s network interface"
            self._within(SGS_PER_ENI, i + 1, path, lambda n: f"{eni} has {n} security groups")
            group = self._ref("security_groups", value, path, vpc)
            if group.name in groups:
                raise _Invalid(path, f"security group {group.name} is listed twice")
            groups.append(group.name)
        if not groups:
            raise _Invalid(spec.at("SecurityGroupIds"), none_given)
        return tuple(groups)
