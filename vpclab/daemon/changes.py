"""The live changes the change API accepts: a kind and its parameters, applied to the model.

One table serves the CLI, the state store (replaying changes after a crash) and
later capabilities (targets, attributes, endpoint acceptance).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from vpclab.model import changes as model_changes
from vpclab.model.resources import Lab


def _sg_change(fn: Callable) -> Callable[[Lab, dict], Lab]:
    def apply(lab: Lab, p: dict) -> Lab:
        rule = model_changes.sg_rule_from_args(
            protocol=p["protocol"], port=p.get("port"), cidr=p.get("cidr"),
            source_group=p.get("source_group"),
        )
        return fn(lab, p["group"], rule)
    return apply


CHANGES: dict[str, Callable[[Lab, dict], Lab]] = {
    "authorize-security-group-ingress": _sg_change(model_changes.authorize_security_group_ingress),
    "revoke-security-group-ingress": _sg_change(model_changes.revoke_security_group_ingress),
    "authorize-security-group-egress": _sg_change(model_changes.authorize_security_group_egress),
    "revoke-security-group-egress": _sg_change(model_changes.revoke_security_group_egress),
    "register-targets": lambda lab, p: model_changes.register_targets(lab, p["target_group"], p["targets"]),
    "deregister-targets": lambda lab, p: model_changes.deregister_targets(lab, p["target_group"], p["targets"]),
    "accept-vpc-endpoint-connections":
        lambda lab, p: model_changes.accept_vpc_endpoint_connections(lab, p["endpoint"]),
    "reject-vpc-endpoint-connections":
        lambda lab, p: model_changes.reject_vpc_endpoint_connections(lab, p["endpoint"]),
    "replace-nodes": lambda lab, p: model_changes.replace_nodes(lab, p["load_balancer"]),
    "scale-nodes": lambda lab, p: model_changes.scale_nodes(lab, p["load_balancer"], int(p["nodes_per_az"])),
    "modify-attributes": lambda lab, p: model_changes.modify_attributes(lab, p["resource"], p["attributes"]),
    # an Application Load Balancer's rules (CreateRule ... ModifyListener), CloudFormation shapes
    "create-rule": lambda lab, p: model_changes.create_rule(lab, p["listener"], p["priority"], p["conditions"],
                                                            p["actions"], p.get("name")),
    "modify-rule": lambda lab, p: model_changes.modify_rule(lab, p["rule"], p.get("conditions"), p.get("actions")),
    "delete-rule": lambda lab, p: model_changes.delete_rule(lab, p["rule"]),
    "set-rule-priorities": lambda lab, p: model_changes.set_rule_priorities(lab, p["priorities"]),
    "modify-listener": lambda lab, p: model_changes.modify_listener(lab, p["listener"], p["default_actions"]),
    # transit gateways (CreateTransitGatewayRoute ... ModifyTransitGatewayVpcAttachment)
    "create-transit-gateway-route": lambda lab, p: model_changes.create_transit_gateway_route(
        lab, p["route_table"], p["cidr"], p.get("attachment"), bool(p.get("blackhole"))),
    "delete-transit-gateway-route":
        lambda lab, p: model_changes.delete_transit_gateway_route(lab, p["route_table"], p["cidr"]),
    "enable-transit-gateway-route-table-propagation": lambda lab, p:
        model_changes.enable_transit_gateway_route_table_propagation(lab, p["route_table"], p["attachment"]),
    "disable-transit-gateway-route-table-propagation": lambda lab, p:
        model_changes.disable_transit_gateway_route_table_propagation(lab, p["route_table"], p["attachment"]),
    "modify-transit-gateway-vpc-attachment": lambda lab, p:
        model_changes.modify_transit_gateway_vpc_attachment(lab, p["attachment"], p["appliance_mode_support"]),
}


def apply_change(lab: Lab, kind: str, params: dict) -> Lab:
    try:
        change = CHANGES[kind]
    except KeyError:
        raise ValueError(f"unknown change {kind!r}") from None
    return change(lab, params)


def deregistration_delay(group) -> float:
    """How long a deregistered target of `group` drains (deregistration_delay.timeout_seconds)."""
    return float(group.attributes.get("deregistration_delay.timeout_seconds", 300))


@dataclass(frozen=True)
class Draining:
    """A deregistered target still draining: it leaves its group at `ends_at` (epoch seconds)."""

    target_group: str
    target_id: str
    ip: str
    port: int
    ends_at: float


def replay(lab: Lab, changes: Iterable[tuple[int, float, str, dict]]) -> tuple[Lab, list[Draining]]:
    """The lab after its stored changes (seq, when, kind, params), and the targets their
    deregistrations left draining: a restored lab finishes those drains, as the lost daemon would have."""
    draining: dict[tuple[str, str], Draining] = {}
    for _seq, at, kind, params in changes:
        new = apply_change(lab, kind, params)
        for name, group in new.target_groups.items():
            now = {t.id for t in group.targets}
            for t in lab.target_groups[name].targets if name in lab.target_groups else ():
                if t.id not in now:
                    draining[(name, t.id)] = Draining(name, t.id, str(t.ip), t.port, at + deregistration_delay(group))
            for target_id in now:
                draining.pop((name, target_id), None)  # registered again: its drain was cancelled
        lab = new
    return lab, list(draining.values())
