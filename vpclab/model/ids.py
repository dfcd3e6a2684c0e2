"""Stable, AWS-shaped resource IDs and instance hostnames."""
from __future__ import annotations

import hashlib
from ipaddress import IPv4Address


def aws_id(prefix: str, *parts: str) -> str:
    """`<prefix>-0` and 16 hex digits hashed from the prefix and `parts`.

    Callers pass (account, region, resource name): the same lab file then gets
    the same IDs every run, whatever the lab is called. The prefix (the
    resource kind) is hashed too, so an instance and its ENI differ. The 17 hex
    digits start with 0, so the value fits 64 bits, as GENEVE needs for `vpce-`.
    """
    digest = hashlib.sha256("/".join((prefix, *parts)).encode()).hexdigest()
    return f"{prefix}-0{digest[:16]}"


def hostname_for(ip: IPv4Address, region: str) -> str:
    """The private DNS name AWS gives an instance: `ip-10-0-1-10.ec2.internal`."""
    host = "ip-" + str(ip).replace(".", "-")
    if region == "us-east-1":
        return f"{host}.ec2.internal"
    return f"{host}.{region}.compute.internal"


def aws_hex(*parts: str) -> str:
    """16 hex digits hashed from `parts`: the ID inside an ELB ARN (`loadbalancer/gwy/<name>/<hex>`)."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


def elb_arn(region: str, account: str, resource: str) -> str:
    """`arn:aws:elasticloadbalancing:<region>:<account>:<resource>`."""
    return f"arn:aws:elasticloadbalancing:{region}:{account}:{resource}"
