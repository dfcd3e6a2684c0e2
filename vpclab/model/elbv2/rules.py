"""An Application Load Balancer's rules: conditions and actions, read from their CloudFormation
shape and held to AWS's limits (reference §4.1).

Pure, and shared by the loader (key paths in the lab file) and live changes (CreateRule,
ModifyRule, whose key paths are the request's). Everything raises reader._Invalid(path, reason);
a target group is named through `resolve(value, path) -> name`, which the caller checks.
"""
from __future__ import annotations

import re
from ipaddress import IPv4Network
from typing import Any, Callable

from ..reader import TEXT, _describe, _did_you_mean, _fields, _Invalid, _join, _show, parse_integer, parse_network
from ..resources import (
    FixedResponseAction,
    ForwardAction,
    RedirectAction,
    RuleAction,
    RuleCondition,
    WeightedTargetGroup,
)

Resolve = Callable[[str, str], str]  # (the value naming a target group, its key path) -> the group's name

MIN_PRIORITY, MAX_PRIORITY = 1, 50000
MAX_VALUES_PER_CONDITION = 3
MAX_EVALUATIONS_PER_RULE = 5  # each value of each condition is one
MAX_WILDCARDS_PER_RULE = 5  # each unescaped * or ?
MAX_FORWARD_GROUPS = 5
MAX_WEIGHT = 999
MAX_GROUP_STICKINESS = 604800
MAX_MESSAGE_BODY = 1024
MAX_VALUE = 128  # host, path, header and query-string values, redirect parts
CONTENT_TYPES = ("text/plain", "text/css", "text/html", "application/javascript", "application/json")
REDIRECT_CODES = {"HTTP_301": 301, "HTTP_302": 302}

CONFIG_KEYS = {  # Field -> its ...Config key
    "host-header": "HostHeaderConfig",
    "path-pattern": "PathPatternConfig",
    "http-header": "HttpHeaderConfig",
    "http-request-method": "HttpRequestMethodConfig",
    "query-string": "QueryStringConfig",
    "source-ip": "SourceIpConfig",
}
ONCE_PER_RULE = ("host-header", "http-request-method", "path-pattern", "source-ip")
TERMINAL_ACTIONS = ("forward", "redirect", "fixed-response")
NOT_YET_ACTIONS = ("authenticate-oidc", "authenticate-cognito", "jwt-validation")

_HOST = re.compile(r"[A-Za-z0-9.*?-]+")
_PATH = re.compile(r"""[A-Za-z0-9_\-.$/~"'@:+&*?]+""")
_METHOD = re.compile(r"[A-Z_-]+")
_HEADER_NAME = re.compile(r"[!#$%&'+\-.^_`|~0-9A-Za-z]+")  # an HTTP token, without the wildcards
_WILDCARD = re.compile(r"(?<!\\)[*?]")


def _raw(value: Any, path: str) -> Any:
    """Pass 1 leaves rules and actions to this module (pass 2 knows the listener)."""
    return value


def _list(value: Any, path: str, what: str) -> list:
    if not isinstance(value, list) or not value:
        raise _Invalid(path, f"expected a list of {what}, got {_describe(value)}")
    return value


def _bounded_text(value: Any, path: str, pattern: re.Pattern | None, allowed: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # YAML reads `Values: [1]` as a number
    if not isinstance(value, str) or not value:
        raise _Invalid(path, f"expected a non-empty string, got {_describe(value)}")
    if len(value) > MAX_VALUE:
        raise _Invalid(path, f"{len(value)} characters; a value is at most {MAX_VALUE}")
    if pattern is not None and not pattern.fullmatch(value):
        raise _Invalid(path, f"'{value[:MAX_VALUE]}' may hold only {allowed}")
    return value


# -- Conditions --


def read_conditions(value: Any, path: str) -> tuple[RuleCondition, ...]:
    """A rule's conditions, each checked, then the rule's limits: at most one each of
    host-header, http-request-method, path-pattern and source-ip, at most 5 values in all
    and at most 5 wildcards."""
    conditions: list[RuleCondition] = []
    seen: dict[str, int] = {}
    evaluations = wildcards = 0
    for i, item in enumerate(_list(value, path, "conditions ({Field: path-pattern, PathPatternConfig: ...})")):
        at = f"{path}[{i}]"
        condition = _condition(item, at)
        if condition.field in ONCE_PER_RULE and condition.field in seen:
            raise _Invalid(f"{at}.Field", f"a rule has at most one {condition.field} condition, and "
                           f"{path}[{seen[condition.field]}] is one already; list several values in one condition")
        seen.setdefault(condition.field, i)
        evaluations += len(condition.values)
        if evaluations > MAX_EVALUATIONS_PER_RULE:
            raise _Invalid(at, f"a rule has at most {MAX_EVALUATIONS_PER_RULE} match evaluations (one per value "
                           f"of each condition), and this condition brings it to {evaluations}")
        wildcards += _wildcards(condition)
        if wildcards > MAX_WILDCARDS_PER_RULE:
            raise _Invalid(at, f"a rule has at most {MAX_WILDCARDS_PER_RULE} wildcards (* or ?), and this condition "
                           f"brings it to {wildcards}")
        conditions.append(condition)
    return tuple(conditions)


def _wildcards(condition: RuleCondition) -> int:
    if condition.field in ("http-request-method", "source-ip"):
        return 0
    texts = [t for v in condition.values for t in (v if isinstance(v, tuple) else (v,)) if t]
    return sum(len(_WILDCARD.findall(t)) for t in texts)


def _condition(item: Any, at: str) -> RuleCondition:
    keys = {"Field": TEXT, "Values": _raw, **{key: _raw for key in CONFIG_KEYS.values()}}
    props = _fields(item, at, keys, ("Field",))
    field = props["Field"].lower()
    if field not in CONFIG_KEYS:
        raise _Invalid(f"{at}.Field", f"unknown condition field '{props['Field']}'"
                       f"{_did_you_mean(field, CONFIG_KEYS)}; expected one of {', '.join(CONFIG_KEYS)}")
    config_key = CONFIG_KEYS[field]
    for key in CONFIG_KEYS.values():
        if key in props and key != config_key:
            raise _Invalid(_join(at, key), f"a {field} condition takes {config_key}, not {key}")
    if "Values" in props:  # CloudFormation's older form, for host-header and path-pattern only
        if field not in ("host-header", "path-pattern"):
            raise _Invalid(f"{at}.Values", f"a {field} condition gives its values in {config_key}")
        if config_key in props:
            raise _Invalid(f"{at}.Values", f"give Values or {config_key}, not both")
        return _values_condition(field, props["Values"], f"{at}.Values")
    if config_key not in props:
        raise _Invalid(_join(at, config_key), "required key is missing")
    config_at = _join(at, config_key)
    if field == "http-header":
        config = _fields(props[config_key], config_at, {"HttpHeaderName": TEXT, "Values": _raw},
                         ("HttpHeaderName", "Values"))
        name = config["HttpHeaderName"]
        if len(name) > 40 or not _HEADER_NAME.fullmatch(name):
            raise _Invalid(f"{config_at}.HttpHeaderName", f"'{name[:40]}' is not a header name (up to 40 letters, "
                           "digits or !#$%&'+-.^_`|~; no wildcards)")
        values = _values(config["Values"], f"{config_at}.Values", None, "")
        return RuleCondition(field, values, name)
    config = _fields(props[config_key], config_at, {"Values": _raw}, ("Values",))
    return _values_condition(field, config["Values"], f"{config_at}.Values")


def _values_condition(field: str, value: Any, path: str) -> RuleCondition:
    if field == "host-header":
        return RuleCondition(field, _values(value, path, _HOST, "letters, digits, '-', '.', '*' and '?'"))
    if field == "path-pattern":
        return RuleCondition(field, _values(value, path, _PATH, "letters, digits and _-.$/~\"'@:+&*?"))
    if field == "http-request-method":
        return RuleCondition(field, _values(value, path, _METHOD, "uppercase letters, '-' and '_' (methods are "
                                            "case sensitive: GET, not get)"))
    if field == "source-ip":
        return RuleCondition(field, tuple(str(_cidr(v, f"{path}[{i}]")) for i, v in enumerate(_counted(value, path))))
    return RuleCondition(field, tuple(_query_pair(v, f"{path}[{i}]") for i, v in enumerate(_counted(value, path))))


def _counted(value: Any, path: str) -> list:
    values = _list(value, path, "values")
    if len(values) > MAX_VALUES_PER_CONDITION:
        raise _Invalid(path, f"a condition has at most {MAX_VALUES_PER_CONDITION} values, got {len(values)}")
    return values


def _values(value: Any, path: str, pattern: re.Pattern | None, allowed: str) -> tuple[str, ...]:
    return tuple(_bounded_text(v, f"{path}[{i}]", pattern, allowed) for i, v in enumerate(_counted(value, path)))


def _cidr(value: Any, path: str) -> IPv4Network:
    try:
        return parse_network(value)
    except ValueError as e:
        reason = "IPv6 source addresses are not supported yet" if ":" in str(value) else str(e)
        raise _Invalid(path, reason) from None


def _query_pair(value: Any, path: str) -> tuple[str | None, str]:
    props = _fields(value, path, {"Key": _raw, "Value": _raw}, ("Value",))
    key = _bounded_text(props["Key"], f"{path}.Key", None, "") if "Key" in props else None
    return key, _bounded_text(props["Value"], f"{path}.Value", None, "")


# -- Actions --


def read_actions(value: Any, path: str, listener_protocol: str, resolve: Resolve) -> RuleAction:
    """A rule's (or a listener's default) actions: exactly one of forward, redirect and
    fixed-response, last by Order; vpclab runs no authenticate actions yet, so it is the only one."""
    items = _list(value, path, "actions ({Type: forward, TargetGroupArn: ...})")
    read = []
    for i, item in enumerate(items):
        at = f"{path}[{i}]"
        keys = {"Type": TEXT, "Order": _raw, "TargetGroupArn": _raw, "ForwardConfig": _raw,
                "RedirectConfig": _raw, "FixedResponseConfig": _raw}
        props = _fields(item, at, keys, ("Type",))
        kind = props["Type"].lower()
        if kind in NOT_YET_ACTIONS:
            raise _Invalid(f"{at}.Type", f"{kind} actions are not supported yet")
        if kind not in TERMINAL_ACTIONS:
            raise _Invalid(f"{at}.Type", f"unknown action type '{props['Type']}'{_did_you_mean(kind, TERMINAL_ACTIONS)}; "
                           f"expected one of {', '.join(TERMINAL_ACTIONS)}")
        order = _order(props["Order"], f"{at}.Order") if "Order" in props else None
        read.append((order if order is not None else i + 1, i, at, kind, props))
    read.sort(key=lambda entry: entry[:2])
    terminal = [entry for entry in read if entry[3] in TERMINAL_ACTIONS]
    if len(terminal) > 1:
        raise _Invalid(f"{terminal[1][2]}.Type", f"a rule has exactly one forward, redirect or fixed-response "
                       f"action, and {terminal[0][2]} is one already")
    if read[-1] is not terminal[0]:
        raise _Invalid(f"{terminal[0][2]}.Order", f"the {terminal[0][3]} action must come last (highest Order)")
    _, _, at, kind, props = terminal[0]
    others = [k for k in ("TargetGroupArn", "ForwardConfig", "RedirectConfig", "FixedResponseConfig")
              if k in props and k not in _KEYS_OF[kind]]
    if others:
        raise _Invalid(_join(at, others[0]), f"a {kind} action takes {' or '.join(_KEYS_OF[kind])}, not {others[0]}")
    if kind == "forward":
        return _forward(props, at, resolve)
    if kind == "redirect":
        return _redirect(props, at, listener_protocol)
    return _fixed_response(props, at)


_KEYS_OF = {"forward": ("TargetGroupArn", "ForwardConfig"), "redirect": ("RedirectConfig",),
            "fixed-response": ("FixedResponseConfig",)}


def _order(value: Any, path: str) -> int:
    return _number(value, path, 1, MAX_PRIORITY)


def _number(value: Any, path: str, low: int, high: int) -> int:
    try:
        number = parse_integer(value)
    except ValueError as e:
        raise _Invalid(path, str(e)) from None
    if not low <= number <= high:
        raise _Invalid(path, f"{number} is outside {low}-{high}")
    return number


def read_priority(value: Any, path: str) -> int:
    return _number(value, path, MIN_PRIORITY, MAX_PRIORITY)


def _forward(props: dict[str, Any], at: str, resolve: Resolve) -> ForwardAction:
    if "ForwardConfig" not in props:
        if "TargetGroupArn" not in props:
            raise _Invalid(f"{at}.TargetGroupArn", "required key is missing: a forward action names TargetGroupArn "
                           "or ForwardConfig")
        return ForwardAction((WeightedTargetGroup(resolve(_ref(props["TargetGroupArn"], f"{at}.TargetGroupArn"),
                                                          f"{at}.TargetGroupArn")),))
    config_at = f"{at}.ForwardConfig"
    config = _fields(props["ForwardConfig"], config_at, {"TargetGroups": _raw, "TargetGroupStickinessConfig": _raw},
                     ("TargetGroups",))
    groups_at = f"{config_at}.TargetGroups"
    items = _list(config["TargetGroups"], groups_at, "target groups ({TargetGroupArn: ..., Weight: ...})")
    if len(items) > MAX_FORWARD_GROUPS:
        raise _Invalid(groups_at, f"a forward action has at most {MAX_FORWARD_GROUPS} target groups, got {len(items)}")
    groups: list[WeightedTargetGroup] = []
    for i, item in enumerate(items):
        item_at = f"{groups_at}[{i}]"
        group = _fields(item, item_at, {"TargetGroupArn": _raw, "Weight": _raw}, ("TargetGroupArn",))
        name = resolve(_ref(group["TargetGroupArn"], f"{item_at}.TargetGroupArn"), f"{item_at}.TargetGroupArn")
        if any(g.target_group == name for g in groups):
            raise _Invalid(f"{item_at}.TargetGroupArn", f"target group {name} is listed twice")
        weight = _number(group["Weight"], f"{item_at}.Weight", 0, MAX_WEIGHT) if "Weight" in group else 1
        groups.append(WeightedTargetGroup(name, weight))
    if "TargetGroupArn" in props:  # AWS takes both only when they name the same one group
        name = resolve(_ref(props["TargetGroupArn"], f"{at}.TargetGroupArn"), f"{at}.TargetGroupArn")
        if [g.target_group for g in groups] != [name]:
            raise _Invalid(f"{at}.TargetGroupArn", "give TargetGroupArn or ForwardConfig, not both (unless "
                           "ForwardConfig names only that group)")
    enabled, duration = False, None
    if "TargetGroupStickinessConfig" in config:
        sticky_at = f"{config_at}.TargetGroupStickinessConfig"
        sticky = _fields(config["TargetGroupStickinessConfig"], sticky_at, {"Enabled": _raw, "DurationSeconds": _raw})
        enabled = _flag(sticky.get("Enabled", False), f"{sticky_at}.Enabled")
        if "DurationSeconds" in sticky:
            duration = _number(sticky["DurationSeconds"], f"{sticky_at}.DurationSeconds", 1, MAX_GROUP_STICKINESS)
        elif enabled:
            raise _Invalid(f"{sticky_at}.DurationSeconds", "required key is missing: group stickiness lasts "
                           f"1-{MAX_GROUP_STICKINESS} seconds")
    return ForwardAction(tuple(groups), enabled, duration)


def _ref(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(path, f"expected a target group's name or ARN, got {_describe(value)}")
    return value


def _flag(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _Invalid(path, f"expected true or false, got {_describe(value)}")


def _redirect(props: dict[str, Any], at: str, listener_protocol: str) -> RedirectAction:
    config_at = f"{at}.RedirectConfig"
    if "RedirectConfig" not in props:
        raise _Invalid(config_at, "required key is missing")
    keys = {"Protocol": _raw, "Port": _raw, "Host": _raw, "Path": _raw, "Query": _raw, "StatusCode": _raw}
    config = _fields(props["RedirectConfig"], config_at, keys, ("StatusCode",))
    code = config["StatusCode"]
    if code not in REDIRECT_CODES:
        raise _Invalid(f"{config_at}.StatusCode", f"expected HTTP_301 or HTTP_302, got {_show(code)}")
    protocol = str(config.get("Protocol", "#{protocol}"))
    if protocol.upper() in ("HTTP", "HTTPS"):
        protocol = protocol.upper()
    elif protocol != "#{protocol}":
        raise _Invalid(f"{config_at}.Protocol", f"expected HTTP, HTTPS or #{{protocol}}, got {_show(protocol)}")
    if listener_protocol == "HTTPS" and protocol == "HTTP":
        raise _Invalid(f"{config_at}.Protocol", "an HTTPS listener cannot redirect to HTTP")
    port = config.get("Port", "#{port}")
    if port != "#{port}":
        port = str(_number(port, f"{config_at}.Port", 1, 65535))
    parts = {key: _bounded_text(config[key], f"{config_at}.{key}", None, "") if key in config else default
             for key, default in (("Host", "#{host}"), ("Path", "/#{path}"))}
    query = config.get("Query", "#{query}")
    parts["Query"] = query if query == "" else _bounded_text(query, f"{config_at}.Query", None, "")  # "": drop it
    if not parts["Path"].startswith("/"):
        raise _Invalid(f"{config_at}.Path", f"a redirect's path starts with '/', got {_show(parts['Path'])}")
    if parts["Query"].startswith("?"):
        raise _Invalid(f"{config_at}.Query", "a redirect's query is written without its leading '?'")
    action = RedirectAction(REDIRECT_CODES[code], protocol, parts["Host"], port, parts["Path"], parts["Query"])
    if (action.protocol, action.host, action.port, action.path) == ("#{protocol}", "#{host}", "#{port}", "/#{path}"):
        raise _Invalid(config_at, "a redirect must change the protocol, host, port or path, or it would send the "
                       "client back to the same URL")
    return action


def _fixed_response(props: dict[str, Any], at: str) -> FixedResponseAction:
    config_at = f"{at}.FixedResponseConfig"
    if "FixedResponseConfig" not in props:
        raise _Invalid(config_at, "required key is missing")
    keys = {"StatusCode": _raw, "ContentType": _raw, "MessageBody": _raw}
    config = _fields(props["FixedResponseConfig"], config_at, keys, ("StatusCode",))
    code = str(config["StatusCode"]) if not isinstance(config["StatusCode"], bool) else ""
    if not re.fullmatch(r"[245]\d\d", code):
        raise _Invalid(f"{config_at}.StatusCode", f"expected a 2XX, 4XX or 5XX code, got {_show(config['StatusCode'])}")
    content_type = config.get("ContentType", "text/plain")
    if content_type not in CONTENT_TYPES:
        hint = _did_you_mean(str(content_type), CONTENT_TYPES)
        raise _Invalid(f"{config_at}.ContentType", f"expected one of {', '.join(CONTENT_TYPES)}, got "
                       f"{_show(content_type)}{hint}")
    body = config.get("MessageBody", "")
    if not isinstance(body, str):
        raise _Invalid(f"{config_at}.MessageBody", f"expected a string, got {_describe(body)}")
    if len(body) > MAX_MESSAGE_BODY:
        raise _Invalid(f"{config_at}.MessageBody", f"{len(body)} characters; a fixed response's body is at most "
                       f"{MAX_MESSAGE_BODY}")
    return FixedResponseAction(int(code), content_type, body)


def forwarded_groups(action: RuleAction | None) -> tuple[str, ...]:
    """The target groups an action forwards to (none for a redirect or a fixed response)."""
    return tuple(g.target_group for g in action.target_groups) if isinstance(action, ForwardAction) else ()
