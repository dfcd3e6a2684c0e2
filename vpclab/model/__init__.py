"""The lab model: AWS resources as AWS names them, loaded from a lab file."""
from .changes import (
    authorize_security_group_egress,
    authorize_security_group_ingress,
    revoke_security_group_egress,
    revoke_security_group_ingress,
    sg_rule_from_args,
)
from .errors import ChangeError, LabFileError
from .loader import load_lab, load_lab_text
from .resources import (
    Instance,
    InternetGateway,
    InternetHost,
    Lab,
    NaclEntry,
    NatGateway,
    NetworkAcl,
    Route,
    RouteTable,
    SecurityGroup,
    SgRule,
    Subnet,
    Vpc,
)

__all__ = [
    "ChangeError",
    "Instance",
    "InternetGateway",
    "InternetHost",
    "Lab",
    "LabFileError",
    "NaclEntry",
    "NatGateway",
    "NetworkAcl",
    "Route",
    "RouteTable",
    "SecurityGroup",
    "SgRule",
    "Subnet",
    "Vpc",
    "authorize_security_group_egress",
    "authorize_security_group_ingress",
    "load_lab",
    "load_lab_text",
    "revoke_security_group_egress",
    "revoke_security_group_ingress",
    "sg_rule_from_args",
]
