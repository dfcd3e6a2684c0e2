"""Live changes to an Application Load Balancer's rules: CreateRule, ModifyRule, DeleteRule,
SetRulePriorities and ModifyListener's DefaultActions, pure from a Lab to a new Lab, refused as
AWS refuses them (ChangeError with AWS's code).

Conditions and actions are given in their CloudFormation (and API) shape, the lab file's:
`[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*"]}}]`,
`[{"Type": "forward", "TargetGroupArn": "web"}]`; rules.py reads them, and a refusal names the
request's key (`Actions[0].ForwardConfig.TargetGroups[1].Weight`). A rule is named by its name
or ARN; a listener's default rule by its ARN (`listener-rule/.../<hex of "default">`, as
`vpclab status` shows it), whose actions only may change.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping, TypeVar

from ..errors import ChangeError
from ..reader import RESOURCE_NAME, _Invalid
from ..resources import Lab, Listener, ListenerRule, LoadBalancer, RuleAction, RuleCondition
from .application import application_group_problem, group_user
from .protocols import rule_arn
from .rules import Resolve, forwarded_groups, read_actions, read_conditions, read_priority

T = TypeVar("T")


def create_rule(lab: Lab, listener: str, priority: Any, conditions: Any, actions: Any, name: str | None = None) -> Lab:
    """CreateRule on an ALB listener. `name` (a lab resource name) defaults to `<listener>-<priority>`.

    PriorityInUse when the listener has a rule at that priority; ListenerNotFound, TargetGroupNotFound;
    ValidationError for conditions and actions outside AWS's limits."""
    li, lb = _alb_listener(lab, listener)
    number = _checked(lambda: read_priority(priority, "Priority"))
    _priority_free(lab, li, number)
    name = f"{li.name}-{number}" if name is None else name
    if not isinstance(name, str) or not RESOURCE_NAME.fullmatch(name) or _name_taken(lab, name):
        raise ChangeError("ValidationError", f"rule name {name!r} is taken or is not 1-63 letters, digits, '_', '.' "
                          "or '-'")
    rule = ListenerRule(name, rule_arn(lab.region, li.arn, name), li.name, number,
                        _conditions(conditions), _action(lab, lb, li, actions))
    return replace(lab, listener_rules={**lab.listener_rules, name: rule})


def modify_rule(lab: Lab, rule: str, conditions: Any = None, actions: Any = None) -> Lab:
    """ModifyRule: its conditions, its actions or both (None: unchanged). On a listener's
    default rule only the actions (OperationNotPermitted otherwise)."""
    if conditions is None and actions is None:
        raise ChangeError("ValidationError", "give Conditions, Actions or both")
    default = _default_rule_listener(lab, rule)
    if default is not None:
        if conditions is not None:
            raise ChangeError("OperationNotPermitted", "a listener's default rule has no conditions")
        return modify_listener(lab, default.name, actions)
    found = _rule(lab, rule)
    li, lb = _alb_listener(lab, found.listener)
    changed = replace(found, conditions=found.conditions if conditions is None else _conditions(conditions),
                      action=found.action if actions is None else _action(lab, lb, li, actions))
    return replace(lab, listener_rules={**lab.listener_rules, found.name: changed})


def modify_listener(lab: Lab, listener: str, default_actions: Any) -> Lab:
    """ModifyListener's DefaultActions on an ALB listener."""
    li, lb = _alb_listener(lab, listener)
    action = _action(lab, lb, li, default_actions, "DefaultActions")
    groups = forwarded_groups(action)
    changed = replace(li, default_action=action, target_group=groups[0] if groups else None)
    return replace(lab, listeners={**lab.listeners, li.name: changed})


def delete_rule(lab: Lab, rule: str) -> Lab:
    """DeleteRule; a listener's default rule cannot be deleted (OperationNotPermitted)."""
    if _default_rule_listener(lab, rule) is not None:
        raise ChangeError("OperationNotPermitted", "a listener's default rule cannot be deleted")
    found = _rule(lab, rule)
    return replace(lab, listener_rules={k: v for k, v in lab.listener_rules.items() if k != found.name})


def set_rule_priorities(lab: Lab, priorities: Mapping[str, Any]) -> Lab:
    """SetRulePriorities: every rule given moves at once (so two may swap); PriorityInUse
    if two rules of a listener would share one."""
    if not priorities:
        raise ChangeError("ValidationError", "give at least one rule and its priority")
    moved: dict[str, ListenerRule] = {}
    for given, priority in priorities.items():
        if _default_rule_listener(lab, given) is not None:
            raise ChangeError("OperationNotPermitted", "a listener's default rule has no priority to set")
        found = _rule(lab, given)
        moved[found.name] = replace(found, priority=_checked(lambda: read_priority(priority, f"Priority of {given}")))
    rules = {**lab.listener_rules, **moved}
    seen: dict[tuple[str, int], str] = {}
    for rule in rules.values():
        other = seen.setdefault((rule.listener, rule.priority), rule.name)
        if other != rule.name:
            raise ChangeError("PriorityInUse", f"rules {other} and {rule.name} of listener {rule.listener} would "
                              f"both have priority {rule.priority}")
    return replace(lab, listener_rules=rules)


# -- helpers


def _checked(read: Callable[[], T]) -> T:
    """What `read` gives; its refusal (rules.py's) as a ValidationError naming the request's key."""
    try:
        return read()
    except _Invalid as e:
        raise ChangeError("ValidationError", f"{e.path}: {e.reason}" if e.path else e.reason) from None


def _conditions(value: Any) -> tuple[RuleCondition, ...]:
    return _checked(lambda: read_conditions(value, "Conditions"))


def _action(lab: Lab, lb: LoadBalancer, li: Listener, value: Any, key: str = "Actions") -> RuleAction:
    return _checked(lambda: read_actions(value, key, li.protocol or "HTTP", _group_resolver(lab, lb)))


def _group_resolver(lab: Lab, lb: LoadBalancer) -> Resolve:
    def resolve(value: str, path: str) -> str:
        group = next((g for g in lab.target_groups.values() if value in (g.name, g.arn)), None)
        if group is None:
            raise ChangeError("TargetGroupNotFound", f"{path}: target group '{value}' not found")
        problem = application_group_problem(group, lb, group_user(lab.listeners, lab.listener_rules, group.name))
        if problem:
            raise ChangeError("InvalidConfigurationRequest", f"{path}: {problem}")
        return group.name

    return resolve


def _alb_listener(lab: Lab, name_or_arn: str) -> tuple[Listener, LoadBalancer]:
    li = next((li for li in lab.listeners.values() if name_or_arn in (li.name, li.arn)), None)
    if li is None:
        raise ChangeError("ListenerNotFound", f"Listener '{name_or_arn}' not found")
    lb = lab.load_balancers[li.load_balancer]
    if lb.type != "application":
        raise ChangeError("OperationNotPermitted", f"listener {li.name} belongs to a {lb.type} load balancer; only "
                          "an Application Load Balancer's listeners have rules")
    return li, lb


def _rule(lab: Lab, name_or_arn: str) -> ListenerRule:
    found = next((r for r in lab.listener_rules.values() if name_or_arn in (r.name, r.arn)), None)
    if found is None:
        raise ChangeError("RuleNotFound", f"Rule '{name_or_arn}' not found")
    return found


def _default_rule_listener(lab: Lab, name_or_arn: str) -> Listener | None:
    """The listener whose default rule `name_or_arn` is (its ARN), or None."""
    return next((li for li in lab.listeners.values()
                 if lab.load_balancers[li.load_balancer].type == "application"
                 and name_or_arn == rule_arn(lab.region, li.arn, "default")), None)


def _priority_free(lab: Lab, li: Listener, priority: int) -> None:
    other = next((r for r in lab.rules_of(li.name) if r.priority == priority), None)
    if other is not None:
        raise ChangeError("PriorityInUse", f"listener {li.name} already has rule {other.name} at priority {priority}")


def _name_taken(lab: Lab, name: str) -> bool:
    sections = (lab.vpcs, lab.subnets, lab.route_tables, lab.internet_gateways, lab.nat_gateways,
                lab.security_groups, lab.network_acls, lab.instances, lab.internet_hosts, lab.load_balancers,
                lab.target_groups, lab.listeners, lab.listener_rules, lab.certificates, lab.vpc_endpoint_services,
                lab.vpc_endpoints, lab.hosted_zones)
    return any(name in section for section in sections)
