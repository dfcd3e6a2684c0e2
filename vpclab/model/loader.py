"""Load a native YAML lab file into one immutable, fully resolved `Lab`.

A bad file is refused with one `LabFileError`, the first one met in two passes:
1. shape: sections, resource names, keys and value types, walking the file in order;
2. meaning: references, containment, addresses and routes, in dependency order
   (VPCs, subnets, internet gateways, security groups, then the resources that
   take addresses: NAT gateways, instances, load balancers and VPC endpoints;
   then target groups, listeners, endpoint services, endpoints, route tables,
   network ACLs, internet hosts, and last hosted zones, whose aliases may point
   at any of them), each section in file order.

Each AWS service owns its sections in its own module, listed in SERVICES; this module
composes them. A service module gives its sections' field tables (RESOURCE_SECTIONS), the
top-level sections it reads (SECTIONS), their labels in messages (KIND_LABELS), and for
pass 2 its builder class (BUILDER, on common._BuilderBase), the builder method listing the
addresses it takes in subnets (CLAIMS, or None) and its steps in each of PHASES (STEPS).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from . import awslambda, ec2, elbv2, privatelink, route53, transit_gateway
from .alloc import ELASTIC_IP_POOL
from .ec2 import INTERNET_FIELDS
from .errors import LabFileError
from .labfile import parse_yaml, read_lab_file
from .labname import lab_name_problem
from .quotas import quota_increase
from .reader import (
    RESOURCE_NAME,
    TEXT,
    Field,
    _account,
    _describe,
    _did_you_mean,
    _fields,
    _Invalid,
    _join,
    _leaf,
    _region,
    _Spec,
)
from .resources import DEFAULT_ACCOUNT, DEFAULT_REGION, Lab

SERVICES = (ec2, elbv2, privatelink, transit_gateway, route53, awslambda)  # each owns its sections: fields, defaults, checks


def _quota_increases(value: Any, path: str) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected a mapping of AWS quota names to values, got {_describe(value)}")
    increases = {}
    for name, given in value.items():
        try:
            increases[name] = quota_increase(name, given)
        except ValueError as e:
            raise _Invalid(_join(path, name), str(e)) from None
    return increases


LAB_FIELDS = {"name": TEXT, "region": _leaf(_region), "account": _leaf(_account), "quotas": _quota_increases}
SECTIONS = ("lab", *(section for service in SERVICES for section in service.SECTIONS))
# section -> (fields of each resource, required keys)
RESOURCE_SECTIONS: dict[str, tuple[dict[str, Field], tuple[str, ...]]] = {
    section: fields for service in SERVICES for section, fields in service.RESOURCE_SECTIONS.items()
}
KIND_LABELS = {section: label for service in SERVICES for section, label in service.KIND_LABELS.items()}


class _Document:
    """Pass 1: the file's sections, read in file order."""

    def __init__(self, doc: Any, source: str = "."):
        self.source = source  # the lab file: files it names (certificates) are relative to its directory
        self.lab: dict[str, Any] = {}
        self.internet: dict[str, Any] = {}
        self.specs: dict[str, list[_Spec]] = {section: [] for section in RESOURCE_SECTIONS}
        self.name_paths: dict[str, str] = {}  # every resource name -> its key path
        self.name_kinds: dict[str, str] = {}  # every resource name -> its section
        if doc is None:
            raise _Invalid("", "the file is empty; a lab needs at least a 'vpcs' section")
        if not isinstance(doc, dict):
            raise _Invalid("", f"expected a mapping of sections at the top level, got {_describe(doc)}")
        for section, body in doc.items():
            if section not in SECTIONS:
                raise _Invalid(str(section), f"unknown section '{section}'{_did_you_mean(str(section), SECTIONS)}")
            if section == "lab":
                self.lab = _fields(body, "lab", LAB_FIELDS)
            elif section == "internet":
                self.internet = _fields(body, "internet", INTERNET_FIELDS)
                self._read_resources("hosts", self.internet.get("hosts"), "internet.hosts")
            else:
                self._read_resources(section, body, section)
        if not self.specs["vpcs"]:
            raise _Invalid("vpcs", "a lab needs at least one VPC")

    def _read_resources(self, section: str, body: Any, path: str) -> None:
        if body is None:
            return
        if not isinstance(body, dict):
            raise _Invalid(
                path, f"expected a mapping of {KIND_LABELS[section]} names to properties, got {_describe(body)}"
            )
        schema, required = RESOURCE_SECTIONS[section]
        for name, value in body.items():
            resource_path = _join(path, name)
            self._claim_name(name, resource_path, section)
            props = _fields(value, resource_path, schema, required)
            self.specs[section].append(_Spec(section, name, resource_path, props, len(self.name_paths)))

    def _claim_name(self, name: Any, path: str, section: str) -> None:
        if not isinstance(name, str) or not RESOURCE_NAME.fullmatch(name):
            rule = "1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
            raise _Invalid(path, f"resource name '{name}' must be {rule}")
        if name == "local":
            raise _Invalid(path, "the name 'local' is reserved: it is the target of the local route")
        if name in self.name_paths:
            raise _Invalid(
                path, f"the name '{name}' is already used by {self.name_paths[name]}; all resources share one namespace"
            )
        self.name_paths[name] = path
        self.name_kinds[name] = section


# -- Pass 2: meaning. --


# Pass 2 runs phase by phase, in each phase the services' steps in SERVICES order, so that a
# reference always names a resource already built.
PHASES = (
    "networks",  # VPCs, subnets, gateways, security groups
    "addresses",  # what takes addresses in subnets, claimed by each service then allocated in file order
    "attachments",  # target groups, listeners, endpoint services, endpoints
    "routes",  # route tables, which may name all of the above, network ACLs, internet hosts
    "names",  # hosted zones, whose aliases may name any of them
)


class _Builder(*(service.BUILDER for service in SERVICES)):  # type: ignore[misc]
    """Pass 2: every service's builder, composed."""

    KIND_LABELS = KIND_LABELS

    def build(self) -> dict[str, dict[str, Any]]:
        if self.internet_cidr.overlaps(ELASTIC_IP_POOL):
            raise _Invalid("internet.CidrBlock", f"{self.internet_cidr} overlaps the Elastic IP pool {ELASTIC_IP_POOL}")
        for phase in PHASES:
            if phase == "addresses":
                self._addressed_resources()
                continue
            for service in SERVICES:
                for step in service.STEPS.get(phase, ()):
                    getattr(self, step)()
        return self.built

    def _addressed_resources(self) -> None:
        """NAT gateways, instances, load balancer nodes and endpoint interfaces share the subnets' addresses."""
        claims = [claim for service in SERVICES if service.CLAIMS for claim in getattr(self, service.CLAIMS)()]
        self._allocate(sorted(claims, key=lambda claim: claim.spec.order))
        for service in SERVICES:
            for step in service.STEPS.get("addresses", ()):
                getattr(self, step)(claims)


# -- Entry points --


def load_lab(path: str | Path, name: str | None = None) -> Lab:
    """Read and load a lab file (refused if not a regular file of at most 4 MiB); see `load_lab_text`."""
    return load_lab_text(read_lab_file(path), str(path), name)


def load_lab_text(text: str, source: str, name: str | None = None) -> Lab:
    """Load a lab from YAML text; `source` is the file it came from, for messages.

    The lab's name is `name`, else the file's `lab.name`, else the file's stem.
    Raises LabFileError for the first problem found.
    """
    try:
        document = _Document(parse_yaml(text, source), source)
        lab_name = _lab_name(name, document.lab, source)
        region = document.lab.get("region", DEFAULT_REGION)
        account = document.lab.get("account", DEFAULT_ACCOUNT)
        builder = _Builder(document, region, account)
        built = builder.build()
    except _Invalid as e:
        raise LabFileError(source, e.path, e.reason) from None
    return Lab(
        name=lab_name,
        region=region,
        account=account,
        source=source,
        vpcs=built["vpcs"],
        subnets=built["subnets"],
        route_tables=built["route_tables"],
        internet_gateways=built["internet_gateways"],
        nat_gateways=built["nat_gateways"],
        security_groups=built["security_groups"],
        network_acls=built["network_acls"],
        instances=built["instances"],
        internet_hosts=built["hosts"],
        internet_cidr=builder.internet_cidr,
        load_balancers=built["load_balancers"],
        target_groups=built["target_groups"],
        listeners=built["listeners"],
        listener_rules=built["listener_rules"],
        certificates=built["certificates"],
        vpc_endpoint_services=built["vpc_endpoint_services"],
        vpc_endpoints=built["vpc_endpoints"],
        hosted_zones=built["hosted_zones"],
        lambda_functions=built["lambda_functions"],
        transit_gateways=built["transit_gateways"],
        transit_gateway_attachments=built["transit_gateway_attachments"],
        transit_gateway_route_tables=built["transit_gateway_route_tables"],
        notes=tuple(builder.notes),
        quotas=builder.quotas,
    )


def _lab_name(given: str | None, lab: Mapping[str, Any], source: str) -> str:
    if given is not None:
        candidate, origin = given, "given"
    elif "name" in lab:
        candidate, origin = lab["name"], "from lab.name"
    else:
        candidate, origin = Path(source).stem, "from the file name; set lab.name to choose another"
    problem = lab_name_problem(candidate, origin)
    if problem is not None:
        raise _Invalid("lab.name", problem)
    return candidate
