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
    return f"{host}.{hostname_domain(region)}"


def hostname_domain(region: str) -> str:
    """The domain of instances' private hostnames: us-east-1 keeps the legacy ec2.internal."""
    return "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"


def aws_hex(*parts: str) -> str:
    """16 hex digits hashed from `parts`: the ID inside an ELB ARN (`loadbalancer/gwy/<name>/<hex>`)."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


def elb_arn(region: str, account: str, resource: str) -> str:
    """`arn:aws:elasticloadbalancing:<region>:<account>:<resource>`."""
    return f"arn:aws:elasticloadbalancing:{region}:{account}:{resource}"


_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def hosted_zone_id(*parts: str) -> str:
    """A Route 53 hosted zone ID: `Z0` and 19 uppercase letters or digits hashed from
    `parts` (account, name), shaped like today's IDs (`Z0123456789ABCDEFGHIJ`).
    Route 53 is global, so the region plays no part."""
    number = int(hashlib.sha256("/".join(("hostedzone", *parts)).encode()).hexdigest(), 16)
    digits = []
    for _ in range(19):
        number, digit = divmod(number, 36)
        digits.append(_BASE36[digit])
    return "Z0" + "".join(digits)
