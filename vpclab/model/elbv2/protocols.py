"""ELBv2 protocols and ARNs, shared by load balancers, target groups, listeners and rules."""
from __future__ import annotations

from ..ids import aws_hex, elb_arn
from ..reader import _did_you_mean

_ARN_TYPES = {"gateway": "gwy", "network": "net", "application": "app"}


TARGET_GROUP_PROTOCOLS = ("GENEVE", "TCP", "UDP", "TCP_UDP", "HTTP", "HTTPS")
LISTENER_PROTOCOLS = ("TCP", "UDP", "TCP_UDP")  # a Network Load Balancer's
APPLICATION_PROTOCOLS = ("HTTP", "HTTPS")  # an Application Load Balancer's listeners and target groups
# A Network Load Balancer listener's protocol -> the target group protocols it may forward to
# (AWS's create-target-group guide: TCP -> TCP or TCP_UDP, UDP -> UDP or TCP_UDP, TCP_UDP -> TCP_UDP).
LISTENER_GROUP_PROTOCOLS = {"TCP": ("TCP", "TCP_UDP"), "UDP": ("UDP", "TCP_UDP"), "TCP_UDP": ("TCP_UDP",)}
NOT_YET_PROTOCOLS = {
    "TLS": "TLS {what} (Network Load Balancers with certificates) are not supported yet",
    "QUIC": "QUIC {what} are not supported yet",
    "TCP_QUIC": "TCP_QUIC {what} are not supported yet",
}


def _protocol_problem(protocol: str, supported: tuple[str, ...], what: str) -> str:
    """Why a target group or listener protocol outside `supported` is refused."""
    if protocol in NOT_YET_PROTOCOLS:
        return NOT_YET_PROTOCOLS[protocol].format(what=what)
    if protocol in APPLICATION_PROTOCOLS:
        return f"{protocol} {what} are for Application Load Balancers; expected {', '.join(supported)}"
    if protocol in LISTENER_PROTOCOLS:
        return f"{protocol} {what} are for Network Load Balancers; expected {', '.join(supported)}"
    choices = supported + tuple(NOT_YET_PROTOCOLS)
    return f"unknown protocol '{protocol}'{_did_you_mean(protocol, choices)}; expected {', '.join(supported)}"


def listener_arn(region: str, lb_arn: str, lb_type: str, name: str) -> str:
    """`...:listener/<app|net|gwy>/<lb name>/<lb hex>/<hex>`."""
    account, lb_path = lb_arn.split(":")[4], lb_arn.split(":loadbalancer/", 1)[1]
    lb_name, lb_hex = lb_path.split("/")[1:3]
    hex_id = aws_hex("listener", account, region, lb_name, name)
    return elb_arn(region, account, f"listener/{_ARN_TYPES[lb_type]}/{lb_name}/{lb_hex}/{hex_id}")


def rule_arn(region: str, listener: str, name: str) -> str:
    """`...:listener-rule/app/<lb name>/<lb hex>/<listener hex>/<hex>` of a rule of the listener
    whose ARN is `listener` (its default rule's `name` is `default`)."""
    account, path = listener.split(":")[4], listener.split(":listener/", 1)[1]
    hex_id = aws_hex("listener-rule", account, region, path, name)
    return elb_arn(region, account, f"listener-rule/{path}/{hex_id}")


def certificate_arn(region: str, account: str, name: str) -> str:
    """An ACM certificate's ARN: `arn:aws:acm:<region>:<account>:certificate/<uuid>`."""
    h = aws_hex("certificate", account, region, name) + aws_hex("certificate-2", account, region, name)
    return f"arn:aws:acm:{region}:{account}:certificate/{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
