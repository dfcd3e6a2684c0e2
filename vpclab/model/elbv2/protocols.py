"""ELBv2 protocols and ARN type names, shared by load balancers, target groups and listeners."""
from __future__ import annotations

from ..reader import _did_you_mean

_ARN_TYPES = {"gateway": "gwy", "network": "net", "application": "app"}


TARGET_GROUP_PROTOCOLS = ("GENEVE", "TCP", "UDP", "TCP_UDP")
LISTENER_PROTOCOLS = ("TCP", "UDP", "TCP_UDP")
# A Network Load Balancer listener's protocol -> the target group protocols it may forward to
# (AWS's create-target-group guide: TCP -> TCP or TCP_UDP, UDP -> UDP or TCP_UDP, TCP_UDP -> TCP_UDP).
LISTENER_GROUP_PROTOCOLS = {"TCP": ("TCP", "TCP_UDP"), "UDP": ("UDP", "TCP_UDP"), "TCP_UDP": ("TCP_UDP",)}
NOT_YET_PROTOCOLS = {
    "TLS": "TLS {what} (Network Load Balancers with certificates) are not supported yet",
    "HTTP": "HTTP {what} (for Application Load Balancers) are not supported yet",
    "HTTPS": "HTTPS {what} (for Application Load Balancers) are not supported yet",
    "QUIC": "QUIC {what} are not supported yet",
    "TCP_QUIC": "TCP_QUIC {what} are not supported yet",
}


def _protocol_problem(protocol: str, supported: tuple[str, ...], what: str) -> str:
    """Why a target group or listener protocol outside `supported` is refused."""
    if protocol in NOT_YET_PROTOCOLS:
        return NOT_YET_PROTOCOLS[protocol].format(what=what)
    choices = supported + tuple(NOT_YET_PROTOCOLS)
    return f"unknown protocol '{protocol}'{_did_you_mean(protocol, choices)}; expected {', '.join(supported)}"
