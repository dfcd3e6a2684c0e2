"""AWS's default service quotas for Amazon VPC, enforced as an account's are, under AWS's
names; a lab file raises one under `lab.quotas`, as a quota increase does.

Source: "Amazon VPC quotas" (docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .reader import _did_you_mean


@dataclass(frozen=True)
class Quota:
    name: str  # as the Service Quotas console and the Amazon VPC quotas page write it
    code: str  # the quota code a quota increase request names, where the quotas page links one
    default: int


QUOTAS: dict[str, Quota] = {
    quota.name: quota
    for quota in (
        Quota("VPCs per Region", "L-F678F1CE", 5),
        Quota("Subnets per VPC", "L-407747CB", 200),
        Quota("NAT gateways per Availability Zone", "L-FE5A380F", 5),
        Quota("Routes per route table", "L-93826ACB", 50),
        Quota("Rules per network ACL", "L-2AEEBF1A", 20),
        Quota("Inbound or outbound rules per security group", "L-0EA8095F", 60),
        Quota("Security groups per network interface", "L-2AFB9258", 5),
        Quota("Interface and Gateway Load Balancer endpoints per VPC", "", 50),  # raised through AWS Support
    )
}
VPCS_PER_REGION = "VPCs per Region"
SUBNETS_PER_VPC = "Subnets per VPC"
NAT_GATEWAYS_PER_AZ = "NAT gateways per Availability Zone"
ROUTES_PER_TABLE = "Routes per route table"
RULES_PER_NACL = "Rules per network ACL"
RULES_PER_SG = "Inbound or outbound rules per security group"
SGS_PER_ENI = "Security groups per network interface"
ENDPOINTS_PER_VPC = "Interface and Gateway Load Balancer endpoints per VPC"


def quota_increase(name: Any, value: Any) -> int:
    """The value a lab file gives quota `name`: a whole number no lower than AWS's default
    (an increase raises a quota, it never lowers one). Raises ValueError(reason)."""
    quota = QUOTAS.get(name) if isinstance(name, str) else None
    if quota is None:
        raise ValueError(f"unknown quota '{name}'{_did_you_mean(str(name), QUOTAS)}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r}")
    if value < quota.default:
        raise ValueError(f"{value} is below AWS's default of {quota.default}: a quota increase only raises a quota")
    return value


def quota_value(increases: Mapping[str, int], name: str) -> int:
    """Quota `name` as the lab has it: its increase, else AWS's default."""
    return increases.get(name, QUOTAS[name].default)


def over_quota(increases: Mapping[str, int], name: str, count: int, what: str) -> str | None:
    """Why `count` of something (`what`: "security group web has 61 inbound rules") is over
    quota `name`, or None if it is within it."""
    limit = quota_value(increases, name)
    if count <= limit:
        return None
    raised = "" if name not in increases else " as the lab raised it"
    return f"{what}, over AWS's quota '{name}' of {limit}{raised}; raise it under lab.quotas, as a quota increase does"
