"""Live changes: pure functions from a Lab to a new Lab, refused as AWS refuses them.

Security groups (EC2): authorize/revoke ingress and egress.
Elastic Load Balancing: register/deregister targets, modify attributes; an Application Load
Balancer's rules (create, modify, delete, set priorities) and listener default actions, which
elbv2.rule_changes holds and this module re-exports.
PrivateLink: accept/reject endpoint connections.
Transit gateways: static routes, propagations and appliance mode (transit_gateway holds them).
"""
from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import IPv4Network
from typing import Any, Callable, Iterable, Literal, Mapping

from .ec2 import port_range, same_permission
from .elbv2 import (
    GENEVE_PORT,
    LOAD_BALANCER_ATTRIBUTES,
    AttributeProblem,
    create_rule,  # the rule changes are re-exported: vpclab.model's names come from here
    delete_rule,
    modify_listener,
    modify_rule,
    replace_nodes,  # an ALB's nodes get new IPs (elbv2.nodes)
    resolve_attributes,
    resolve_listener_attributes,
    resolve_target,
    resolve_target_group_attributes,
    scale_nodes,  # an ALB gets more or fewer nodes per AZ (elbv2.nodes)
    set_rule_priorities,
)
from .errors import ChangeError
from .quotas import RULES_PER_SG, quota_value
from .reader import parse_integer, parse_network, parse_protocol
from .transit_gateway import (  # re-exported, as the rule changes are
    create_transit_gateway_route,
    delete_transit_gateway_route,
    disable_transit_gateway_route_table_propagation,
    enable_transit_gateway_route_table_propagation,
    modify_transit_gateway_vpc_attachment,
)
from .resources import Lab, Listener, LoadBalancer, SecurityGroup, SgRule, Target, TargetGroup, VpcEndpoint

Direction = Literal["ingress", "egress"]
PORT_ARG = re.compile(r"(-1|\d+)(?:-(-1|\d+))?")


def sg_rule_from_args(
    protocol: str | int,
    port: str | int | None = None,
    from_port: str | int | None = None,
    to_port: str | int | None = None,
    cidr: str | IPv4Network | None = None,
    source_group: str | None = None,
    description: str = "",
) -> SgRule:
    """A rule from CLI-style arguments (`--protocol tcp --port 80 --cidr 0.0.0.0/0`).

    protocol: tcp, udp, icmp, -1 or all, or a number. port: "80", "1000-2000" or
    "-1" (all); for icmp it is "type" or "type-code". Or give from_port and
    to_port (icmp: type and code). source_group is the peer group, by name or
    ID; for an egress rule it is the destination.
    """
    try:
        name = parse_protocol(protocol)
    except ValueError as e:
        raise ChangeError("InvalidParameterValue", str(e)) from None
    if port is not None and (from_port is not None or to_port is not None):
        raise ChangeError("InvalidParameterCombination", "give a port or from/to ports, not both")
    first, last = _ports(name, port) if port is not None else (_int(from_port), _int(to_port))
    if name in ("tcp", "udp") and (first is None or last is None):
        raise ChangeError("MissingParameter", f"{name} needs a port: 80, or a range like 1000-2000")
    try:
        first, last = port_range(name, first, last)
    except ValueError as e:
        raise ChangeError("InvalidParameterValue", str(e)) from None
    if cidr is not None and source_group is not None:
        raise ChangeError("InvalidParameterCombination", "give a CIDR or a security group, not both")
    if cidr is None and source_group is None:
        raise ChangeError("MissingParameter", "give a CIDR or a security group")
    try:
        network = parse_network(cidr) if cidr is not None else None
    except ValueError as e:
        raise ChangeError("InvalidParameterValue", str(e)) from None
    return SgRule(name, first, last, network, source_group, description)


def _int(value: str | int | None) -> int | None:
    try:
        return None if value is None else parse_integer(value)
    except ValueError as e:
        raise ChangeError("InvalidParameterValue", str(e)) from None


def _ports(protocol: str, port: str | int) -> tuple[int | None, int | None]:
    match = PORT_ARG.fullmatch(str(port).strip())
    if not match:
        raise ChangeError("InvalidParameterValue", f"'{port}' is not a port (80), a range (1000-2000) or -1 (all)")
    first = int(match[1])
    last = int(match[2]) if match[2] is not None else None
    if protocol == "icmp":
        return first, -1 if last is None else last  # type, code
    if first == -1 and last is None:
        return 0, 65535  # AWS CLI: -1 means all ports
    return first, first if last is None else last


def authorize_security_group_ingress(lab: Lab, group_name_or_id: str, rule: SgRule) -> Lab:
    return _change(lab, group_name_or_id, rule, "ingress", add=True)


def revoke_security_group_ingress(lab: Lab, group_name_or_id: str, rule: SgRule) -> Lab:
    return _change(lab, group_name_or_id, rule, "ingress", add=False)


def authorize_security_group_egress(lab: Lab, group_name_or_id: str, rule: SgRule) -> Lab:
    return _change(lab, group_name_or_id, rule, "egress", add=True)


def revoke_security_group_egress(lab: Lab, group_name_or_id: str, rule: SgRule) -> Lab:
    return _change(lab, group_name_or_id, rule, "egress", add=False)


def _change(lab: Lab, group_name_or_id: str, rule: SgRule, direction: Direction, add: bool) -> Lab:
    group = _group(lab, group_name_or_id)
    rule = _resolved(lab, group, rule)
    rules: tuple[SgRule, ...] = getattr(group, direction)
    exists = any(same_permission(rule, r) for r in rules)
    if add and exists:
        raise ChangeError("InvalidPermission.Duplicate", f'the specified rule "{_summary(rule)}" already exists')
    if not add and not exists:
        raise ChangeError("InvalidPermission.NotFound", "The specified rule does not exist in this security group.")
    if add and len(rules) >= quota_value(lab.quotas, RULES_PER_SG):  # per direction, as the quota is
        message = "The maximum number of rules per security group has been reached."
        raise ChangeError("RulesPerSecurityGroupLimitExceeded", message)
    kept = rules + (rule,) if add else tuple(r for r in rules if not same_permission(r, rule))
    changed = replace(group, **{direction: kept})
    return replace(lab, security_groups={**lab.security_groups, group.name: changed})


def _group(lab: Lab, name_or_id: str) -> SecurityGroup:
    for group in lab.security_groups.values():
        if name_or_id in (group.name, group.id):
            return group
    raise ChangeError("InvalidGroup.NotFound", f"The security group '{name_or_id}' does not exist")


def _resolved(lab: Lab, group: SecurityGroup, rule: SgRule) -> SgRule:
    """The rule normalised as the loader would, its peer group named and in the same VPC."""
    rule = sg_rule_from_args(
        rule.protocol,
        from_port=rule.from_port,
        to_port=rule.to_port,
        cidr=rule.cidr,
        source_group=rule.group,
        description=rule.description,
    )
    if rule.group is None:
        return rule
    peer = _group(lab, rule.group)
    if peer.vpc != group.vpc:
        raise ChangeError(
            "InvalidGroup.NotFound", "You have specified two resources that belong to different networks."
        )
    return replace(rule, group=peer.name)


def _summary(rule: SgRule) -> str:
    """As AWS words a rule: `peer: 0.0.0.0/0, TCP, from port: 80, to port: 80, ALLOW`."""
    parts = [f"peer: {rule.cidr if rule.group is None else rule.group}"]
    parts.append("ALL" if rule.protocol == "-1" else rule.protocol.upper())
    if rule.from_port is not None:
        parts += [f"from port: {rule.from_port}", f"to port: {rule.to_port}"]
    return ", ".join(parts + ["ALLOW"])


# -- Elastic Load Balancing: targets

TargetArg = str | Mapping[str, Any]  # `web-1`, `web-1:8080`, `Id=web-1,Port=8080` or {"Id": ..., "Port": ...}
TARGET_SHORTHAND = re.compile(r"Id=([^,\s]+)(?:,Port=([^,\s]+))?")


def register_targets(lab: Lab, target_group: str, targets: Iterable[TargetArg]) -> Lab:
    """RegisterTargets: instance names or IDs, or IPs, as the lab file names them, each
    optionally with a port (`web-1:8080`, AWS CLI's `Id=web-1,Port=8080`, or a mapping
    `{"Id": "web-1", "Port": 8080}`); without one, the group's port.

    All or nothing: one bad target (`InvalidTarget`) refuses the call. A target
    already registered on the same port is left as it is (AWS is idempotent); on
    another port it is refused (one port per target is all vpclab supports yet).
    Unknown group: `TargetGroupNotFound`.
    """
    group = _target_group(lab, target_group)
    registered = list(group.targets)
    for target, _ in _targets(lab, group, targets):
        same = next((t for t in registered if t.id == target.id), None)
        if same is None:
            registered.append(target)
        elif same.port != target.port:
            raise ChangeError(
                "InvalidTarget",
                f"target {target.id} is already registered in target group {group.name} on port {same.port}; "
                "registering one target on several ports is not supported yet",
            )
    return _with_targets(lab, group, tuple(registered))


def deregister_targets(lab: Lab, target_group: str, targets: Iterable[TargetArg]) -> Lab:
    """DeregisterTargets. A target that is not registered (on the port given, if one is) is
    refused (`InvalidTarget`)."""
    group = _target_group(lab, target_group)
    leaving = _targets(lab, group, targets)
    for target, port_given in leaving:
        if all(t.id != target.id or (port_given and t.port != target.port) for t in group.targets):
            on_port = f" on port {target.port}" if port_given else ""
            raise ChangeError(
                "InvalidTarget",
                f"The following targets are not registered in target group {group.name}: {target.id}{on_port}",
            )
    ids = {t.id for t, _ in leaving}
    return _with_targets(lab, group, tuple(t for t in group.targets if t.id not in ids))


def _target_group(lab: Lab, name_or_arn: str) -> TargetGroup:
    for group in lab.target_groups.values():
        if name_or_arn in (group.name, group.arn):
            return group
    raise ChangeError("TargetGroupNotFound", f"Target group '{name_or_arn}' not found")


def _targets(lab: Lab, group: TargetGroup, values: Iterable[TargetArg]) -> list[tuple[Target, bool]]:
    """Each target, and whether its port was given."""
    if isinstance(values, (str, Mapping)):
        values = [values]
    found = []
    for value in values:
        target_id, port, zone = _target_arg(value)
        if port is not None and group.protocol == "GENEVE" and port != GENEVE_PORT:
            raise ChangeError("ValidationError", f"a GENEVE target's port is {GENEVE_PORT}, got {port}")
        try:
            target = resolve_target(
                target_id, group.target_type, group.vpc, group.port if port is None else port, lab.instances,
                lab.subnets, zone, "gateway" if group.protocol == "GENEVE" else None,
            )  # fmt: skip
        except ValueError as e:
            raise ChangeError("InvalidTarget", str(e)) from None
        found.append((target, port is not None))
    if not found:
        raise ChangeError("ValidationError", "give at least one target")
    return found


def _target_arg(value: TargetArg) -> tuple[str, int | None, str | None]:
    """A target's Id, port (None: the group's) and AvailabilityZone (None: its subnet's) from any
    of the forms register_targets takes."""
    zone = None
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - {"Id", "Port", "AvailabilityZone"})
        if unknown or "Id" not in value:
            raise ChangeError("ValidationError", f"a target is {{Id: ..., Port: ...}}, got {dict(value)}")
        target_id, port, zone = value["Id"], value.get("Port"), value.get("AvailabilityZone")
    elif isinstance(value, str):
        target_id, port = value.strip(), None
        match = TARGET_SHORTHAND.fullmatch(target_id)
        if match:
            target_id, port = match[1], match[2]
        elif ":" in target_id:
            target_id, _, port = target_id.rpartition(":")
    else:
        raise ChangeError("ValidationError", f"a target is an Id or {{Id: ..., Port: ...}}, got {value!r}")
    if port is None:
        return str(target_id), None, zone
    try:
        number = parse_integer(port)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise ChangeError("ValidationError", f"a target's port is 1-65535, got '{port}'")
    return str(target_id), number, zone


def _with_targets(lab: Lab, group: TargetGroup, targets: tuple[Target, ...]) -> Lab:
    if targets == group.targets:
        return lab
    return replace(lab, target_groups={**lab.target_groups, group.name: replace(group, targets=targets)})


# -- Elastic Load Balancing: attributes


def modify_attributes(lab: Lab, resource_name_or_arn: str, attributes: Mapping[str, Any]) -> Lab:
    """ModifyLoadBalancerAttributes, ModifyTargetGroupAttributes or ModifyListenerAttributes,
    for the load balancer, target group or listener named (by lab name or ARN).

    Checked as the lab file's attributes are: `ValidationError` for an unknown
    key or a bad value, `InvalidConfigurationRequest` for values that
    contradict each other (target_failover.*). Unknown resource:
    `LoadBalancerNotFound`, `TargetGroupNotFound` or `ListenerNotFound` as its
    ARN says, else `ValidationError`.
    """
    for section in (lab.load_balancers, lab.target_groups, lab.listeners):
        for resource in section.values():
            if resource_name_or_arn in (resource.name, resource.arn):
                if isinstance(resource, LoadBalancer):
                    return modify_load_balancer_attributes(lab, resource.name, attributes)
                if isinstance(resource, TargetGroup):
                    return modify_target_group_attributes(lab, resource.name, attributes)
                return modify_listener_attributes(lab, resource.name, attributes)
    for marker, code in ((":loadbalancer/", "LoadBalancerNotFound"), (":targetgroup/", "TargetGroupNotFound"),
                         (":listener/", "ListenerNotFound")):  # fmt: skip
        if marker in resource_name_or_arn:
            raise ChangeError(code, f"'{resource_name_or_arn}' not found")
    raise ChangeError(
        "ValidationError", f"no load balancer, target group or listener is named '{resource_name_or_arn}'"
    )


def modify_load_balancer_attributes(lab: Lab, load_balancer: str, attributes: Mapping[str, Any]) -> Lab:
    lb = next((b for b in lab.load_balancers.values() if load_balancer in (b.name, b.arn)), None)
    if lb is None:
        raise ChangeError("LoadBalancerNotFound", f"Load balancer '{load_balancer}' not found")
    schema = LOAD_BALANCER_ATTRIBUTES[lb.type]
    changed = _modified(lambda: resolve_attributes(schema, lb.attributes, attributes, "load balancer"), attributes)
    return replace(lab, load_balancers={**lab.load_balancers, lb.name: replace(lb, attributes=changed)})


def modify_target_group_attributes(lab: Lab, target_group: str, attributes: Mapping[str, Any]) -> Lab:
    """Checked against the rules of the group's protocol too (a UDP group keeps the client IP...)."""
    group = _target_group(lab, target_group)
    changed = _modified(
        lambda: resolve_target_group_attributes(group.protocol, group.target_type, group.attributes, attributes),
        attributes,
    )
    return replace(lab, target_groups={**lab.target_groups, group.name: replace(group, attributes=changed)})


def modify_listener_attributes(lab: Lab, listener: str, attributes: Mapping[str, Any]) -> Lab:
    found: Listener | None = next((li for li in lab.listeners.values() if listener in (li.name, li.arn)), None)
    if found is None:
        raise ChangeError("ListenerNotFound", f"Listener '{listener}' not found")
    lb_type = lab.load_balancers[found.load_balancer].type
    changed = _modified(
        lambda: resolve_listener_attributes(lb_type, found.protocol, found.attributes, attributes), attributes
    )
    return replace(lab, listeners={**lab.listeners, found.name: replace(found, attributes=changed)})


def _modified(resolve: Callable[[], dict[str, str]], changes: Mapping[str, Any]) -> dict[str, str]:
    """The attributes `resolve` gives (one of elb's resolvers), its refusal as a ChangeError."""
    if not changes:
        raise ChangeError("ValidationError", "give at least one attribute")
    try:
        return resolve()
    except AttributeProblem as e:
        message = e.reason if e.key is None or e.key in e.reason else f"{e.key}: {e.reason}"
        raise ChangeError(e.code, message) from None


# -- PrivateLink: endpoint connections


def accept_vpc_endpoint_connections(lab: Lab, endpoint: str) -> Lab:
    """AcceptVpcEndpointConnections: pendingAcceptance -> available (an available one stays).

    A rejected endpoint cannot be accepted (`InvalidState`); unknown:
    `InvalidVpcEndpointId.NotFound`.
    """
    found = _endpoint(lab, endpoint)
    if found.state == "rejected":
        raise ChangeError("InvalidState", f"VPC endpoint {found.id} is rejected; it cannot be accepted")
    return _with_state(lab, found, "available")


def reject_vpc_endpoint_connections(lab: Lab, endpoint: str) -> Lab:
    """RejectVpcEndpointConnections: pendingAcceptance or available -> rejected (AWS allows both)."""
    return _with_state(lab, _endpoint(lab, endpoint), "rejected")


def _endpoint(lab: Lab, name_or_id: str) -> VpcEndpoint:
    for endpoint in lab.vpc_endpoints.values():
        if name_or_id in (endpoint.name, endpoint.id):
            return endpoint
    raise ChangeError("InvalidVpcEndpointId.NotFound", f"The VpcEndpoint ID '{name_or_id}' does not exist")


def _with_state(lab: Lab, endpoint: VpcEndpoint, state: str) -> Lab:
    if endpoint.state == state:
        return lab
    return replace(lab, vpc_endpoints={**lab.vpc_endpoints, endpoint.name: replace(endpoint, state=state)})
