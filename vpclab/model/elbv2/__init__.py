"""ELBv2 in the lab file: load balancers (gateway, network, application), target groups,
listeners, listener rules and certificates, with their health checks and attributes (checked
by attributes.py and model/health_check.py); what only an ALB has is in application.py.

The sections' field tables (pass 1), and their defaults, validation and references (pass 2).
"""
from __future__ import annotations

from typing import Any, Callable

from ..alloc import ELASTIC_IP_POOL
from ..common import _AddressClaim, _one_subnet_per_az
from ..health_check import HealthCheckConfig
from ..ids import aws_hex, elb_arn
from ..reader import (
    ADDRESS,
    BOOLEAN,
    INTEGER,
    NAMES,
    TEXT,
    Field,
    _attributes,
    _between,
    _choice,
    _describe,
    _fields,
    _Invalid,
    _join,
    _leaf,
    _list_of,
    _mapping,
    _refused,
    _Spec,
    _text,
    _unsupported,
)
from ..resources import LoadBalancer, LoadBalancerNode, Target, TargetGroup, Vpc
from .alb_targets import alb_group_problem, alb_nlbs_problem, alb_target, node_addresses  # noqa: F401 (node_addresses: the daemon's)
from .application import alb_dns_name
from .certificates import CERTIFICATE_FIELDS
from .listeners import Elbv2ListenerBuilder
from .protocols import _ARN_TYPES, APPLICATION_PROTOCOLS, TARGET_GROUP_PROTOCOLS, _protocol_problem, rule_arn
from .nodes import replace_nodes, scale_nodes
from .rule_changes import create_rule, delete_rule, modify_listener, modify_rule, set_rule_priorities
from .rules import _raw

from .attributes import (
    LOAD_BALANCER_ATTRIBUTES,
    AttributeProblem,
    default_attributes,
    elb_name_problem,
    resolve_attributes,
    resolve_listener_attributes,
    resolve_target,
    resolve_target_group_attributes,
)


def _health_check_port(value: Any) -> int | str:
    if value == "traffic-port":
        return value
    try:
        return _between(1, 65535)(value)
    except ValueError:
        raise ValueError(f"expected a port 1-65535 or traffic-port, got {_describe(value)}") from None


def _http_code(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value)


def _upper(value: Any) -> str:
    return _text(value).upper()


def _target_ref(value: Any, path: str) -> dict[str, Any]:
    """A target: its Id alone (`appliance-1`, `10.0.21.20`) or `{Id: ..., Port: ...}`.

    `at` is where its Id is written, for messages."""
    if isinstance(value, str):
        return {"Id": value, "at": path}
    props = _fields(value, path, {"Id": TEXT, "Port": _leaf(_between(1, 65535)), "AvailabilityZone": TEXT},
                    required=("Id",))
    return {**props, "at": _join(path, "Id")}


HEALTH_CHECK_FIELDS: dict[str, Field] = {
    "HealthCheckEnabled": BOOLEAN,
    "HealthCheckProtocol": _leaf(_upper),
    "HealthCheckPort": _leaf(_health_check_port),
    "HealthCheckPath": TEXT,
    "HealthCheckIntervalSeconds": INTEGER,
    "HealthCheckTimeoutSeconds": INTEGER,
    "HealthyThresholdCount": INTEGER,
    "UnhealthyThresholdCount": INTEGER,
    "Matcher": _mapping({"HttpCode": _leaf(_http_code), "GrpcCode": _unsupported("gRPC matchers")}, ("HttpCode",)),
}


# section -> (fields of each resource, required keys)
RESOURCE_SECTIONS: dict[str, tuple[dict[str, Field], tuple[str, ...]]] = {
    "load_balancers": (
        {
            "Type": _leaf(_choice("gateway", "network", "application")),
            "Scheme": _leaf(_choice("internal", "internet-facing")),
            "IpAddressType": _leaf(_choice("ipv4", "dualstack")),
            "Subnets": NAMES,
            "SubnetMappings": _list_of(
                _mapping(
                    {
                        "SubnetId": TEXT,
                        "PrivateIPv4Address": ADDRESS,
                        "PublicIPv4Address": ADDRESS,  # vpclab's own: the lab has no Elastic IP resources
                        "AllocationId": _refused(
                            "Elastic IP allocations (AllocationId) are not supported yet: the lab has no Elastic "
                            f"IP resources; give PublicIPv4Address to choose a node's address from {ELASTIC_IP_POOL}"
                        ),
                        "IPv6Address": _unsupported("IPv6 addresses"),
                    },
                    ("SubnetId",),
                )
            ),
            "SecurityGroups": NAMES,
            "LoadBalancerAttributes": _attributes,
        },
        (),
    ),
    "target_groups": (
        {
            "Protocol": _leaf(_upper),
            "Port": _leaf(_between(1, 65535)),
            "VpcId": TEXT,
            "TargetType": _leaf(_choice("instance", "ip", "alb", "lambda")),
            **HEALTH_CHECK_FIELDS,
            "TargetGroupAttributes": _attributes,
            "Targets": _list_of(_target_ref),
        },
        ("Protocol", "Port", "VpcId"),
    ),
    "listeners": (
        {
            "LoadBalancerArn": TEXT,
            "DefaultActions": _raw,  # read in pass 2, where the load balancer's type is known
            "Protocol": _leaf(_upper),
            "Port": _leaf(_between(1, 65535)),
            "Certificates": _list_of(_mapping({"CertificateArn": TEXT}, ("CertificateArn",))),
            "SslPolicy": _refused("SslPolicy is not supported yet: HTTPS listeners use HAProxy's TLS defaults"),
            "ListenerAttributes": _attributes,
        },
        ("LoadBalancerArn", "DefaultActions"),
    ),
    "listener_rules": (  # AWS::ElasticLoadBalancingV2::ListenerRule; rules.py reads its conditions and actions
        {"ListenerArn": TEXT, "Priority": _raw, "Conditions": _raw, "Actions": _raw},
        ("ListenerArn", "Priority", "Conditions", "Actions"),
    ),
    "certificates": (CERTIFICATE_FIELDS, ()),  # ACM's, for HTTPS listeners
}
SECTIONS = ("load_balancers", "target_groups", "listeners", "listener_rules", "certificates")
KIND_LABELS = {
    "load_balancers": "load balancer",
    "target_groups": "target group",
    "listeners": "listener",
    "listener_rules": "listener rule",
    "certificates": "certificate",
}

GENEVE_PORT = 6081
def _target_group_type(protocol: str, path: str) -> str:
    """The load balancer type a target group protocol serves: GENEVE gateway, TCP/UDP/TCP_UDP
    network, HTTP/HTTPS application."""
    if protocol not in TARGET_GROUP_PROTOCOLS:
        raise _Invalid(path, _protocol_problem(protocol, TARGET_GROUP_PROTOCOLS, "target groups"))
    if protocol in APPLICATION_PROTOCOLS:
        return "application"
    return "gateway" if protocol == "GENEVE" else "network"


class Elbv2Builder(Elbv2ListenerBuilder):
    """Load balancers, target groups and listeners."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.listener_of: dict[str, str] = {}  # load balancer -> its (first) listener
        self.listener_of_group: dict[str, str] = {}  # target group -> the (first) listener that forwards to it

    def _elbv2_claims(self) -> list[_AddressClaim]:
        """The addresses the load balancers' nodes take."""
        return [claim for spec in self.doc.specs["load_balancers"] for claim in self._load_balancer_claims(spec)]

    def _load_balancer_claims(self, spec: _Spec) -> list[_AddressClaim]:
        """One address claim per node: one enabled subnet per AZ, all in one VPC; an
        internet-facing load balancer's nodes each take an Elastic IP too."""
        lb_type = spec.props.setdefault("Type", "application")  # CloudFormation's default
        problem = elb_name_problem(spec.name, "load balancer")
        if problem:
            raise _Invalid(spec.path, problem)
        scheme = spec.props.get("Scheme", "internal" if lb_type == "gateway" else "internet-facing")
        if lb_type == "gateway" and scheme == "internet-facing":
            raise _Invalid(spec.at("Scheme"), "a Gateway Load Balancer is always internal")
        if spec.props.get("IpAddressType") == "dualstack":
            raise _Invalid(spec.at("IpAddressType"), "dualstack load balancers are not supported yet")
        if "Subnets" in spec.props and "SubnetMappings" in spec.props:
            raise _Invalid(spec.at("SubnetMappings"), "give Subnets or SubnetMappings, not both")
        if "Subnets" in spec.props:
            key = "Subnets"
            mappings = [{"SubnetId": value} for value in spec.props[key]]
        elif "SubnetMappings" in spec.props:
            key = "SubnetMappings"
            mappings = spec.props[key]
        else:
            raise _Invalid(
                spec.at("Subnets"), "required key is missing: a load balancer needs Subnets (or SubnetMappings)"
            )
        if not mappings:
            raise _Invalid(spec.at(key), "a load balancer needs at least one subnet")
        if lb_type == "application":
            self._application_load_balancer(spec, mappings, key)
        public = scheme == "internet-facing"
        claims: list[_AddressClaim] = []
        vpc: Vpc | None = None
        for i, mapping in enumerate(mappings):
            path = f"{spec.at(key)}[{i}]"
            subnet_path = f"{path}.SubnetId" if key == "SubnetMappings" else path
            subnet = self._ref("subnets", mapping["SubnetId"], subnet_path, vpc)
            if vpc is None:
                vpc = self._subnet_vpc(subnet.name)
                if public:
                    default = "" if "Scheme" in spec.props else " (the default Scheme, as in CloudFormation)"
                    self._need_internet_gateway(
                        subnet, f"an internet-facing load balancer{default}", spec.at("Scheme"),
                        "; write Scheme: internal for one reachable only from inside the VPC",
                    )  # fmt: skip
            _one_subnet_per_az(claims, subnet, subnet_path, "load balancer")
            if "PublicIPv4Address" in mapping and not public:
                raise _Invalid(
                    f"{path}.PublicIPv4Address",
                    "an internal load balancer's nodes have no public address; PublicIPv4Address is for "
                    "Scheme: internet-facing",
                )
            claims.append(
                _AddressClaim(
                    spec, f"load balancer {spec.name}", subnet, public,
                    explicit=mapping.get("PrivateIPv4Address"), explicit_path=f"{path}.PrivateIPv4Address",
                    explicit_public=mapping.get("PublicIPv4Address"), explicit_public_path=f"{path}.PublicIPv4Address",
                    path=subnet_path,
                )  # fmt: skip
            )
        return claims

    def _load_balancers(self, claims: list[_AddressClaim]) -> None:
        """The load balancers, once their nodes' claims have addresses."""
        nodes: dict[str, list[_AddressClaim]] = {}
        for claim in claims:
            if claim.spec.section == "load_balancers":
                nodes.setdefault(claim.spec.name, []).append(claim)
        for spec in self.doc.specs["load_balancers"]:
            self._add("load_balancers", self._load_balancer(spec, nodes[spec.name]))

    def _load_balancer(self, spec: _Spec, claims: list[_AddressClaim]) -> LoadBalancer:
        vpc = self._subnet_vpc(claims[0].subnet.name)
        lb_type = spec.props["Type"]
        hex_id = aws_hex("loadbalancer", vpc.account, self.region, spec.name)
        nodes = tuple(
            LoadBalancerNode(
                c.subnet.name,
                c.subnet.az,
                self._id("eni", vpc.account, f"{spec.name}/{c.subnet.name}"),
                c.private_ip,
                c.public_ip,
            )
            for c in claims
        )
        schema = LOAD_BALANCER_ATTRIBUTES[lb_type]
        attributes = self._attributes(
            spec, "LoadBalancerAttributes",
            lambda changes: resolve_attributes(schema, default_attributes(schema), changes, "load balancer"),
        )  # fmt: skip
        scheme = "internet-facing" if claims[0].public else "internal"
        if lb_type == "application":
            dns_name = alb_dns_name(spec.name, scheme, hex_id, self.region)
        else:
            dns_name = f"{spec.name}-{hex_id}.elb.{self.region}.amazonaws.com".lower()
        return LoadBalancer(
            name=spec.name,
            arn=elb_arn(self.region, vpc.account, f"loadbalancer/{_ARN_TYPES[lb_type]}/{spec.name}/{hex_id}"),
            type=lb_type,
            scheme=scheme,
            vpc=vpc.name,
            nodes=nodes,
            dns_name=dns_name,
            attributes=attributes,
            security_groups=self._load_balancer_groups(spec, vpc),
        )

    def _attributes(self, spec: _Spec, key: str, resolve: Callable[[dict[str, Any]], dict[str, str]]) -> dict[str, str]:
        """The attributes under `key`, resolved from the defaults by `resolve` (one of elb's resolvers);
        a refused one is pinned to its key path."""
        given: dict[str, tuple[Any, str]] = spec.props.get(key, {})
        try:
            return resolve({k: value for k, (value, _) in given.items()})
        except AttributeProblem as e:
            path = given[e.key][1] if e.key in given else spec.at(key)
            raise _Invalid(path, e.reason) from None

    def _target_groups(self) -> None:
        for spec in self.doc.specs["target_groups"]:
            problem = elb_name_problem(spec.name, "target group")
            if problem:
                raise _Invalid(spec.path, problem)
            protocol = spec.props["Protocol"]
            lb_type = _target_group_type(protocol, spec.at("Protocol"))
            port = spec.props["Port"]
            if lb_type == "gateway" and port != GENEVE_PORT:
                raise _Invalid(spec.at("Port"), f"a GENEVE target group's port is {GENEVE_PORT}, got {port}")
            vpc = self._vpc_of(spec)
            target_type = spec.props.get("TargetType", "instance")
            if target_type not in ("instance", "ip") and (target_type, protocol) != ("alb", "TCP"):
                if lb_type == "gateway":
                    reason = f"a GENEVE target group takes instance or ip targets, not {target_type}"
                elif target_type == "alb":
                    reason = f"an alb target group is TCP (an NLB's TCP listeners use it), not {protocol}"
                elif lb_type == "application" and target_type == "lambda":
                    reason = "lambda targets are not supported yet: the lab has no Lambda"
                else:
                    reason = f"a {protocol} target group takes instance or ip targets, not {target_type}"
                raise _Invalid(spec.at("TargetType"), reason)
            health_check = {key: spec.props[key] for key in HEALTH_CHECK_FIELDS if key in spec.props}
            try:
                HealthCheckConfig.for_target_group(lb_type, protocol, TargetType=target_type, **health_check)
            except ValueError as e:
                first_word = str(e).split(" ", 1)[0]
                key = first_word if first_word in HEALTH_CHECK_FIELDS or first_word == "Protocol" else None
                raise _Invalid(spec.at(key) if key else spec.path, str(e)) from None
            if target_type == "alb" and spec.props.get("TargetGroupAttributes"):
                raise _Invalid(spec.at("TargetGroupAttributes"), "an alb target group's attributes are fixed "
                                                                 "at AWS's defaults")
            attributes = self._attributes(
                spec, "TargetGroupAttributes",
                lambda changes: resolve_target_group_attributes(protocol, target_type, None, changes),
            )  # fmt: skip
            targets: list[Target] = []
            index_of: dict[str, int] = {}  # target ID -> its first registration
            for i, ref in enumerate(spec.props.get("Targets", [])):
                path = f"{spec.at('Targets')}[{i}]"
                if lb_type == "gateway" and ref.get("Port", port) != port:
                    raise _Invalid(f"{path}.Port", f"a GENEVE target's port is the group's, {port}, got {ref['Port']}")
                if target_type == "alb" and (i or ref.get("Port", port) != port):
                    raise _Invalid(path, "an alb target group has one target, its ALB, on the group's port")
                try:
                    target = alb_target(ref["Id"], vpc.name, port, self.built["load_balancers"]) \
                        if target_type == "alb" else resolve_target(
                            ref["Id"], target_type, vpc.name, ref.get("Port", port),
                            self.built["instances"], self.built["subnets"], ref.get("AvailabilityZone"),
                            lb_type,
                        )  # fmt: skip
                except ValueError as e:
                    raise _Invalid(ref["at"], str(e)) from None
                j = index_of.setdefault(target.id, i)
                if j != i:
                    also = (
                        "; registering one target on several ports is not supported yet"
                        if targets[j].port != target.port else ""
                    )
                    raise _Invalid(path, f"target {target.id} is already Targets[{j}]{also}")
                targets.append(target)
            hex_id = aws_hex("targetgroup", vpc.account, self.region, spec.name)
            self._add(
                "target_groups",
                TargetGroup(
                    name=spec.name,
                    arn=elb_arn(self.region, vpc.account, f"targetgroup/{spec.name}/{hex_id}"),
                    protocol=protocol,
                    port=port,
                    vpc=vpc.name,
                    target_type=target_type,
                    health_check=health_check,
                    attributes=attributes,
                    targets=tuple(targets),
                ),
            )

    def _alb_target_ports(self) -> None:
        for spec in self.doc.specs["target_groups"]:
            problem = alb_group_problem(self.built["target_groups"][spec.name], self.built["listeners"].values(),
                                        self.built["load_balancers"])
            if problem:
                raise _Invalid(spec.at("Port"), problem)
        crowded = alb_nlbs_problem(self.built["listeners"].values(), self.built["target_groups"],
                                   self.built["load_balancers"])
        if crowded:
            listener, reason = crowded
            spec = next(s for s in self.doc.specs["listeners"] if s.name == listener)
            raise _Invalid(spec.at("DefaultActions"), reason)


BUILDER = Elbv2Builder
CLAIMS = "_elbv2_claims"  # the builder's method that lists the addresses its resources take in subnets
STEPS = {"addresses": ("_load_balancers",),
         "attachments": ("_certificates", "_target_groups", "_listeners", "_listener_rules", "_alb_target_ports")}  # loader.PHASES
