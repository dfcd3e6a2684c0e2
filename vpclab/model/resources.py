"""The resources of a lab, named and spelled the way AWS names them.

A `Lab` is immutable and fully resolved: every reference is checked, and every
ID and address is allocated. Resources refer to each other by their name in the
lab file; IDs (`vpc-…`, `subnet-…`) are what users see and what AWS shows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Literal, Mapping

from .alloc import DEFAULT_INTERNET_CIDR
from .health_check import HealthCheckConfig, lb_type_for_protocol

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "111122223333"

RouteTargetKind = Literal["local", "igw", "nat", "instance", "eni", "vpce", "tgw"]


@dataclass(frozen=True)
class Vpc:
    name: str
    id: str
    cidr: IPv4Network
    account: str
    enable_dns_support: bool = True
    enable_dns_hostnames: bool = False

    @property
    def resolver_ip(self) -> IPv4Address:
        """The Amazon-provided DNS server: primary CIDR base + 2."""
        return self.cidr.network_address + 2


@dataclass(frozen=True)
class Subnet:
    name: str
    id: str
    vpc: str
    az: str  # full AZ name, e.g. us-east-1a
    cidr: IPv4Network

    @property
    def router_ip(self) -> IPv4Address:
        return self.cidr.network_address + 1


@dataclass(frozen=True)
class Route:
    destination: IPv4Network
    target_kind: RouteTargetKind
    target: str  # resource name ("local" for the local route)


@dataclass(frozen=True)
class RouteTable:
    name: str
    id: str
    vpc: str
    routes: tuple[Route, ...]  # includes the implicit local route
    subnets: tuple[str, ...] = ()
    main: bool = False
    edge_associations: tuple[str, ...] = ()  # internet gateway names


@dataclass(frozen=True)
class InternetGateway:
    name: str
    id: str
    vpc: str


@dataclass(frozen=True)
class NatGateway:
    name: str
    id: str
    subnet: str
    eni_id: str
    private_ip: IPv4Address
    allocation_id: str
    public_ip: IPv4Address


@dataclass(frozen=True)
class SgRule:
    """One permission. protocol is "-1" (all), "tcp", "udp", "icmp" or an IP protocol number."""

    protocol: str
    from_port: int | None = None  # for icmp: the type (-1 = all)
    to_port: int | None = None  # for icmp: the code (-1 = all)
    cidr: IPv4Network | None = None
    group: str | None = None  # referenced security group name
    description: str = ""


@dataclass(frozen=True)
class SecurityGroup:
    name: str
    id: str
    vpc: str
    description: str
    ingress: tuple[SgRule, ...]
    egress: tuple[SgRule, ...]


@dataclass(frozen=True)
class NaclEntry:
    rule_number: int
    protocol: str  # "-1", "tcp", "udp", "icmp" or a number
    action: Literal["allow", "deny"]
    egress: bool
    cidr: IPv4Network
    port_from: int | None = None
    port_to: int | None = None
    icmp_type: int | None = None  # -1 = all
    icmp_code: int | None = None


@dataclass(frozen=True)
class NetworkAcl:
    name: str
    id: str
    vpc: str
    entries: tuple[NaclEntry, ...]
    subnets: tuple[str, ...]
    default: bool = False


@dataclass(frozen=True)
class Instance:
    name: str
    id: str
    subnet: str
    eni_id: str
    private_ip: IPv4Address
    public_ip: IPv4Address | None
    security_groups: tuple[str, ...]
    source_dest_check: bool = True
    role: Literal["instance", "appliance"] = "instance"
    run: tuple[str, ...] = ()  # shell commands run inside the instance
    appliance: Mapping[str, object] | None = None  # reference appliance config (role appliance)
    default_services: bool = True  # the test page on :80 and a listener on :22
    hostname: str = ""  # ip-10-0-1-10.ec2.internal
    test_page_message: str | None = None  # TestPageMessage: a first line the test page on :80 shows


@dataclass(frozen=True)
class InternetHost:
    name: str
    ip: IPv4Address
    dns_name: str
    run: tuple[str, ...] = ()
    default_services: bool = True


@dataclass(frozen=True)
class LoadBalancerNode:
    """One node (ENI) of a load balancer in one enabled subnet (AZ)."""

    subnet: str
    az: str
    eni_id: str
    private_ip: IPv4Address
    public_ip: IPv4Address | None = None
    # addresses of the nodes it replaced (`vpclab replace-nodes`): they still serve, out of DNS
    retired_ips: tuple[IPv4Address, ...] = ()
    # an ALB scaled out (`vpclab scale-nodes`): its added nodes' addresses in this AZ, in DNS too
    scaled_ips: tuple[IPv4Address, ...] = ()

    @property
    def ips(self) -> tuple[IPv4Address, ...]:
        """The addresses DNS gives for this AZ (the scaled-out ones after the first)."""
        return (self.private_ip, *self.scaled_ips)


@dataclass(frozen=True)
class LoadBalancer:
    name: str
    arn: str  # arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/gwy/<name>/<16 hex>
    type: Literal["gateway", "network", "application"]
    scheme: Literal["internal", "internet-facing"]
    vpc: str
    nodes: tuple[LoadBalancerNode, ...]
    dns_name: str
    attributes: Mapping[str, str] = field(default_factory=dict)  # AWS keys, all defaults filled in
    security_groups: tuple[str, ...] = ()  # an Application Load Balancer's nodes' ENIs have them

    def node_in(self, az: str) -> LoadBalancerNode | None:
        return next((n for n in self.nodes if n.az == az), None)

    def zonal_dns_name(self, az: str) -> str:
        """AWS's per-AZ name of a Network Load Balancer: `<az>.<dns name>`."""
        return f"{az}.{self.dns_name}"


@dataclass(frozen=True)
class Target:
    id: str  # an instance id (i-...) for target type instance, else the IP
    ip: IPv4Address
    port: int
    az: str
    instance: str | None = None  # the instance's name in the lab file


@dataclass(frozen=True)
class TargetGroup:
    name: str
    arn: str
    protocol: str  # GENEVE (later TCP, UDP, TCP_UDP, HTTP...)
    port: int
    vpc: str
    target_type: Literal["instance", "ip"]
    health_check: Mapping[str, object]  # CloudFormation keys as given; validated at load
    attributes: Mapping[str, str]  # AWS keys, all defaults filled in
    targets: tuple[Target, ...] = ()

    def health_check_config(self) -> HealthCheckConfig:
        """The validated health check settings, AWS's defaults filled in."""
        return HealthCheckConfig.for_target_group(
            lb_type_for_protocol(self.protocol), self.protocol, TargetType=self.target_type, **self.health_check
        )


@dataclass(frozen=True)
class LambdaFunction:
    """A scheduled function the lab runs: AWS's IP-sync function of the static-IP-for-ALB
    pattern (§5.1), keeping `target_group`'s IP targets equal to `load_balancer`'s node IPs."""

    name: str
    arn: str
    handler: str
    environment: Mapping[str, str]  # the function's variables, defaults filled in
    load_balancer: str  # the ALB whose DNS name it resolves
    target_group: str  # the NLB's ip target group it registers in
    port: int  # ALB_LISTENER: the port it registers targets on
    schedule_expression: str = "rate(1 minute)"
    schedule_seconds: int = 60
    enabled: bool = True  # the EventBridge rule's state


@dataclass(frozen=True)
class Listener:
    name: str
    arn: str
    load_balancer: str
    # The default forward action's target group; an ALB's: its first group, or None when its
    # default action redirects or answers itself (`default_action` says all).
    target_group: str | None
    protocol: str | None = None  # none for a GWLB listener
    port: int | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    default_action: RuleAction | None = None  # an Application Load Balancer's listeners only
    certificate: str | None = None  # an HTTPS listener's default certificate (its name in the lab file)


@dataclass(frozen=True)
class Certificate:
    """An ACM certificate: issued by the lab's own CA for `domain_name` and its alternative
    names, or imported from PEM files (absolute paths, checked when the lab was loaded)."""

    name: str
    arn: str  # arn:aws:acm:<region>:<account>:certificate/<uuid>
    domain_name: str | None = None
    subject_alternative_names: tuple[str, ...] = ()
    certificate_file: str | None = None
    private_key_file: str | None = None


@dataclass(frozen=True)
class RuleCondition:
    """One condition of a listener rule (AWS's `Field`); its values are ORed, conditions ANDed.
    query-string values are (key or None, value) pairs; http-header has `header_name`."""

    field: str  # host-header, path-pattern, http-header, http-request-method, query-string, source-ip
    values: tuple[str, ...] | tuple[tuple[str | None, str], ...]
    header_name: str | None = None


@dataclass(frozen=True)
class WeightedTargetGroup:
    target_group: str  # its name in the lab file
    weight: int = 1


@dataclass(frozen=True)
class ForwardAction:
    target_groups: tuple[WeightedTargetGroup, ...]
    stickiness_enabled: bool = False  # target group stickiness (AWSALBTG)
    stickiness_duration_seconds: int | None = None
    type: str = "forward"


@dataclass(frozen=True)
class RedirectAction:
    status_code: int  # 301 or 302
    protocol: str = "#{protocol}"
    host: str = "#{host}"
    port: str = "#{port}"
    path: str = "/#{path}"
    query: str = "#{query}"
    type: str = "redirect"


@dataclass(frozen=True)
class FixedResponseAction:
    status_code: int
    content_type: str = "text/plain"
    message_body: str = ""
    type: str = "fixed-response"


RuleAction = ForwardAction | RedirectAction | FixedResponseAction


@dataclass(frozen=True)
class ListenerRule:
    """A rule of an Application Load Balancer's listener (AWS::ElasticLoadBalancingV2::ListenerRule);
    the listener's default action is its default rule, which is no ListenerRule."""

    name: str
    arn: str
    listener: str
    priority: int  # 1-50000, unique per listener; lowest first
    conditions: tuple[RuleCondition, ...]
    action: RuleAction


@dataclass(frozen=True)
class VpcEndpointService:
    name: str
    id: str  # vpce-svc-<17 hex>
    service_name: str  # com.amazonaws.vpce.<region>.<id>
    type: Literal["GatewayLoadBalancer", "Interface"]
    load_balancers: tuple[str, ...]
    acceptance_required: bool = True
    allowed_principals: tuple[str, ...] = ()  # arn:aws:iam::<account>:root, ... or *
    account: str = DEFAULT_ACCOUNT


@dataclass(frozen=True)
class EndpointEni:
    subnet: str
    az: str
    id: str
    ip: IPv4Address


@dataclass(frozen=True)
class VpcEndpoint:
    name: str
    id: str  # vpce-0<16 hex>: its integer value is GENEVE option 1
    type: Literal["GatewayLoadBalancer", "Interface"]
    vpc: str
    service: str  # the endpoint service's name in the lab file
    enis: tuple[EndpointEni, ...]  # a GWLB endpoint has exactly one; an interface endpoint one per subnet (AZ)
    state: str = "pendingAcceptance"  # pendingAcceptance, available, rejected
    account: str = DEFAULT_ACCOUNT
    security_groups: tuple[str, ...] = ()  # interface endpoints: enforced on every ENI
    # Interface endpoints: the regional name `<id>.<service id>.<region>.vpce.amazonaws.com`
    # first, then one zonal name `<id>-<az>.<service id>...` per ENI, in ENI order.
    dns_entries: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransitGateway:
    name: str
    id: str  # tgw-<17 hex>
    account: str
    amazon_side_asn: int = 64512
    default_route_table_association: bool = True
    default_route_table_propagation: bool = True
    default_route_table: str | None = None  # its name in the lab, when either default is on


@dataclass(frozen=True)
class TransitGatewayAttachmentEni:
    """The network interface a transit gateway places in one attachment subnet (one per AZ)."""

    subnet: str
    az: str
    id: str
    ip: IPv4Address


@dataclass(frozen=True)
class TransitGatewayAttachment:
    name: str
    id: str  # tgw-attach-<17 hex>
    transit_gateway: str
    vpc: str
    enis: tuple[TransitGatewayAttachmentEni, ...]  # one per AZ, in the file's SubnetIds order
    appliance_mode_support: bool = False

    def eni_in(self, az: str) -> TransitGatewayAttachmentEni | None:
        return next((e for e in self.enis if e.az == az), None)


@dataclass(frozen=True)
class TransitGatewayRoute:
    """A static route: to an attachment, or a blackhole (attachment None)."""

    destination: IPv4Network
    attachment: str | None = None


@dataclass(frozen=True)
class TransitGatewayRouteTable:
    name: str
    id: str  # tgw-rtb-<17 hex>
    transit_gateway: str
    associations: tuple[str, ...] = ()  # attachment names; each attachment is associated with one table at most
    propagations: tuple[str, ...] = ()  # attachment names, in the order they were enabled
    routes: tuple[TransitGatewayRoute, ...] = ()  # static ones; the propagated are derived
    default: bool = False


RECORD_TYPES = ("A", "AAAA", "CNAME", "TXT")  # the Route 53 record types a hosted zone may hold


@dataclass(frozen=True)
class RecordSet:
    """One Route 53 record set: every record of one type at one name.

    `name` is absolute without the trailing dot, lowercase (`web.example.local`).
    `values` are as Route 53 shows them: addresses, a name for a CNAME, quoted
    strings for a TXT (`"hello"`; see `txt_text`). For an alias, `alias_target`
    is the DNSName it points to and `values` and `ttl` are already the target's
    A records and TTL, resolved when the lab was loaded.
    """

    name: str
    type: str  # one of RECORD_TYPES
    ttl: int
    values: tuple[str, ...]
    alias_target: str | None = None


@dataclass(frozen=True)
class HostedZone:
    """A Route 53 private hosted zone, associated with one or more VPCs of the lab."""

    name: str
    id: str  # Z and 20 uppercase letters or digits
    domain: str  # example.local: lowercase, no trailing dot
    vpcs: tuple[str, ...]  # associated VPC names; the resolver answers only where both DNS attributes are on
    records: tuple[RecordSet, ...] = ()


def txt_text(value: str) -> str:
    """The text of a Route 53 TXT value: its quoted strings joined (`"a" "b"` -> `ab`),
    with `\\"` and `\\\\` unescaped; an unquoted value is its own text."""
    strings = txt_strings(value)
    return "".join(strings)


def txt_strings(value: str) -> tuple[str, ...]:
    """The character strings of a Route 53 TXT value; ValueError when its quotes are unbalanced."""
    text = value.strip()
    if not text.startswith('"'):
        if '"' in text:
            raise ValueError(f"{value!r} mixes quoted and unquoted text; quote each string, like \"hello\"")
        return (text,)
    strings: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == " ":
            i += 1
            continue
        if text[i] != '"':
            raise ValueError(f"{value!r}: text between quoted strings; quote each string, like \"hello\"")
        i += 1
        out = []
        while i < len(text) and text[i] != '"':
            if text[i] == "\\" and i + 1 < len(text):
                i += 1
            out.append(text[i])
            i += 1
        if i >= len(text):
            raise ValueError(f"{value!r} has an unterminated quoted string")
        strings.append("".join(out))
        i += 1
    return tuple(strings)


@dataclass(frozen=True)
class Lab:
    name: str
    region: str
    account: str
    source: str  # the lab file it came from
    vpcs: Mapping[str, Vpc] = field(default_factory=dict)
    subnets: Mapping[str, Subnet] = field(default_factory=dict)
    route_tables: Mapping[str, RouteTable] = field(default_factory=dict)
    internet_gateways: Mapping[str, InternetGateway] = field(default_factory=dict)
    nat_gateways: Mapping[str, NatGateway] = field(default_factory=dict)
    security_groups: Mapping[str, SecurityGroup] = field(default_factory=dict)
    network_acls: Mapping[str, NetworkAcl] = field(default_factory=dict)
    instances: Mapping[str, Instance] = field(default_factory=dict)
    internet_hosts: Mapping[str, InternetHost] = field(default_factory=dict)
    internet_cidr: IPv4Network = DEFAULT_INTERNET_CIDR  # .1 its router, .2 its resolver
    load_balancers: Mapping[str, LoadBalancer] = field(default_factory=dict)
    target_groups: Mapping[str, TargetGroup] = field(default_factory=dict)
    listeners: Mapping[str, Listener] = field(default_factory=dict)
    listener_rules: Mapping[str, ListenerRule] = field(default_factory=dict)
    certificates: Mapping[str, Certificate] = field(default_factory=dict)
    vpc_endpoint_services: Mapping[str, VpcEndpointService] = field(default_factory=dict)
    vpc_endpoints: Mapping[str, VpcEndpoint] = field(default_factory=dict)
    hosted_zones: Mapping[str, HostedZone] = field(default_factory=dict)
    lambda_functions: Mapping[str, LambdaFunction] = field(default_factory=dict)
    transit_gateways: Mapping[str, TransitGateway] = field(default_factory=dict)
    transit_gateway_attachments: Mapping[str, TransitGatewayAttachment] = field(default_factory=dict)
    transit_gateway_route_tables: Mapping[str, TransitGatewayRouteTable] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # "<key path>: <remark>": valid, but maybe not what was meant
    quotas: Mapping[str, int] = field(default_factory=dict)  # AWS quota name -> the value the lab raised it to

    def hosted_zones_of(self, vpc: str) -> tuple[HostedZone, ...]:
        """The private hosted zones associated with a VPC, in file order (whether or not its
        resolver answers them: that needs both of its DNS attributes)."""
        return tuple(zone for zone in self.hosted_zones.values() if vpc in zone.vpcs)

    def vpc_of_subnet(self, subnet: str) -> Vpc:
        return self.vpcs[self.subnets[subnet].vpc]

    def route_table_of_subnet(self, subnet: str) -> RouteTable:
        """The explicitly associated table, or else the VPC's main table."""
        vpc = self.subnets[subnet].vpc
        for rt in self.route_tables.values():
            if subnet in rt.subnets:
                return rt
        for rt in self.route_tables.values():
            if rt.vpc == vpc and rt.main:
                return rt
        raise KeyError(f"VPC {vpc} has no main route table")

    def listener_of(self, load_balancer: str) -> Listener | None:
        """The listener of a load balancer (a GWLB has exactly one)."""
        return next((li for li in self.listeners.values() if li.load_balancer == load_balancer), None)

    def rules_of(self, listener: str) -> tuple[ListenerRule, ...]:
        """An ALB listener's rules, lowest priority first (its default action is evaluated last)."""
        return tuple(sorted((r for r in self.listener_rules.values() if r.listener == listener),
                            key=lambda r: r.priority))

    def endpoint_service_of(self, load_balancer: str) -> VpcEndpointService | None:
        return next((s for s in self.vpc_endpoint_services.values() if load_balancer in s.load_balancers), None)

    def listeners_of(self, load_balancer: str) -> tuple[Listener, ...]:
        """Every listener of a load balancer, in file order (a GWLB has one, an NLB any number)."""
        return tuple(li for li in self.listeners.values() if li.load_balancer == load_balancer)

    def load_balancer_of_endpoint(self, endpoint: str, az: str | None = None) -> LoadBalancer:
        """The load balancer an endpoint's ENI in `az` (default: its first) sends to: its
        service's first one with a node in that AZ (AWS binds each ENI to one NLB of its AZ)."""
        vpce = self.vpc_endpoints[endpoint]
        az = az or vpce.enis[0].az
        for name in self.vpc_endpoint_services[vpce.service].load_balancers:
            if self.load_balancers[name].node_in(az) is not None:
                return self.load_balancers[name]
        raise KeyError(f"endpoint service {vpce.service} has no load balancer node in {az}")

    def network_acl_of_subnet(self, subnet: str) -> NetworkAcl:
        vpc = self.subnets[subnet].vpc
        for acl in self.network_acls.values():
            if subnet in acl.subnets:
                return acl
        for acl in self.network_acls.values():
            if acl.vpc == vpc and acl.default:
                return acl
        raise KeyError(f"VPC {vpc} has no default network ACL")
