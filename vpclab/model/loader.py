"""Load a native YAML lab file into one immutable, fully resolved `Lab`.

A bad file is refused with one `LabFileError`, the first one met in two passes:
1. shape: sections, resource names, keys and value types, walking the file in order;
2. meaning: references, containment, addresses and routes, in dependency order
   (VPCs, subnets, internet gateways, security groups, then the resources that
   take addresses: NAT gateways, instances, load balancers and VPC endpoints;
   then target groups, listeners, endpoint services, endpoints, route tables,
   network ACLs, internet hosts, and last hosted zones, whose aliases may point
   at any of them), each section in file order.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NoReturn

from .alloc import (
    DEFAULT_INTERNET_CIDR,
    ELASTIC_IP_POOL,
    AddressError,
    AddressPool,
    elastic_ip_pool,
    internet_pool,
    subnet_pool,
)
from .appliance import ApplianceConfig, ApplianceConfigError
from .elb import (
    LOAD_BALANCER_ATTRIBUTES,
    AttributeProblem,
    default_attributes,
    elb_name_problem,
    parse_principal,
    principal_allows,
    resolve_attributes,
    resolve_listener_attributes,
    resolve_target,
    resolve_target_group_attributes,
)
from .errors import LabFileError
from .labname import lab_name_problem
from .health_check import HealthCheckConfig
from .labfile import parse_yaml, read_lab_file
from .quotas import (
    ENDPOINTS_PER_VPC,
    NAT_GATEWAYS_PER_AZ,
    ROUTES_PER_TABLE,
    RULES_PER_NACL,
    RULES_PER_SG,
    SGS_PER_ENI,
    SUBNETS_PER_VPC,
    VPCS_PER_REGION,
    over_quota,
    quota_increase,
)
from .ids import aws_hex, aws_id, elb_arn, hosted_zone_id, hostname_domain, hostname_for
from .resources import (
    DEFAULT_ACCOUNT,
    DEFAULT_REGION,
    RECORD_TYPES,
    EndpointEni,
    HostedZone,
    Instance,
    InternetGateway,
    InternetHost,
    Lab,
    Listener,
    LoadBalancer,
    LoadBalancerNode,
    NaclEntry,
    NatGateway,
    NetworkAcl,
    Route,
    RouteTable,
    SecurityGroup,
    SgRule,
    Subnet,
    RecordSet,
    Target,
    TargetGroup,
    Vpc,
    VpcEndpoint,
    VpcEndpointService,
    txt_strings,
)

RESOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
DNS_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*")
ANYWHERE = IPv4Network("0.0.0.0/0")
ALL_TRAFFIC_OUT = SgRule("-1", cidr=ANYWHERE)  # AWS's egress rule for a new group
PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp"}


# -- Value parsers, shared with live changes: they raise ValueError(reason). --


def parse_network(value: Any) -> IPv4Network:
    """A CIDR block such as 10.0.1.0/24, with no host bits set."""
    if isinstance(value, IPv4Network):
        return value
    text = _text(value)
    try:
        network = IPv4Network(text, strict=False)
    except ValueError:
        network = None
    if network is None or "/" not in text:
        raise ValueError(f"'{text}' is not a CIDR block like 10.0.0.0/16")
    if network.network_address != IPv4Address(text.split("/")[0]):
        raise ValueError(f"{text} has host bits set; the network is {network}")
    return network


def parse_address(value: Any) -> IPv4Address:
    text = _text(value)
    try:
        return IPv4Address(text)
    except ValueError:
        raise ValueError(f"'{text}' is not an IPv4 address like 10.0.1.10") from None


def parse_integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)  # CloudFormation writes "80" too
    raise ValueError(f"expected an integer, got {_describe(value)}")


def parse_protocol(value: Any) -> str:
    """"-1" (all), "tcp", "udp", "icmp" or another IP protocol number, as a string."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"expected a protocol (tcp, udp, icmp, -1 or a number), got {_describe(value)}")
    text = str(value).strip().lower()
    if text in ("-1", "all"):
        return "-1"
    if text in ("tcp", "udp", "icmp"):
        return text
    if text.isdigit() and int(text) <= 255:
        return PROTOCOL_NAMES.get(str(int(text)), str(int(text)))
    raise ValueError(f"unknown protocol '{value}'{_did_you_mean(text, ('tcp', 'udp', 'icmp', 'all'))}")


def port_range(protocol: str, first: int | None, last: int | None) -> tuple[int | None, int | None]:
    """The ports a rule keeps: tcp/udp 0–65535; icmp type and code (-1 = all); none for others."""
    if protocol in ("tcp", "udp"):
        if first is None or last is None:
            raise ValueError(f"{protocol} needs a port range")
        for port in (first, last):
            if not 0 <= port <= 65535:
                raise ValueError(f"port {port} is outside 0-65535")
        if first > last:
            raise ValueError(f"the port range {first}-{last} is reversed")
        return first, last
    if protocol == "icmp":
        icmp_type = -1 if first is None else first
        code = -1 if last is None else last
        for what, number in (("type", icmp_type), ("code", code)):
            if not -1 <= number <= 255:
                raise ValueError(f"ICMP {what} {number} is outside -1 to 255")
        if icmp_type == -1 and code != -1:
            raise ValueError(f"ICMP code {code} needs an ICMP type; -1 (all types) takes all codes")
        return icmp_type, code
    return None, None  # all traffic or another protocol: AWS ignores ports


def permission_key(rule: SgRule) -> SgRule:
    """AWS identifies a rule by everything but its description."""
    return replace(rule, description="")


def same_permission(a: SgRule, b: SgRule) -> bool:
    return permission_key(a) == permission_key(b)


# -- Pass 1: shape. A field reads one value at a key path, raising _Invalid. --


class _Invalid(Exception):
    def __init__(self, path: str, reason: str):
        super().__init__(reason)
        self.path = path
        self.reason = reason


Field = Callable[[Any, str], Any]


def _leaf(parse: Callable[[Any], Any]) -> Field:
    """A field from a value parser: its ValueError becomes an error at the field's path."""

    def read(value: Any, path: str) -> Any:
        try:
            return parse(value)
        except ValueError as e:
            raise _Invalid(path, str(e)) from None

    return read


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"the string '{value[:40]}'"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return {dict: "a mapping", list: "a list"}.get(type(value), type(value).__name__)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_describe(value)}")
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # CloudFormation writes "true" too
    raise ValueError(f"expected true or false, got {_describe(value)}")


def _between(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = parse_integer(value)
        if not low <= number <= high:
            raise ValueError(f"{number} is outside {low}-{high}")
        return number

    return parse


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value).lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got '{value}'{_did_you_mean(text, choices)}")
        return text

    return parse


def _cidr_sized(shortest: int, longest: int) -> Callable[[Any], IPv4Network]:
    def parse(value: Any) -> IPv4Network:
        network = parse_network(value)
        if not shortest <= network.prefixlen <= longest:
            raise ValueError(f"{network} is a /{network.prefixlen}; it must be /{shortest} to /{longest}")
        return network

    return parse


def _account(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # YAML reads an unquoted account as a number
    text = _text(value)
    if not re.fullmatch(r"\d{12}", text):
        raise ValueError(f"an account is 12 digits (quote it if it starts with 0), got '{text}'")
    return text


def _region(value: Any) -> str:
    text = _text(value)
    if not REGION.fullmatch(text):
        raise ValueError(f"'{text}' is not a region name like us-east-1")
    return text


def _dns_name(value: Any) -> str:
    text = _text(value).lower().rstrip(".")
    if not DNS_NAME.fullmatch(text):
        raise ValueError(f"'{value}' is not a DNS name like client.internet.test")
    return text


def _unsupported(what: str) -> Field:
    return _refused(f"{what} are not supported yet")


def _refused(reason: str) -> Field:
    def read(value: Any, path: str) -> NoReturn:
        raise _Invalid(path, reason)

    return read


def _list_of(item: Field) -> Field:
    def read(value: Any, path: str) -> list:
        if value is None:
            return []  # `Routes:` with nothing after it
        if not isinstance(value, list):
            raise _Invalid(path, f"expected a list, got {_describe(value)}")
        return [item(element, f"{path}[{i}]") for i, element in enumerate(value)]

    return read


def _commands(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise _Invalid(path, f"expected a command or a list of commands, got {_describe(value)}")
    return tuple(_list_of(TEXT)(value, path))


def _fields(value: Any, path: str, schema: Mapping[str, Field], required: Iterable[str] = ()) -> dict[str, Any]:
    """The keys of one mapping, each read by its field; unknown keys refused, required ones enforced."""
    if value is None:
        value = {}  # `client:` with nothing after it
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected a mapping, got {_describe(value)}")
    props = {}
    for key, item in value.items():
        if key not in schema:
            raise _Invalid(_join(path, key), f"unknown key '{key}'{_did_you_mean(str(key), schema)}")
        props[key] = schema[key](item, _join(path, key))
    for key in required:
        if key not in props:
            raise _Invalid(_join(path, key), "required key is missing")
    return props


def _mapping(schema: Mapping[str, Field], required: Iterable[str] = ()) -> Field:
    return lambda value, path: _fields(value, path, schema, required)


TEXT = _leaf(_text)
BOOLEAN = _leaf(_boolean)
INTEGER = _leaf(parse_integer)
ADDRESS = _leaf(parse_address)
NETWORK = _leaf(parse_network)
PROTOCOL = _leaf(parse_protocol)
NAMES = _list_of(TEXT)

ROUTE_TARGETS = {
    "GatewayId": "igw",
    "NatGatewayId": "nat",
    "InstanceId": "instance",
    "NetworkInterfaceId": "eni",
    "VpcEndpointId": "vpce",
}
_ROUTE = {
    "DestinationCidrBlock": NETWORK,
    **{key: TEXT for key in ROUTE_TARGETS},
    "TransitGatewayId": _unsupported("routes to transit gateways"),
    "DestinationIpv6CidrBlock": _unsupported("IPv6 routes"),
    "DestinationPrefixListId": _unsupported("prefix-list routes"),
    "EgressOnlyInternetGatewayId": _unsupported("routes to egress-only internet gateways"),
    "VpcPeeringConnectionId": _unsupported("routes to peering connections"),
    "CarrierGatewayId": _unsupported("routes to carrier gateways"),
    "LocalGatewayId": _unsupported("routes to local gateways"),
}


def _route(value: Any, path: str) -> dict[str, Any]:
    props = _fields(value, path, _ROUTE, required=("DestinationCidrBlock",))
    targets = [key for key in props if key in ROUTE_TARGETS]
    if not targets:
        raise _Invalid(
            path, "a route needs a target: GatewayId, NatGatewayId, InstanceId, NetworkInterfaceId or VpcEndpointId"
        )
    if len(targets) > 1:
        raise _Invalid(
            _join(path, targets[1]), f"a route has exactly one target, and this one already has {targets[0]}"
        )
    return props


def _sg_rule(peer_key: str) -> Field:
    """A permission; `peer_key` is SourceSecurityGroupId (ingress) or DestinationSecurityGroupId (egress)."""
    schema = {
        "IpProtocol": PROTOCOL,
        "FromPort": INTEGER,
        "ToPort": INTEGER,
        "CidrIp": NETWORK,
        peer_key: TEXT,
        "Description": TEXT,
    }

    def read(value: Any, path: str) -> SgRule:
        props = _fields(value, path, schema, required=("IpProtocol",))
        if ("CidrIp" in props) == (peer_key in props):
            raise _Invalid(path, f"a rule needs exactly one of CidrIp or {peer_key}")
        protocol = props["IpProtocol"]
        for key in ("FromPort", "ToPort"):
            if protocol in ("tcp", "udp") and key not in props:
                raise _Invalid(_join(path, key), f"required key is missing for {protocol}")
        try:
            from_port, to_port = port_range(protocol, props.get("FromPort"), props.get("ToPort"))
        except ValueError as e:
            raise _Invalid(path, str(e)) from None
        return SgRule(
            protocol, from_port, to_port, props.get("CidrIp"), props.get(peer_key), props.get("Description", "")
        )

    return read


_NACL_ENTRY = {
    "RuleNumber": _leaf(_between(1, 32766)),
    "Protocol": PROTOCOL,
    "RuleAction": _leaf(_choice("allow", "deny")),
    "Egress": BOOLEAN,
    "CidrBlock": NETWORK,
    "PortRange": _mapping({"From": INTEGER, "To": INTEGER}, required=("From", "To")),
    "IcmpTypeCode": _mapping({"Type": INTEGER, "Code": INTEGER}),
}


def _nacl_entry(value: Any, path: str) -> NaclEntry:
    props = _fields(value, path, _NACL_ENTRY, required=("RuleNumber", "Protocol", "RuleAction", "CidrBlock"))
    protocol = props["Protocol"]
    if protocol in ("tcp", "udp") and "PortRange" not in props:
        raise _Invalid(_join(path, "PortRange"), f"required key is missing for {protocol}")
    ports, icmp = props.get("PortRange", {}), props.get("IcmpTypeCode", {})
    port_from = port_to = icmp_type = icmp_code = None
    try:
        if protocol == "icmp":
            icmp_type, icmp_code = port_range(protocol, icmp.get("Type"), icmp.get("Code"))
        else:
            port_from, port_to = port_range(protocol, ports.get("From"), ports.get("To"))
    except ValueError as e:
        raise _Invalid(path, str(e)) from None
    return NaclEntry(
        props["RuleNumber"],
        protocol,
        props["RuleAction"],
        props.get("Egress", False),
        props["CidrBlock"],
        port_from,
        port_to,
        icmp_type,
        icmp_code,
    )


def _attributes(value: Any, path: str) -> dict[str, tuple[Any, str]]:
    """AWS attributes as a mapping (`key: value`) or CloudFormation's list of `{Key, Value}`.

    Returns key -> (raw value, key path); values are checked in pass 2, where
    the resource's type says which keys exist.
    """
    if value is None:
        return {}
    found: dict[str, tuple[Any, str]] = {}
    if isinstance(value, list):
        for i, item in enumerate(value):
            props = _fields(item, f"{path}[{i}]", {"Key": TEXT, "Value": _scalar}, required=("Key", "Value"))
            key = props["Key"]
            if key in found:
                raise _Invalid(f"{path}[{i}].Key", f"attribute {key} is given twice")
            found[key] = (props["Value"], f"{path}[{i}].Value")
        return found
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected a mapping of attribute names to values, got {_describe(value)}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise _Invalid(_join(path, key), f"an attribute name is a string, got {_describe(key)}")
        found[key] = (_scalar(item, _join(path, key)), _join(path, key))
    return found


def _scalar(value: Any, path: str) -> Any:
    if isinstance(value, (str, int, bool)):
        return value
    raise _Invalid(path, f"expected a value (text, number or true/false), got {_describe(value)}")


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
    props = _fields(value, path, {"Id": TEXT, "Port": _leaf(_between(1, 65535))}, required=("Id",))
    return {**props, "at": _join(path, "Id")}


def _appliance(value: Any, path: str) -> dict[str, Any]:
    """The reference appliance's settings, validated as `vpclab appliance` reads them."""
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected a mapping of appliance settings, got {_describe(value)}")
    try:
        ApplianceConfig.from_dict(value)
    except ApplianceConfigError as e:
        raise _Invalid(path + e.where[len("appliance") :], e.reason) from None
    return value


ENDPOINT_TYPES = ("GatewayLoadBalancer", "Interface", "Gateway")


def _endpoint_type(value: Any) -> str:
    text = _text(value)
    for choice in ENDPOINT_TYPES:
        if text.lower() == choice.lower():
            return choice
    raise ValueError(f"expected one of {', '.join(ENDPOINT_TYPES)}, got '{text}'{_did_you_mean(text, ENDPOINT_TYPES)}")


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
GATEWAY_ONLY = "a Gateway Load Balancer endpoint has"

# -- Route 53 (AWS::Route53::HostedZone, with its record sets inline) --

OTHER_RECORD_TYPES = ("MX", "NS", "SOA", "SRV", "PTR", "CAA", "NAPTR", "SPF", "DS", "HTTPS", "SVCB", "TLSA", "SSHFP")
TXT_STRING_MAX = 255  # characters in one quoted string of a TXT value
DEFAULT_RECORD_TTL = 300  # the Route 53 console's default


def _record_type(value: Any) -> str:
    text = _text(value).strip().upper()
    if text in RECORD_TYPES:
        return text
    if text in OTHER_RECORD_TYPES:
        raise ValueError(f"{text} records are not supported yet; a hosted zone holds A, AAAA, CNAME and TXT records")
    choices = RECORD_TYPES + OTHER_RECORD_TYPES
    raise ValueError(f"unknown record type '{value}'{_did_you_mean(text, choices)}")


def _record_name(value: Any) -> str:
    """A fully qualified name, lowercase, without the trailing dot."""
    text = _text(value).strip().lower().rstrip(".")
    if text.startswith("*"):
        raise ValueError("wildcard records are not supported yet")
    if not DNS_NAME.fullmatch(text):
        raise ValueError(f"'{value}' is not a DNS name like web.example.local")
    return text


def _record_value(rtype: str, value: Any) -> str:
    """One of ResourceRecords, checked against the record type and written as Route 53 shows it."""
    if rtype == "A":
        return str(parse_address(value))
    text = _text(value)
    if rtype == "AAAA":
        try:
            return str(IPv6Address(text.strip()))
        except ValueError:
            raise ValueError(f"'{text}' is not an IPv6 address like 2001:db8::10") from None
    if rtype == "CNAME":
        return _record_name(text)
    for string in txt_strings(text):  # TXT
        if len(string) > TXT_STRING_MAX:
            raise ValueError(
                f"a TXT string is at most {TXT_STRING_MAX} characters; split it into several quoted strings"
            )
    return text


def _vpc_association(value: Any, path: str) -> dict[str, Any]:
    """A VPC a private zone is associated with: its name or ID, or CloudFormation's
    `{VPCId: ..., VPCRegion: ...}`; `at` is where its VPCId is written."""
    if isinstance(value, str):
        return {"VPCId": value, "at": path}
    props = _fields(value, path, {"VPCId": TEXT, "VPCRegion": _leaf(_region)}, required=("VPCId",))
    return {**props, "at": _join(path, "VPCId")}


_ALIAS_TARGET = {"DNSName": _leaf(_record_name), "HostedZoneId": TEXT, "EvaluateTargetHealth": BOOLEAN}
_ROUTING_POLICY = _unsupported("routing policies (weighted, latency, failover, geolocation, multivalue...)")
_RECORD_SET = {
    "Name": _leaf(_record_name),
    "Type": _leaf(_record_type),
    "TTL": _leaf(_between(0, 2**31 - 1)),
    "ResourceRecords": lambda value, path: value,  # checked below, once the type is known
    "AliasTarget": _mapping(_ALIAS_TARGET, required=("DNSName",)),
    "Comment": TEXT,
    **{key: _ROUTING_POLICY for key in ("SetIdentifier", "Weight", "Region", "Failover", "GeoLocation",
                                        "MultiValueAnswer", "CidrRoutingConfig", "GeoProximityLocation")},
    "HealthCheckId": _unsupported("Route 53 health checks"),
}


def _record_set(value: Any, path: str) -> dict[str, Any]:
    """One record set; its values are checked here, its name against the zone in pass 2."""
    props = _fields(value, path, _RECORD_SET, required=("Name", "Type"))
    rtype = props["Type"]
    if "AliasTarget" in props:
        alias = _join(path, "AliasTarget")
        if "ResourceRecords" in props:
            reason = "an alias record has no ResourceRecords: its target gives them"
            raise _Invalid(_join(path, "ResourceRecords"), reason)
        if "TTL" in props:
            raise _Invalid(_join(path, "TTL"), "an alias record takes its TTL from its target; drop TTL")
        if rtype != "A":
            reason = f"an alias answers with its target's A records: Type must be A, not {rtype}"
            raise _Invalid(_join(path, "Type"), reason)
        if props["AliasTarget"].get("EvaluateTargetHealth"):
            raise _Invalid(_join(alias, "EvaluateTargetHealth"), "evaluating target health is not supported yet")
        return props
    read_values = _list_of(_leaf(lambda value: _record_value(rtype, value)))
    values = read_values(props.get("ResourceRecords"), _join(path, "ResourceRecords"))
    if not values:
        raise _Invalid(
            _join(path, "ResourceRecords"),
            "a record set needs at least one value in ResourceRecords, or an AliasTarget",
        )
    index_of: dict[str, int] = {}
    for i, item in enumerate(values):
        j = index_of.setdefault(item, i)
        if j != i:
            raise _Invalid(f"{_join(path, 'ResourceRecords')}[{i}]", f"{item} is already ResourceRecords[{j}]")
    if rtype == "CNAME" and len(values) > 1:
        raise _Invalid(_join(path, "ResourceRecords"), f"a CNAME has exactly one value, got {len(values)}")
    return {**props, "ResourceRecords": values}

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
            "DefaultActions": _list_of(_mapping({"Type": TEXT, "TargetGroupArn": TEXT}, ("Type",))),
            "Protocol": _leaf(_upper),
            "Port": _leaf(_between(1, 65535)),
            "ListenerAttributes": _attributes,
        },
        ("LoadBalancerArn", "DefaultActions"),
    ),
    "vpc_endpoint_services": (
        {
            "GatewayLoadBalancerArns": NAMES,
            "NetworkLoadBalancerArns": NAMES,
            "AcceptanceRequired": BOOLEAN,
            "AllowedPrincipals": _list_of(_leaf(parse_principal)),
        },
        (),
    ),
    "vpc_endpoints": (
        {
            "VpcEndpointType": _leaf(_endpoint_type),
            "ServiceName": TEXT,
            "VpcId": TEXT,
            "SubnetIds": NAMES,
            "SecurityGroupIds": NAMES,
            "SubnetConfigurations": _list_of(
                _mapping({"SubnetId": TEXT, "Ipv4": ADDRESS, "Ipv6": _unsupported("IPv6 addresses")}, ("SubnetId",))
            ),
            "PolicyDocument": lambda value, path: value,
            "PrivateDnsEnabled": BOOLEAN,
        },
        ("ServiceName", "VpcId"),
    ),
    "hosted_zones": (
        {
            "Name": _leaf(_record_name),
            "VPCs": _list_of(_vpc_association),
            "RecordSets": _list_of(_record_set),
            "HostedZoneConfig": _mapping({"Comment": TEXT}),
            "HostedZoneTags": lambda value, path: value,
            "QueryLoggingConfig": _unsupported("query logging configurations"),
        },
        ("Name",),
    ),
    "hosts": (  # internet.hosts
        {"Ip": ADDRESS, "DnsName": _leaf(_dns_name), "Run": _commands, "DefaultServices": BOOLEAN},
        (),
    ),
}


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
INTERNET_FIELDS = {"CidrBlock": _leaf(_cidr_sized(8, 28)), "hosts": lambda value, path: value}  # hosts: resources
SECTIONS = ("lab", "vpcs", "subnets", "route_tables", "internet_gateways", "nat_gateways",
            "security_groups", "network_acls", "instances", "load_balancers", "target_groups",
            "listeners", "vpc_endpoint_services", "vpc_endpoints", "hosted_zones", "internet")  # fmt: skip

KIND_LABELS = {
    "vpcs": "VPC",
    "subnets": "subnet",
    "route_tables": "route table",
    "internet_gateways": "internet gateway",
    "nat_gateways": "NAT gateway",
    "security_groups": "security group",
    "network_acls": "network ACL",
    "instances": "instance",
    "load_balancers": "load balancer",
    "target_groups": "target group",
    "listeners": "listener",
    "vpc_endpoint_services": "endpoint service",
    "vpc_endpoints": "VPC endpoint",
    "hosted_zones": "hosted zone",
    "hosts": "internet host",
}


def _a(label: str) -> str:
    return f"an {label}" if label[0] in "aeiou" else f"a {label}"


@dataclass(frozen=True)
class _Spec:
    """One resource as read in pass 1: its typed keys and where it is in the file."""

    section: str
    name: str
    path: str
    props: dict[str, Any]
    order: int  # position in the file, for allocation in file order

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"


class _Document:
    """Pass 1: the file's sections, read in file order."""

    def __init__(self, doc: Any):
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


GENEVE_PORT = 6081
ELB_ALIAS_TTL = 60  # an alias to a load balancer or endpoint answers with its records' TTL (Route 53: 60 s)
_ARN_TYPES = {"gateway": "gwy", "network": "net", "application": "app"}


def _is_named(resource: Any, value: str) -> bool:
    """Whether `value` is the resource's ID, ARN or (endpoint service) service name."""
    return value in (getattr(resource, key, None) for key in ("id", "arn", "service_name"))


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


def _target_group_type(protocol: str, path: str) -> str:
    """The load balancer type a target group protocol serves: GENEVE gateway, TCP/UDP/TCP_UDP network."""
    if protocol not in TARGET_GROUP_PROTOCOLS:
        raise _Invalid(path, _protocol_problem(protocol, TARGET_GROUP_PROTOCOLS, "target groups"))
    return "gateway" if protocol == "GENEVE" else "network"


class _Builder:
    def __init__(self, document: _Document, region: str, account: str):
        self.doc = document
        self.region = region
        self.account = account
        self.internet_cidr: IPv4Network = document.internet.get("CidrBlock", DEFAULT_INTERNET_CIDR)
        # section -> name -> resource, as resolved so far (implicit resources included)
        self.built: dict[str, dict[str, Any]] = {section: {} for section in RESOURCE_SECTIONS}
        self.endpoint_enis: dict[str, list[EndpointEni]] = {}  # endpoint name -> its interfaces, once allocated
        self.endpoint_groups: dict[str, tuple[str, ...]] = {}  # interface endpoint name -> its security groups
        self.listener_of: dict[str, str] = {}  # load balancer -> its (first) listener
        self.listener_of_group: dict[str, str] = {}  # target group -> the (first) listener that forwards to it
        self.service_of: dict[str, str] = {}  # load balancer -> its endpoint service
        self.notes: list[str] = []  # "<key path>: <remark>" for what is valid but inert
        self.quotas: dict[str, int] = document.lab.get("quotas", {})  # AWS quota name -> the lab's increase

    def build(self) -> dict[str, dict[str, Any]]:
        if self.internet_cidr.overlaps(ELASTIC_IP_POOL):
            raise _Invalid("internet.CidrBlock", f"{self.internet_cidr} overlaps the Elastic IP pool {ELASTIC_IP_POOL}")
        self._vpcs()
        self._subnets()
        self._internet_gateways()
        self._security_groups()
        self._addressed_resources()
        self._target_groups()
        self._listeners()
        self._endpoint_services()
        self._endpoints()
        self._route_tables()
        self._network_acls()
        self._internet_hosts()
        self._hosted_zones()
        return self.built

    # Helpers

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
        label = KIND_LABELS[section]
        other = self.doc.name_kinds.get(value)
        if other is not None and other != section:
            raise _Invalid(path, f"'{value}' is {_a(KIND_LABELS[other])}, not {_a(label)}")
        raise _Invalid(path, f"unknown {label} '{value}'{_did_you_mean(value, resources)}")

    def _vpc_of(self, spec: _Spec) -> Vpc:
        return self._ref("vpcs", spec.props["VpcId"], spec.at("VpcId"))

    def _subnet_vpc(self, subnet_name: str) -> Vpc:
        return self.built["vpcs"][self.built["subnets"][subnet_name].vpc]

    def _check_vpc(self, section: str, resource: Any, vpc: Vpc, path: str) -> None:
        its_vpc = resource.vpc if hasattr(resource, "vpc") else self.built["subnets"][resource.subnet].vpc
        if its_vpc != vpc.name:
            where, where_not = ("attached to", "to") if section == "internet_gateways" else ("in", "in")
            name = f"{KIND_LABELS[section]} {resource.name}"
            raise _Invalid(path, f"{name} is {where} VPC {its_vpc}, not {where_not} VPC {vpc.name}")

    def _associate(self, spec: _Spec, key: str, section: str, vpc: Vpc, taken: dict[str, str]) -> tuple[str, ...]:
        """The resources listed under `key`, each in `vpc` and not yet associated (`taken`: name -> owner)."""
        names = []
        for i, value in enumerate(spec.props.get(key, [])):
            path = f"{spec.at(key)}[{i}]"
            resource = self._ref(section, value, path, vpc)
            if resource.name in taken:
                owner = f"{KIND_LABELS[spec.section]} {taken[resource.name]}"
                raise _Invalid(path, f"{KIND_LABELS[section]} {resource.name} is already associated with {owner}")
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

    # Sections

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

    def _addressed_resources(self) -> None:
        """NAT gateways, instances, load balancer nodes and endpoint interfaces share the subnets' addresses."""
        claims = [self._nat_claim(spec) for spec in self.doc.specs["nat_gateways"]]
        per_zone: dict[tuple[str, str], int] = {}
        for claim in claims:
            account, zone = self._subnet_vpc(claim.subnet.name).account, claim.subnet.az
            self._count(per_zone, (account, zone), NAT_GATEWAYS_PER_AZ, claim.spec.path,
                        lambda n: f"account {account} would have {n} NAT gateways in {zone}")  # fmt: skip
        claims += [self._instance_claim(spec) for spec in self.doc.specs["instances"]]
        for spec in self.doc.specs["load_balancers"]:
            claims += self._load_balancer_claims(spec)
        for spec in self.doc.specs["vpc_endpoints"]:
            claims += self._endpoint_claims(spec)
        self._allocate(sorted(claims, key=lambda claim: claim.spec.order))
        nodes: dict[str, list[_AddressClaim]] = {}
        for claim in claims:
            spec, subnet = claim.spec, claim.subnet
            account = self._subnet_vpc(subnet.name).account
            if spec.section == "load_balancers":
                nodes.setdefault(spec.name, []).append(claim)
                continue
            if spec.section == "vpc_endpoints":
                eni = EndpointEni(subnet.name, subnet.az, self._id("eni", account, f"{spec.name}/{subnet.name}"),
                                  claim.private_ip)  # fmt: skip
                self.endpoint_enis.setdefault(spec.name, []).append(eni)
                continue
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
        for spec in self.doc.specs["load_balancers"]:
            self._add("load_balancers", self._load_balancer(spec, nodes[spec.name]))

    def _subnet_for(self, spec: _Spec) -> Subnet:
        return self._ref("subnets", spec.props["SubnetId"], spec.at("SubnetId"))

    def _need_internet_gateway(self, subnet: Subnet, what: str, path: str, hint: str = "") -> None:
        vpc = self._subnet_vpc(subnet.name)
        if not any(igw.vpc == vpc.name for igw in self.built["internet_gateways"].values()):
            raise _Invalid(path, f"{what} needs an internet gateway attached to VPC {vpc.name}, and it has none{hint}")

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
                    spec.at("Appliance"), "Appliance configures the reference appliance: it needs Role: appliance"
                )
            if spec.props.get("Run"):
                raise _Invalid(
                    spec.at("Appliance"),
                    "Appliance configures the reference appliance, which does not run when Run is given; drop one",
                )
        return _AddressClaim(
            spec, f"instance {spec.name}", subnet, public, groups,
            explicit=spec.props.get("PrivateIpAddress"), explicit_path=spec.at("PrivateIpAddress"),
            explicit_public=spec.props.get("PublicIpAddress"), explicit_public_path=spec.at("PublicIpAddress"),
        )  # fmt: skip

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

    # Load balancers, target groups, listeners

    def _load_balancer_claims(self, spec: _Spec) -> list[_AddressClaim]:
        """One address claim per node: one enabled subnet per AZ, all in one VPC; an
        internet-facing load balancer's nodes each take an Elastic IP too."""
        lb_type = spec.props.get("Type")
        if lb_type is None:
            raise _Invalid(
                spec.at("Type"),
                "Type defaults to application, as in CloudFormation, and Application Load Balancers "
                "are not supported yet: write Type: network or Type: gateway",
            )
        if lb_type == "application":
            raise _Invalid(
                spec.at("Type"), "application load balancers are not supported yet; only network and gateway are"
            )
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
        return LoadBalancer(
            name=spec.name,
            arn=elb_arn(self.region, vpc.account, f"loadbalancer/{_ARN_TYPES[lb_type]}/{spec.name}/{hex_id}"),
            type=lb_type,
            scheme="internet-facing" if claims[0].public else "internal",
            vpc=vpc.name,
            nodes=nodes,
            dns_name=f"{spec.name}-{hex_id}.elb.{self.region}.amazonaws.com".lower(),
            attributes=attributes,
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
            if target_type not in ("instance", "ip"):
                if lb_type == "gateway":
                    reason = f"a GENEVE target group takes instance or ip targets, not {target_type}"
                elif target_type == "alb":
                    reason = "alb target groups (an Application Load Balancer as target) are not supported yet"
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
                try:
                    target = resolve_target(
                        ref["Id"], target_type, vpc.name, ref.get("Port", port),
                        self.built["instances"], self.built["subnets"],
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

    def _listeners(self) -> None:
        taken: dict[str, dict[int, list[tuple[str, str]]]] = {}  # load balancer -> port -> (protocol, listener)
        for spec in self.doc.specs["listeners"]:
            lb: LoadBalancer = self._ref("load_balancers", spec.props["LoadBalancerArn"], spec.at("LoadBalancerArn"))
            if lb.type == "gateway":
                self._gateway_listener(spec, lb)
                protocol, port = None, None
            else:
                protocol, port = self._network_listener(spec, lb, taken.setdefault(lb.name, {}))
            group = self._forward_target(spec, lb, protocol)
            attributes = self._attributes(
                spec, "ListenerAttributes",
                lambda changes: resolve_listener_attributes(lb.type, protocol, None, changes),
            )  # fmt: skip
            self.listener_of.setdefault(lb.name, spec.name)
            self.listener_of_group.setdefault(group.name, spec.name)
            account = lb.arn.split(":")[4]
            lb_hex = lb.arn.rsplit("/", 1)[1]
            hex_id = aws_hex("listener", account, self.region, lb.name, spec.name)
            arn = elb_arn(self.region, account, f"listener/{_ARN_TYPES[lb.type]}/{lb.name}/{lb_hex}/{hex_id}")
            self._add("listeners", Listener(spec.name, arn, lb.name, group.name, protocol, port, attributes))
        for spec in self.doc.specs["load_balancers"]:
            if spec.props["Type"] == "gateway" and spec.name not in self.listener_of:
                raise _Invalid(
                    spec.path,
                    f"a Gateway Load Balancer needs exactly one listener, and {spec.name} has none: "
                    f"add one under listeners with LoadBalancerArn: {spec.name}",
                )

    def _gateway_listener(self, spec: _Spec, lb: LoadBalancer) -> None:
        """A GWLB has exactly one listener, which takes every IP packet."""
        if lb.name in self.listener_of:
            raise _Invalid(
                spec.at("LoadBalancerArn"),
                f"load balancer {lb.name} already has listener {self.listener_of[lb.name]}; "
                "a Gateway Load Balancer has exactly one",
            )
        for key in ("Protocol", "Port"):
            if key in spec.props:
                raise _Invalid(
                    spec.at(key), "a Gateway Load Balancer listener takes every IP packet: no Protocol or Port"
                )

    def _network_listener(
        self, spec: _Spec, lb: LoadBalancer, taken: dict[int, list[tuple[str, str]]]
    ) -> tuple[str, int]:
        """An NLB listener's protocol and port, not colliding with its other listeners':
        TCP and UDP may share a port, TCP_UDP takes it for both."""
        for key in ("Protocol", "Port"):
            if key not in spec.props:
                raise _Invalid(spec.at(key), f"required key is missing: a Network Load Balancer listener has a {key}")
        protocol, port = spec.props["Protocol"], spec.props["Port"]
        if protocol not in LISTENER_PROTOCOLS:
            raise _Invalid(spec.at("Protocol"), _protocol_problem(protocol, LISTENER_PROTOCOLS, "listeners"))
        for other_protocol, other in taken.get(port, ()):
            if other_protocol == protocol or "TCP_UDP" in (protocol, other_protocol):
                raise _Invalid(
                    spec.at("Port"),
                    f"load balancer {lb.name} already has listener {other} on {other_protocol} port {port}; "
                    "two listeners can share a port only as TCP and UDP (TCP_UDP takes both)",
                )
        taken.setdefault(port, []).append((protocol, spec.name))
        return protocol, port

    def _forward_target(self, spec: _Spec, lb: LoadBalancer, protocol: str | None) -> TargetGroup:
        """The target group of a listener's one default action, a forward, in the load balancer's VPC."""
        kind = "a Gateway Load Balancer listener" if lb.type == "gateway" else "a Network Load Balancer listener"
        actions = spec.props["DefaultActions"]
        if len(actions) != 1:
            raise _Invalid(
                spec.at("DefaultActions"),
                f"{kind} has exactly one default action, "
                f"{{Type: forward, TargetGroupArn: <target group>}}; got {len(actions)}",
            )
        action, action_path = actions[0], f"{spec.at('DefaultActions')}[0]"
        if action["Type"].lower() != "forward":
            raise _Invalid(f"{action_path}.Type", f"{kind} can only forward, got '{action['Type']}'")
        if "TargetGroupArn" not in action:
            raise _Invalid(f"{action_path}.TargetGroupArn", "required key is missing")
        group_path = f"{action_path}.TargetGroupArn"
        group: TargetGroup = self._ref("target_groups", action["TargetGroupArn"], group_path)
        if lb.type == "gateway" and group.protocol != "GENEVE":
            raise _Invalid(
                group_path, f"target group {group.name} is {group.protocol}; a Gateway Load Balancer forwards to GENEVE"
            )
        if protocol is not None and group.protocol not in LISTENER_GROUP_PROTOCOLS[protocol]:
            allowed = " or ".join(LISTENER_GROUP_PROTOCOLS[protocol])
            raise _Invalid(
                group_path,
                f"target group {group.name} is {group.protocol}, and a {protocol} listener forwards to a {allowed} "
                "target group",
            )
        first = self.listener_of_group.get(group.name)
        if first is not None and self.built["listeners"][first].load_balancer != lb.name:
            raise _Invalid(
                group_path,
                f"target group {group.name} is already used by listener {first}; "
                "vpclab lets a target group serve one load balancer",
            )
        if group.vpc != lb.vpc:
            raise _Invalid(
                group_path,
                f"target group {group.name} is in VPC {group.vpc}, but load balancer {lb.name} is in VPC {lb.vpc}",
            )
        return group

    # PrivateLink

    def _endpoint_services(self) -> None:
        for spec in self.doc.specs["vpc_endpoint_services"]:
            if "GatewayLoadBalancerArns" in spec.props and "NetworkLoadBalancerArns" in spec.props:
                raise _Invalid(
                    spec.at("NetworkLoadBalancerArns"),
                    "give GatewayLoadBalancerArns or NetworkLoadBalancerArns, not both: an endpoint service "
                    "fronts one kind of load balancer",
                )
            if "NetworkLoadBalancerArns" in spec.props:
                key, lb_type, service_type = "NetworkLoadBalancerArns", "network", "Interface"
            elif "GatewayLoadBalancerArns" in spec.props:
                key, lb_type, service_type = "GatewayLoadBalancerArns", "gateway", "GatewayLoadBalancer"
            else:
                raise _Invalid(
                    spec.at("NetworkLoadBalancerArns"),
                    "required key is missing: an endpoint service needs NetworkLoadBalancerArns (for interface "
                    "endpoints) or GatewayLoadBalancerArns (for Gateway Load Balancer endpoints)",
                )
            names: list[str] = []
            account: str | None = None
            if not spec.props[key]:
                raise _Invalid(spec.at(key), f"an endpoint service needs at least one {lb_type.title()} Load Balancer")
            for i, value in enumerate(spec.props[key]):
                path = f"{spec.at(key)}[{i}]"
                lb: LoadBalancer = self._ref("load_balancers", value, path)
                if lb.type != lb_type:
                    raise _Invalid(path, f"load balancer {lb.name} is a {lb.type} load balancer, not a {lb_type} one")
                if lb.name in self.service_of:
                    raise _Invalid(
                        path, f"load balancer {lb.name} already serves endpoint service {self.service_of[lb.name]}"
                    )
                lb_account = self.built["vpcs"][lb.vpc].account
                if account is not None and lb_account != account:
                    raise _Invalid(
                        path, f"load balancer {lb.name} is in account {lb_account}, the service's others in {account}"
                    )
                account = lb_account
                self.service_of[lb.name] = spec.name
                names.append(lb.name)
            principals: list[str] = []
            for i, principal in enumerate(spec.props.get("AllowedPrincipals", [])):
                if principal in principals:
                    raise _Invalid(f"{spec.at('AllowedPrincipals')}[{i}]", f"principal {principal} is listed twice")
                principals.append(principal)
            assert account is not None
            service_id = aws_id("vpce-svc", account, self.region, spec.name)
            self._add(
                "vpc_endpoint_services",
                VpcEndpointService(
                    name=spec.name,
                    id=service_id,
                    service_name=f"com.amazonaws.vpce.{self.region}.{service_id}",
                    type=service_type,
                    load_balancers=tuple(names),
                    acceptance_required=spec.props.get("AcceptanceRequired", True),
                    allowed_principals=tuple(principals),
                    account=account,
                ),
            )

    def _endpoint_claims(self, spec: _Spec) -> list[_AddressClaim]:
        """A GatewayLoadBalancer endpoint: one interface in one subnet of its VPC. An
        Interface endpoint: one interface in each of its subnets, at most one per AZ."""
        endpoint_type = spec.props.get("VpcEndpointType")
        if endpoint_type is None:
            raise _Invalid(
                spec.at("VpcEndpointType"),
                "VpcEndpointType defaults to Gateway, as in CloudFormation, and gateway endpoints (S3, DynamoDB) "
                "are not supported yet: write VpcEndpointType: Interface or GatewayLoadBalancer",
            )
        if endpoint_type == "Gateway":
            raise _Invalid(spec.at("VpcEndpointType"), "gateway endpoints (S3, DynamoDB) are not supported yet")
        if endpoint_type == "GatewayLoadBalancer":
            for key, what in (
                ("SecurityGroupIds", "no security groups"),
                ("PolicyDocument", "no endpoint policy"),
                ("PrivateDnsEnabled", "no private DNS"),
                ("SubnetConfigurations", "no subnet configurations: its address comes from its subnet"),
            ):
                if key in spec.props:
                    raise _Invalid(spec.at(key), f"{GATEWAY_ONLY} {what}")
        else:
            if "PolicyDocument" in spec.props:
                raise _Invalid(spec.at("PolicyDocument"), "endpoint policies are not supported yet")
            if spec.props.get("PrivateDnsEnabled"):
                raise _Invalid(
                    spec.at("PrivateDnsEnabled"),
                    "private DNS names for interface endpoints are not supported yet; alias the endpoint's "
                    "DNS name in a private hosted zone instead",
                )
        vpc = self._vpc_of(spec)
        subnets = spec.props.get("SubnetIds", [])
        if endpoint_type == "GatewayLoadBalancer" and len(subnets) != 1:
            raise _Invalid(
                spec.at("SubnetIds"), f"{GATEWAY_ONLY} exactly one subnet (one AZ), got {len(subnets)}"
            )
        if not subnets:
            raise _Invalid(spec.at("SubnetIds"), "an interface endpoint needs at least one subnet (one per AZ)")
        if endpoint_type == "Interface":
            self.endpoint_groups[spec.name] = self._security_groups_of(
                spec, vpc, f"an interface endpoint needs at least one security group; leave SecurityGroupIds out for "
                f"{vpc.name}-default",
            )  # fmt: skip
        claims: list[_AddressClaim] = []
        for i, value in enumerate(subnets):
            path = f"{spec.at('SubnetIds')}[{i}]"
            subnet = self._ref("subnets", value, path, vpc)
            _one_subnet_per_az(claims, subnet, path, "interface endpoint")
            claims.append(_AddressClaim(spec, f"VPC endpoint {spec.name}", subnet, False, path=path))
        for i, config in enumerate(spec.props.get("SubnetConfigurations", [])):
            path = f"{spec.at('SubnetConfigurations')}[{i}]"
            subnet = self._ref("subnets", config["SubnetId"], f"{path}.SubnetId", vpc)
            claim = next((c for c in claims if c.subnet.name == subnet.name), None)
            if claim is None:
                raise _Invalid(f"{path}.SubnetId", f"subnet {subnet.name} is not one of the endpoint's SubnetIds")
            if claim.explicit_path:
                raise _Invalid(f"{path}.SubnetId", f"subnet {subnet.name} is configured twice")
            claim.explicit, claim.explicit_path = config.get("Ipv4"), f"{path}.Ipv4"
        return claims

    def _security_groups_of(self, spec: _Spec, vpc: Vpc, none_given: str) -> tuple[str, ...]:
        """The groups of an instance or interface endpoint (`SecurityGroupIds`), all in `vpc`, each
        once: by default the VPC's default group. `none_given` refuses an empty list."""
        groups: list[str] = []
        for i, value in enumerate(spec.props.get("SecurityGroupIds", [f"{vpc.name}-default"])):
            path = f"{spec.at('SecurityGroupIds')}[{i}]"
            eni = f"{KIND_LABELS[spec.section]} {spec.name}'s network interface"
            self._within(SGS_PER_ENI, i + 1, path, lambda n: f"{eni} has {n} security groups")
            group = self._ref("security_groups", value, path, vpc)
            if group.name in groups:
                raise _Invalid(path, f"security group {group.name} is listed twice")
            groups.append(group.name)
        if not groups:
            raise _Invalid(spec.at("SecurityGroupIds"), none_given)
        return tuple(groups)

    def _endpoints(self) -> None:
        per_vpc: dict[str, int] = {}
        for spec in self.doc.specs["vpc_endpoints"]:
            vpc = self._vpc_of(spec)
            self._count(per_vpc, vpc.name, ENDPOINTS_PER_VPC, spec.path,
                        lambda n: f"VPC {vpc.name} would have {n} interface and Gateway Load Balancer "
                                  "endpoints")  # fmt: skip
            path = spec.at("ServiceName")
            service: VpcEndpointService = self._ref("vpc_endpoint_services", spec.props["ServiceName"], path)
            endpoint_type = spec.props["VpcEndpointType"]
            if service.type != endpoint_type:
                raise _Invalid(path, f"endpoint service {service.name} is of type {service.type}, not {endpoint_type}")
            if not principal_allows(service.allowed_principals, vpc.account):
                raise _Invalid(
                    path,
                    f"account {vpc.account} (VPC {vpc.name}'s) is not an allowed principal of endpoint service "
                    f"{service.name} ({service.id}): add arn:aws:iam::{vpc.account}:root to its AllowedPrincipals",
                )
            enis = self.endpoint_enis[spec.name]
            balancers = [self.built["load_balancers"][name] for name in service.load_balancers]
            zones = sorted({node.az for lb in balancers for node in lb.nodes})
            for i, eni in enumerate(enis):
                if eni.az not in zones:
                    raise _Invalid(
                        f"{spec.at('SubnetIds')}[{i}]",
                        f"subnet {eni.subnet} is in {eni.az}, but endpoint service {service.name} is only in "
                        f"{', '.join(zones)} (where its load balancers have nodes)",
                    )
            endpoint_id = aws_id("vpce", vpc.account, self.region, spec.name)
            dns_entries: tuple[str, ...] = ()
            if endpoint_type == "Interface":
                suffix = f"{service.id}.{self.region}.vpce.amazonaws.com"
                dns_entries = (f"{endpoint_id}.{suffix}", *(f"{endpoint_id}-{eni.az}.{suffix}" for eni in enis))
            self._add(
                "vpc_endpoints",
                VpcEndpoint(
                    name=spec.name,
                    id=endpoint_id,
                    type=endpoint_type,
                    vpc=vpc.name,
                    service=service.name,
                    enis=tuple(enis),
                    state="pendingAcceptance" if service.acceptance_required else "available",
                    account=vpc.account,
                    security_groups=self.endpoint_groups.get(spec.name, ()),
                    dns_entries=dns_entries,
                ),
            )

    def _route_tables(self) -> None:
        table_of_subnet: dict[str, str] = {}
        table_of_gateway: dict[str, str] = {}
        main_of_vpc: dict[str, str] = {}
        for spec in self.doc.specs["route_tables"]:
            vpc = self._vpc_of(spec)
            main = spec.props.get("Main", False)
            if main and vpc.name in main_of_vpc:
                raise _Invalid(
                    spec.at("Main"), f"VPC {vpc.name} already has a main route table: {main_of_vpc[vpc.name]}"
                )
            if main:
                main_of_vpc[vpc.name] = spec.name
            edge = bool(spec.props.get("EdgeAssociations"))
            routes = self._routes(spec, vpc, edge)
            subnets = self._associate(spec, "SubnetAssociations", "subnets", vpc, table_of_subnet)
            gateways = self._associate(spec, "EdgeAssociations", "internet_gateways", vpc, table_of_gateway)
            self._add(
                "route_tables",
                RouteTable(
                    spec.name,
                    self._id("rtb", vpc.account, spec.name),
                    vpc.name,
                    routes,
                    subnets,
                    main,
                    gateways,
                ),
            )
        implicit = {}
        for vpc in self.built["vpcs"].values():
            if vpc.name not in main_of_vpc:
                name = f"{vpc.name}-main"
                self._implicit(name, f"the main route table of VPC {vpc.name}")
                local = Route(vpc.cidr, "local", "local")
                implicit[name] = RouteTable(name, self._id("rtb", vpc.account, name), vpc.name, (local,), main=True)
        self.built["route_tables"] = {**implicit, **self.built["route_tables"]}

    def _routes(self, spec: _Spec, vpc: Vpc, edge: bool) -> tuple[Route, ...]:
        """The local route first, then the file's routes; a route to the VPC CIDR replaces the local one."""
        routes = [Route(vpc.cidr, "local", "local")]
        subnet_cidrs = {s.cidr for s in self.built["subnets"].values() if s.vpc == vpc.name}
        first_of: dict[IPv4Network, int] = {}
        for i, props in enumerate(spec.props.get("Routes", [])):
            path = f"{spec.at('Routes')}[{i}]"
            destination: IPv4Network = props["DestinationCidrBlock"]
            if destination in first_of:
                reason = f"{destination} is already routed by Routes[{first_of[destination]}]"
                raise _Invalid(f"{path}.DestinationCidrBlock", reason)
            first_of[destination] = i
            key = next(key for key in props if key in ROUTE_TARGETS)
            kind, target = self._route_target(vpc, key, props[key], f"{path}.{key}")
            reason = _route_refusal(destination, kind, vpc.cidr, subnet_cidrs, edge)
            if reason:
                raise _Invalid(path, reason)
            route = Route(destination, kind, target)
            if destination == vpc.cidr:
                routes[0] = route
                continue
            routes.append(route)
            self._within(ROUTES_PER_TABLE, len(routes) - 1, path,
                         lambda n: f"route table {spec.name} has {n} routes besides the local route")
        return tuple(routes)

    def _route_target(self, vpc: Vpc, key: str, value: str, path: str) -> tuple[str, str]:
        kind = ROUTE_TARGETS[key]
        if kind == "igw":
            if value == "local":
                return "local", "local"
            return kind, self._ref("internet_gateways", value, path, vpc).name
        if kind == "nat":
            return kind, self._ref("nat_gateways", value, path, vpc).name
        if kind == "vpce":
            endpoint: VpcEndpoint = self._ref("vpc_endpoints", value, path, vpc)
            if endpoint.type != "GatewayLoadBalancer":
                reason = f"VPC endpoint {endpoint.name} is {endpoint.type}; routes take GatewayLoadBalancer endpoints"
                raise _Invalid(path, reason)
            return kind, endpoint.name
        if kind == "eni":
            instance = self._interface(value, path)
            self._check_vpc("instances", instance, vpc, path)
            return kind, instance.name
        return kind, self._ref("instances", value, path, vpc).name

    def _interface(self, value: str, path: str) -> Instance:
        """An instance by its ENI's ID, or by its own name or ID."""
        for instance in self.built["instances"].values():
            if instance.eni_id == value:
                return instance
        if value.startswith("eni-"):
            raise _Invalid(path, f"unknown network interface '{value}'")
        return self._ref("instances", value, path)

    def _network_acls(self) -> None:
        implicit = {}
        for vpc in self.built["vpcs"].values():
            name = f"{vpc.name}-default-acl"
            self._implicit(name, f"the default network ACL of VPC {vpc.name}")
            allow_all = tuple(NaclEntry(100, "-1", "allow", egress, ANYWHERE) for egress in (False, True))
            implicit[name] = NetworkAcl(name, self._id("acl", vpc.account, name), vpc.name, allow_all, (), default=True)
        acl_of_subnet: dict[str, str] = {}
        for spec in self.doc.specs["network_acls"]:
            vpc = self._vpc_of(spec)
            entries: list[NaclEntry] = []
            index_of: dict[tuple[int, bool], int] = {}  # (rule number, egress) -> its entry
            per_direction: dict[bool, int] = {}
            for i, entry in enumerate(spec.props.get("Entries", [])):
                way = "outbound" if entry.egress else "inbound"
                self._count(per_direction, entry.egress, RULES_PER_NACL, f"{spec.at('Entries')}[{i}]",
                            lambda n: f"network ACL {spec.name} has {n} {way} rules")  # fmt: skip
                j = index_of.setdefault((entry.rule_number, entry.egress), i)
                if j != i:
                    direction = "egress" if entry.egress else "ingress"
                    raise _Invalid(
                        f"{spec.at('Entries')}[{i}].RuleNumber",
                        f"{direction} rule {entry.rule_number} is already Entries[{j}]",
                    )
                entries.append(entry)
            subnets = self._associate(spec, "SubnetAssociations", "subnets", vpc, acl_of_subnet)
            entries.sort(key=lambda e: (e.egress, e.rule_number))
            acl = NetworkAcl(spec.name, self._id("acl", vpc.account, spec.name), vpc.name, tuple(entries), subnets)
            self._add("network_acls", acl)
        self.built["network_acls"] = {**implicit, **self.built["network_acls"]}

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

    # Route 53 private hosted zones

    def _hosted_zones(self) -> None:
        """Zones first, each with its records checked; then aliases, which may point into any zone."""
        zones: dict[str, _ZoneDraft] = {}
        owner_of_domain: dict[tuple[str, str], str] = {}  # (VPC, domain) -> zone
        for spec in self.doc.specs["hosted_zones"]:
            domain = spec.props["Name"]
            self._check_zone_domain(domain, spec.at("Name"))
            vpcs = self._zone_vpcs(spec, domain, owner_of_domain)
            zones[spec.name] = _ZoneDraft(spec, domain, vpcs, self._zone_records(spec, domain))
        self._alias_tables()
        for draft in zones.values():
            records = []
            for i, (props, path) in enumerate(draft.records):
                if "AliasTarget" in props:
                    values, ttl = self._alias(zones, draft.spec.name, i, ())
                    target = props["AliasTarget"]["DNSName"]
                    if "HostedZoneId" not in props["AliasTarget"]:
                        target = self._alias_dns_name(zones, target, path)
                    record = RecordSet(props["Name"], "A", ttl, values, target)
                else:
                    ttl = props.get("TTL", DEFAULT_RECORD_TTL)
                    record = RecordSet(props["Name"], props["Type"], ttl, tuple(props["ResourceRecords"]))
                records.append(record)
            spec = draft.spec
            zone_id = hosted_zone_id(self.account, spec.name)
            self._add("hosted_zones", HostedZone(spec.name, zone_id, draft.domain, draft.vpcs, tuple(records)))

    def _check_zone_domain(self, domain: str, path: str) -> None:
        if domain == hostname_domain(self.region):
            raise _Invalid(
                path,
                f"{domain} holds the instances' private hostnames in every VPC of {self.region}; choose another domain",
            )
        if domain.endswith(("in-addr.arpa", "ip6.arpa")):
            raise _Invalid(path, "reverse lookup zones are not supported yet (PTR records are not)")

    def _zone_vpcs(self, spec: _Spec, domain: str, owner_of_domain: dict[tuple[str, str], str]) -> tuple[str, ...]:
        associations = spec.props.get("VPCs")
        if not associations:
            reason = "a private hosted zone needs at least one VPC; public hosted zones are not supported yet"
            raise _Invalid(spec.at("VPCs"), reason if associations is None else reason.split(";")[0])
        vpcs: list[str] = []
        for i, association in enumerate(associations):
            vpc: Vpc = self._ref("vpcs", association["VPCId"], association["at"])
            if "VPCRegion" in association and association["VPCRegion"] != self.region:
                raise _Invalid(
                    f"{spec.at('VPCs')}[{i}].VPCRegion", f"VPC {vpc.name} is in the lab's region {self.region}"
                )
            if vpc.name in vpcs:
                raise _Invalid(association["at"], f"VPC {vpc.name} is listed twice")
            if vpc.account != self.account:
                raise _Invalid(
                    association["at"],
                    f"VPC {vpc.name} is in account {vpc.account}, the zone in the lab's account {self.account}: "
                    "associating another account's VPC (CreateVPCAssociationAuthorization) is not supported yet",
                )
            other = owner_of_domain.get((vpc.name, domain))
            if other is not None:
                raise _Invalid(
                    association["at"],
                    f"VPC {vpc.name} is already associated with hosted zone {other}, also for {domain}; "
                    "a VPC can't be associated with two private zones of the same name (ConflictingDomainExists)",
                )
            owner_of_domain[(vpc.name, domain)] = spec.name
            if not (vpc.enable_dns_support and vpc.enable_dns_hostnames):
                off = " and ".join(
                    key for key, on in (("EnableDnsSupport", vpc.enable_dns_support),
                                        ("EnableDnsHostnames", vpc.enable_dns_hostnames)) if not on
                )  # fmt: skip
                self.notes.append(
                    f"{association['at']}: VPC {vpc.name} has {off} false, so its resolver does not answer "
                    f"{domain}: a private hosted zone needs both EnableDnsSupport and EnableDnsHostnames"
                )
            vpcs.append(vpc.name)
        return tuple(vpcs)

    def _zone_records(self, spec: _Spec, domain: str) -> list[tuple[dict[str, Any], str]]:
        """The record sets, each inside the zone, one per name and type, a CNAME alone at its name."""
        records: list[tuple[dict[str, Any], str]] = []
        types_at: dict[str, list[tuple[int, str]]] = {}  # name -> (index, type) of its record sets so far
        for i, props in enumerate(spec.props.get("RecordSets", [])):
            path = f"{spec.at('RecordSets')}[{i}]"
            name, rtype = props["Name"], props["Type"]
            if not _in_domain(name, domain):
                hint = f" (write the full name, like {name}.{domain})" if "." not in name else ""
                raise _Invalid(f"{path}.Name", f"{name} is not in zone {domain}{hint}")
            if rtype == "CNAME" and name == domain:
                raise _Invalid(
                    f"{path}.Type", f"a CNAME can't be at the zone apex {domain}; use an alias (AliasTarget) there"
                )
            for j, earlier_type in types_at.get(name, ()):  # a few at most: one per type
                if earlier_type == rtype:
                    raise _Invalid(
                        f"{path}.Type",
                        f"{name} already has a record set of type {rtype}, RecordSets[{j}]; give all its values there",
                    )
                if "CNAME" in (rtype, earlier_type):
                    raise _Invalid(
                        f"{path}.Type",
                        f"{name} already has a record set of type {earlier_type}, RecordSets[{j}], and a CNAME "
                        "must be the only record set at its name",
                    )
            types_at.setdefault(name, []).append((i, rtype))
            records.append((props, path))
        return records

    def _alias(
        self, zones: dict[str, _ZoneDraft], zone: str, index: int, chain: tuple[tuple[str, int], ...]
    ) -> tuple[tuple[str, ...], int]:
        """The A values and TTL an alias record resolves to, following aliases to aliases."""
        props, path = zones[zone].records[index]
        target: str = props["AliasTarget"]["DNSName"]
        at = f"{path}.AliasTarget.DNSName"
        if (zone, index) in chain:
            loop = " -> ".join(zones[z].records[i][0]["Name"] for z, i in (*chain, (zone, index)))
            first = zones[chain[0][0]].records[chain[0][1]][1]
            raise _Invalid(f"{first}.AliasTarget.DNSName", f"these aliases form a loop: {loop}")
        chain = (*chain, (zone, index))
        if "HostedZoneId" in props["AliasTarget"]:
            where = self._alias_zone(zones, props["AliasTarget"]["HostedZoneId"], f"{path}.AliasTarget.HostedZoneId")
            if not _in_domain(target, zones[where].domain):
                raise _Invalid(at, f"{target} is not in hosted zone {where} ({zones[where].domain})")
            return self._alias_record(zones, where, target, at, chain)
        for instance in self.built["instances"].values():
            if instance.hostname == target:
                return (str(instance.private_ip),), 60
        target = self._alias_dns_name(zones, target, at)
        if target in self.alias_names:
            values = self.alias_names[target]
            if isinstance(values, str):
                raise _Invalid(at, values)
            return values, ELB_ALIAS_TTL
        holders = [name for name, draft in zones.items() if _in_domain(target, draft.domain)]
        if not holders:
            known = [i.hostname for i in self.built["instances"].values()]
            known += [*self.alias_names, *self.lab_alias_names]
            known += [p["Name"] for draft in zones.values() for p, _ in draft.records]
            raise _Invalid(
                at,
                f"{target} is not a name the lab knows: an alias points to an instance's private hostname, "
                "a record in a hosted zone of the lab, a Network Load Balancer's or interface endpoint's DNS name "
                "(regional or zonal), or the lab name of a Network Load Balancer or interface endpoint"
                f"{_did_you_mean(target, known)}",
            )
        deepest = max(len(zones[name].domain) for name in holders)
        holders = [name for name in holders if len(zones[name].domain) == deepest]
        if zone in holders:
            holders = [zone]
        if len(holders) > 1:
            raise _Invalid(
                at, f"{target} is in hosted zones {', '.join(holders)}, all for {zones[holders[0]].domain}: "
                "give AliasTarget.HostedZoneId to choose one",
            )
        return self._alias_record(zones, holders[0], target, at, chain)

    def _alias_tables(self) -> None:
        """What an alias may name besides hostnames and records: the DNS names of load balancers and
        interface endpoints (`alias_names`: name -> A values, or why it can't be aliased) and, as
        vpclab's convenience, their lab names (`lab_alias_names`: name -> DNS name, None for none)."""
        self.alias_names: dict[str, tuple[str, ...] | str] = {}
        self.lab_alias_names: dict[str, str | None] = {}
        for lb in self.built["load_balancers"].values():
            self.lab_alias_names[lb.name.lower()] = lb.dns_name
            if lb.type == "gateway":
                self.alias_names[lb.dns_name] = (
                    f"{lb.dns_name} is Gateway Load Balancer {lb.name}'s name, and a GWLB has no addresses to "
                    "alias: traffic reaches it through its endpoints' routes"
                )
                continue
            public = lb.scheme == "internet-facing"
            addresses = {n.az: str(n.public_ip if public else n.private_ip) for n in lb.nodes}
            self.alias_names[lb.dns_name] = tuple(addresses.values())
            self.alias_names.update({lb.zonal_dns_name(az): (ip,) for az, ip in addresses.items()})
        for endpoint in self.built["vpc_endpoints"].values():
            if endpoint.type != "Interface":
                self.lab_alias_names[endpoint.name.lower()] = None
                continue
            regional, *zonal = endpoint.dns_entries
            self.lab_alias_names[endpoint.name.lower()] = regional
            self.alias_names[regional] = tuple(str(eni.ip) for eni in endpoint.enis)
            self.alias_names.update({name: (str(eni.ip),) for name, eni in zip(zonal, endpoint.enis)})

    def _alias_dns_name(self, zones: dict[str, _ZoneDraft], target: str, at: str) -> str:
        """`target`, or, when it is no DNS name the lab knows and in no hosted zone, the regional
        DNS name of the Network Load Balancer or interface endpoint it is the lab name of."""
        if target in self.alias_names or any(_in_domain(target, draft.domain) for draft in zones.values()):
            return target
        if target not in self.lab_alias_names:
            return target
        dns_name = self.lab_alias_names[target]
        if dns_name is None:
            raise _Invalid(
                at,
                f"{target} is a Gateway Load Balancer endpoint, which has no DNS name or addresses to alias: "
                "routes send traffic to it",
            )
        return dns_name

    def _alias_zone(self, zones: dict[str, _ZoneDraft], value: str, path: str) -> str:
        for name in zones:
            if value in (name, hosted_zone_id(self.account, name)):
                return name
        other = self.doc.name_kinds.get(value)
        if other is not None:
            raise _Invalid(path, f"'{value}' is {_a(KIND_LABELS[other])}, not a hosted zone")
        raise _Invalid(path, f"unknown hosted zone '{value}'{_did_you_mean(value, zones)}")

    def _alias_record(
        self, zones: dict[str, _ZoneDraft], zone: str, target: str, at: str, chain: tuple[tuple[str, int], ...]
    ) -> tuple[tuple[str, ...], int]:
        draft = zones[zone]
        for index, (props, _) in enumerate(draft.records):
            if props["Name"] == target and props["Type"] == "A":
                if "AliasTarget" in props:
                    return self._alias(zones, zone, index, chain)
                return tuple(props["ResourceRecords"]), props.get("TTL", DEFAULT_RECORD_TTL)
        types = [p["Type"] for p, _ in draft.records if p["Name"] == target]
        has = f" (it has {', '.join(types)})" if types else ""
        raise _Invalid(at, f"hosted zone {zone} has no A record at {target}{has}; an alias here points to A records")


@dataclass
class _ZoneDraft:
    """A hosted zone read in pass 2, before its aliases are resolved."""

    spec: _Spec
    domain: str
    vpcs: tuple[str, ...]
    records: list[tuple[dict[str, Any], str]]  # (record set props, its key path)


def _in_domain(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def _route_refusal(
    destination: IPv4Network, kind: str, vpc_cidr: IPv4Network, subnet_cidrs: set[IPv4Network], edge: bool
) -> str | None:
    """Why AWS would refuse this route, or None."""
    middlebox = ("instance", "eni", "vpce") if edge else ("nat", "instance", "eni", "vpce")
    if kind == "local" and destination != vpc_cidr:
        return f"only the VPC CIDR {vpc_cidr} routes to local"
    if edge and kind not in ("local", "instance", "eni", "vpce"):
        return (
            "a table edge-associated with a gateway can only route to local, an instance, a network interface "
            "or a Gateway Load Balancer endpoint"
        )
    if destination == vpc_cidr:
        if kind != "local" and not edge:
            return f"{destination} is the VPC CIDR: its route is the local route, which can only target local"
        return None
    if destination.subnet_of(vpc_cidr):
        if destination not in subnet_cidrs:
            return (
                f"{destination} is more specific than the local route ({vpc_cidr}) "
                "but is not exactly a subnet's CIDR, as AWS requires"
            )
        if kind not in middlebox:
            allowed = "an instance, a network interface or a Gateway Load Balancer endpoint"
            allowed = allowed if edge else f"a NAT gateway, {allowed}"
            return f"a route to subnet CIDR {destination} (more specific than local) must target {allowed}"
        return None
    if edge:
        return f"a table edge-associated with a gateway routes only the VPC CIDR or a subnet's CIDR, not {destination}"
    return None


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
        document = _Document(parse_yaml(text, source))
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
        vpc_endpoint_services=built["vpc_endpoint_services"],
        vpc_endpoints=built["vpc_endpoints"],
        hosted_zones=built["hosted_zones"],
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
