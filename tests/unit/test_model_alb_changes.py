"""Live changes to an Application Load Balancer, as the API makes them: CreateRule, ModifyRule,
DeleteRule, SetRulePriorities, ModifyListener's default actions, attribute changes, and
registering targets in ALB target groups; each refused with AWS's error code."""
from __future__ import annotations

import pytest

from test_model_alb import load
from vpclab.model import (
    ChangeError,
    create_rule,
    delete_rule,
    deregister_targets,
    modify_attributes,
    modify_listener,
    modify_rule,
    register_targets,
    set_rule_priorities,
)
from vpclab.model.elbv2 import rule_arn
from vpclab.model.resources import FixedResponseAction, ForwardAction, WeightedTargetGroup
from vpclab.daemon.status import lab_status
from vpclab.plan.elbv2 import alb_node_config

PATH = [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/v2/*"]}}]
FORWARD_V2 = [{"Type": "forward", "TargetGroupArn": "web-v2"}]


def refused(code: str, change, *args, **kwargs) -> str:
    with pytest.raises(ChangeError) as info:
        change(*args, **kwargs)
    assert info.value.code == code, (info.value.code, info.value.message)
    return info.value.message


# -- CreateRule


def test_created_rule_is_evaluated_by_priority():
    lab = create_rule(load(), "http", 15, PATH, FORWARD_V2)
    assert [r.name for r in lab.rules_of("http")] == ["health", "api", "http-15", "old"]
    rule = lab.listener_rules["http-15"]
    assert rule.action == ForwardAction((WeightedTargetGroup("web-v2", 1),))
    assert rule.arn == rule_arn(lab.region, lab.listeners["http"].arn, "http-15")
    rules = alb_node_config(lab, "web-alb", "us-east-1a")["listeners"][0]["rules"]
    assert [r["priority"] for r in rules] == [5, 10, 15, 20, "default"]


def test_created_rule_may_be_named_and_the_listener_given_by_arn():
    lab = load()
    lab = create_rule(lab, lab.listeners["http"].arn, "16", PATH, FORWARD_V2, name="v2")
    assert lab.listener_rules["v2"].priority == 16


def test_create_rule_at_a_priority_in_use_is_refused():
    message = refused("PriorityInUse", create_rule, load(), "http", 10, PATH, FORWARD_V2)
    assert message == "listener http already has rule api at priority 10"


def test_create_rule_with_two_path_conditions_is_refused_naming_the_key():
    conditions = PATH + [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/x"]}}]
    message = refused("ValidationError", create_rule, load(), "http", 15, conditions, FORWARD_V2)
    assert message.startswith("Conditions[1].Field: a rule has at most one path-pattern condition")


def test_create_rule_forwarding_to_an_unknown_group_is_refused():
    actions = [{"Type": "forward", "TargetGroupArn": "nope"}]
    message = refused("TargetGroupNotFound", create_rule, load(), "http", 15, PATH, actions)
    assert message == "Actions[0].TargetGroupArn: target group 'nope' not found"


def test_create_rule_with_a_weight_over_999_is_refused():
    actions = [{"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": "web", "Weight": 1000}]}}]
    message = refused("ValidationError", create_rule, load(), "http", 15, PATH, actions)
    assert message == "Actions[0].ForwardConfig.TargetGroups[0].Weight: 1000 is outside 0-999"


def test_create_rule_on_an_unknown_listener_or_a_taken_name_is_refused():
    refused("ListenerNotFound", create_rule, load(), "nope", 15, PATH, FORWARD_V2)
    assert "is taken" in refused("ValidationError", create_rule, load(), "http", 15, PATH, FORWARD_V2, name="web")


# -- ModifyRule, ModifyListener


def test_modify_rule_changes_its_actions_and_keeps_its_conditions():
    fixed = [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503", "MessageBody": "down"}}]
    lab = modify_rule(load(), "api", actions=fixed)
    rule = lab.listener_rules["api"]
    assert rule.action == FixedResponseAction(503, "text/plain", "down")
    assert rule.conditions == load().listener_rules["api"].conditions


def test_modify_rule_changes_its_conditions_by_arn():
    lab = load()
    lab = modify_rule(lab, lab.listener_rules["old"].arn, conditions=PATH)
    assert lab.listener_rules["old"].conditions[0].values == ("/v2/*",)


def test_modify_default_rule_changes_the_listeners_default_action_only():
    lab = load()
    default = rule_arn(lab.region, lab.listeners["http"].arn, "default")
    lab = modify_rule(lab, default, actions=FORWARD_V2)
    assert lab.listeners["http"].target_group == "web-v2"
    message = refused("OperationNotPermitted", modify_rule, lab, default, conditions=PATH)
    assert message == "a listener's default rule has no conditions"


def test_modify_listener_default_action_to_a_redirect():
    redirect = [{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}]
    lab = modify_listener(load(), "http", redirect)
    assert lab.listeners["http"].target_group is None
    default = alb_node_config(lab, "web-alb", "us-east-1a")["listeners"][0]["rules"][-1]
    assert default["action"]["type"] == "redirect" and default["action"]["status_code"] == 301


def test_https_listener_cannot_be_changed_to_redirect_to_http():
    redirect = [{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTP", "StatusCode": "HTTP_302"}}]
    message = refused("ValidationError", modify_listener, load(), "https", redirect)
    assert message == "DefaultActions[0].RedirectConfig.Protocol: an HTTPS listener cannot redirect to HTTP"


def test_modify_unknown_rule_is_refused():
    refused("RuleNotFound", modify_rule, load(), "nope", actions=FORWARD_V2)


# -- DeleteRule, SetRulePriorities


def test_deleted_rule_no_longer_matches():
    lab = delete_rule(load(), "api")
    assert [r.name for r in lab.rules_of("http")] == ["health", "old"]
    refused("RuleNotFound", delete_rule, lab, "api")


def test_default_rule_cannot_be_deleted():
    lab = load()
    refused("OperationNotPermitted", delete_rule, lab, rule_arn(lab.region, lab.listeners["http"].arn, "default"))


def test_set_rule_priorities_may_swap_two_rules():
    lab = set_rule_priorities(load(), {"api": 20, "old": 10})
    assert [(r.name, r.priority) for r in lab.rules_of("http")] == [("health", 5), ("old", 10), ("api", 20)]


def test_set_rule_priorities_onto_a_taken_priority_is_refused():
    message = refused("PriorityInUse", set_rule_priorities, load(), {"api": 20})
    assert "would both have priority 20" in message
    refused("ValidationError", set_rule_priorities, load(), {"api": 50001})


# -- attributes and targets


def test_alb_attributes_change_live_and_reach_the_node_config():
    lab = modify_attributes(load(), "web-alb", {"idle_timeout.timeout_seconds": "120"})
    assert alb_node_config(lab, "web-alb", "us-east-1a")["attributes"]["idle_timeout.timeout_seconds"] == "120"
    message = refused("ValidationError", modify_attributes, lab, "web-alb", {"idle_timeout.timeout_seconds": 4001})
    assert message == "idle_timeout.timeout_seconds: 4001 is outside 1-4000"


def test_alb_target_group_attributes_change_live_and_are_checked_together():
    lab = modify_attributes(load(), "web", {"stickiness.enabled": "true", "stickiness.lb_cookie.duration_seconds": 60})
    attributes = alb_node_config(lab, "web-alb", "us-east-1a")["target_groups"]["web"]["attributes"]
    assert (attributes["stickiness.enabled"], attributes["stickiness.lb_cookie.duration_seconds"]) == ("true", "60")
    message = refused("InvalidConfigurationRequest", modify_attributes, lab, "web",
                      {"load_balancing.algorithm.type": "least_outstanding_requests",
                       "slow_start.duration_seconds": 60})
    assert "works with round_robin only" in message


def test_targets_register_and_deregister_in_an_alb_group():
    lab = register_targets(load(), "web-v2", ["web-1:8080"])
    targets = alb_node_config(lab, "web-alb", "us-east-1a")["target_groups"]["web-v2"]["targets"]
    assert [(t["ip"], t["port"]) for t in targets] == [(str(lab.instances["web-2"].private_ip), 80),
                                                       (str(lab.instances["web-1"].private_ip), 8080)]
    lab = deregister_targets(lab, "web-v2", ["web-2"])
    assert [t.instance for t in lab.target_groups["web-v2"].targets] == ["web-1"]


def test_a_group_no_listener_forwards_to_any_more_shows_its_targets_unused_not_in_use():
    fixed = [{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503", "ContentType": "text/plain"}}]
    lab = modify_listener(modify_listener(load(), "http", fixed), "https", fixed)
    groups = {g["name"]: g for g in lab_status(lab)["target_groups"]}
    assert groups["web"]["targets"] and {(t["state"], t["reason"]) for t in groups["web"]["targets"]} == \
        {("unused", "Target.NotInUse")}
    # a group a rule still forwards to: its targets wait for their first check
    assert {t["state"] for t in groups["api-v1"]["targets"]} == {"initial"}
