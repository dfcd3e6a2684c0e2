"""Live GWLB and PrivateLink changes: pure, and refused with AWS's error codes."""
from __future__ import annotations

import pytest

from test_model_gwlb import GWLB, edit
from vpclab.model import (
    ChangeError,
    accept_vpc_endpoint_connections,
    deregister_targets,
    load_lab_text,
    modify_attributes,
    modify_listener_attributes,
    modify_load_balancer_attributes,
    modify_target_group_attributes,
    register_targets,
    reject_vpc_endpoint_connections,
)

LAB = load_lab_text(
    edit("  web-1: {SubnetId: web-a}\n", "  web-1: {SubnetId: web-a}\n  appliance-3: {SubnetId: sec-a, Role: appliance}\n"),
    "lab.yaml",
    name="t",
)
IP_LAB = load_lab_text(
    edit("    Targets: [appliance-1, appliance-2]\n", "    TargetType: ip\n    Targets: [10.0.21.4]\n"), "lab.yaml", name="t"
)


def code_of(call, *args) -> str:
    with pytest.raises(ChangeError) as info:
        call(*args)
    return info.value.code


def ids(lab, group="appliances") -> list[str]:
    return [t.instance or t.id for t in lab.target_groups[group].targets]


# -- register / deregister


def test_register_targets_appends_and_leaves_the_old_lab_alone():
    changed = register_targets(LAB, "appliances", ["appliance-3"])
    assert ids(changed) == ["appliance-1", "appliance-2", "appliance-3"]
    assert ids(LAB) == ["appliance-1", "appliance-2"]
    assert changed.target_groups["appliances"].targets[-1].az == "us-east-1a"


def test_register_targets_by_instance_id_and_group_arn():
    group = LAB.target_groups["appliances"]
    changed = register_targets(LAB, group.arn, [LAB.instances["appliance-3"].id])
    assert ids(changed)[-1] == "appliance-3"


def test_registering_a_registered_target_is_a_no_op():
    assert register_targets(LAB, "appliances", ["appliance-1"]) is LAB
    assert ids(register_targets(LAB, "appliances", ["appliance-3", "appliance-3"])).count("appliance-3") == 1


def test_deregister_targets_removes_them():
    assert ids(deregister_targets(LAB, "appliances", ["appliance-1"])) == ["appliance-2"]
    assert ids(deregister_targets(LAB, "appliances", ["appliance-1", "appliance-2"])) == []


def test_deregistering_an_unregistered_target_is_invalid_target():
    assert code_of(deregister_targets, LAB, "appliances", ["appliance-3"]) == "InvalidTarget"


@pytest.mark.parametrize("target", ["web-1", "nope", "10.0.21.4"])
def test_registering_a_target_outside_the_group_is_invalid_target(target):
    assert code_of(register_targets, LAB, "appliances", [target]) == "InvalidTarget"


def test_one_bad_target_refuses_the_whole_call():
    assert code_of(register_targets, LAB, "appliances", ["appliance-3", "web-1"]) == "InvalidTarget"


def test_unknown_target_group_is_target_group_not_found():
    assert code_of(register_targets, LAB, "nope", ["appliance-3"]) == "TargetGroupNotFound"
    assert code_of(deregister_targets, LAB, "nope", ["appliance-1"]) == "TargetGroupNotFound"


def test_ip_targets_register_by_address():
    changed = register_targets(IP_LAB, "appliances", ["10.0.22.30"])
    assert [(t.id, t.az) for t in changed.target_groups["appliances"].targets] == [
        ("10.0.21.4", "us-east-1a"), ("10.0.22.30", "us-east-1b")
    ]  # fmt: skip
    assert code_of(register_targets, IP_LAB, "appliances", ["10.1.11.5"]) == "InvalidTarget"  # another VPC
    assert code_of(register_targets, IP_LAB, "appliances", ["appliance-2"]) == "InvalidTarget"
    assert deregister_targets(IP_LAB, "appliances", ["10.0.21.4"]).target_groups["appliances"].targets == ()


# -- endpoint connections


def test_accepting_a_pending_endpoint_makes_it_available():
    assert LAB.vpc_endpoints["gwlbe-a"].state == "pendingAcceptance"
    changed = accept_vpc_endpoint_connections(LAB, "gwlbe-a")
    assert changed.vpc_endpoints["gwlbe-a"].state == "available"
    assert LAB.vpc_endpoints["gwlbe-a"].state == "pendingAcceptance"


def test_endpoint_may_be_named_by_id():
    endpoint_id = LAB.vpc_endpoints["gwlbe-a"].id
    assert reject_vpc_endpoint_connections(LAB, endpoint_id).vpc_endpoints["gwlbe-a"].state == "rejected"


def test_rejecting_pending_or_available_endpoints():
    assert reject_vpc_endpoint_connections(LAB, "gwlbe-a").vpc_endpoints["gwlbe-a"].state == "rejected"
    available = accept_vpc_endpoint_connections(LAB, "gwlbe-a")
    assert reject_vpc_endpoint_connections(available, "gwlbe-a").vpc_endpoints["gwlbe-a"].state == "rejected"


def test_accepting_a_rejected_endpoint_is_invalid_state():
    rejected = reject_vpc_endpoint_connections(LAB, "gwlbe-a")
    assert code_of(accept_vpc_endpoint_connections, rejected, "gwlbe-a") == "InvalidState"


def test_accepting_an_available_endpoint_again_changes_nothing():
    available = accept_vpc_endpoint_connections(LAB, "gwlbe-a")
    assert accept_vpc_endpoint_connections(available, "gwlbe-a") is available


def test_unknown_endpoint_is_not_found():
    assert code_of(accept_vpc_endpoint_connections, LAB, "vpce-0123") == "InvalidVpcEndpointId.NotFound"
    assert code_of(reject_vpc_endpoint_connections, LAB, "nope") == "InvalidVpcEndpointId.NotFound"


# -- attributes


def test_modify_attributes_of_each_kind_by_name_or_arn():
    lab = modify_attributes(LAB, "gwlb", {"load_balancing.cross_zone.enabled": True})
    assert lab.load_balancers["gwlb"].attributes["load_balancing.cross_zone.enabled"] == "true"
    lab = modify_attributes(lab, LAB.target_groups["appliances"].arn, {"deregistration_delay.timeout_seconds": "0"})
    assert lab.target_groups["appliances"].attributes["deregistration_delay.timeout_seconds"] == "0"
    lab = modify_attributes(lab, "gwlb-listener", {"tcp.idle_timeout.seconds": 60})
    assert lab.listeners["gwlb-listener"].attributes["tcp.idle_timeout.seconds"] == "60"
    assert LAB.listeners["gwlb-listener"].attributes["tcp.idle_timeout.seconds"] == "350"
    lab = modify_attributes(lab, "gwlb-listener", {"send_tcp_reset.on_idle_timeout.enabled": True})
    assert lab.listeners["gwlb-listener"].attributes == {"tcp.idle_timeout.seconds": "60",
                                                          "send_tcp_reset.on_idle_timeout.enabled": "true"}


def test_modify_keeps_the_other_attributes():
    lab = modify_target_group_attributes(LAB, "appliances", {"stickiness.enabled": "true"})
    attributes = lab.target_groups["appliances"].attributes
    assert attributes["stickiness.enabled"] == "true"
    assert attributes["deregistration_delay.timeout_seconds"] == "300"
    assert list(attributes) == list(LAB.target_groups["appliances"].attributes)


@pytest.mark.parametrize(
    ("name", "attributes", "code"),
    [
        ("gwlb", {"load_balancing.cross_zone.enabled": "maybe"}, "ValidationError"),
        ("gwlb", {"idle_timeout.timeout_seconds": "60"}, "ValidationError"),
        ("appliances", {"deregistration_delay.timeout_seconds": 3601}, "ValidationError"),
        ("appliances", {"stickiness.type": "source_ip"}, "ValidationError"),
        ("appliances", {"target_failover.on_unhealthy": "rebalance"}, "InvalidConfigurationRequest"),
        ("gwlb-listener", {"tcp.idle_timeout.seconds": 6001}, "ValidationError"),
        ("gwlb-listener", {"send_tcp_reset.on_idle_timeout.enabled": "yes"}, "ValidationError"),
        ("gwlb", {}, "ValidationError"),
    ],
)
def test_modify_attributes_is_checked_like_the_lab_file(name, attributes, code):
    assert code_of(modify_attributes, LAB, name, attributes) == code


def test_failover_attributes_change_together():
    both = {"target_failover.on_deregistration": "rebalance", "target_failover.on_unhealthy": "rebalance"}
    lab = modify_target_group_attributes(LAB, "appliances", both)
    assert lab.target_groups["appliances"].attributes["target_failover.on_unhealthy"] == "rebalance"
    with pytest.raises(ChangeError) as info:
        modify_target_group_attributes(lab, "appliances", {"target_failover.on_deregistration": "no_rebalance"})
    assert "must be equal" in info.value.message


def test_unknown_attribute_message_suggests_the_key():
    with pytest.raises(ChangeError) as info:
        modify_attributes(LAB, "appliances", {"deregistration_delay.timeout": 5})
    assert "did you mean 'deregistration_delay.timeout_seconds'" in info.value.message


def test_bad_value_message_names_the_key():
    with pytest.raises(ChangeError) as info:
        modify_attributes(LAB, "gwlb-listener", {"tcp.idle_timeout.seconds": 5})
    assert info.value.message == "tcp.idle_timeout.seconds: 5 is outside 60-6000"


def test_unknown_resources_are_not_found_by_kind():
    arn = LAB.load_balancers["gwlb"].arn
    assert code_of(modify_attributes, LAB, arn.replace("/gwlb/", "/other/"), {"x": 1}) == "LoadBalancerNotFound"
    tg_arn = LAB.target_groups["appliances"].arn.replace("appliances", "other")
    assert code_of(modify_attributes, LAB, tg_arn, {"x": 1}) == "TargetGroupNotFound"
    assert code_of(modify_attributes, LAB, "nope", {"x": 1}) == "ValidationError"
    assert code_of(modify_load_balancer_attributes, LAB, "nope", {"x": 1}) == "LoadBalancerNotFound"
    assert code_of(modify_target_group_attributes, LAB, "nope", {"x": 1}) == "TargetGroupNotFound"
    assert code_of(modify_listener_attributes, LAB, "nope", {"x": 1}) == "ListenerNotFound"
