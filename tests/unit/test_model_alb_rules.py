"""An Application Load Balancer's listener rules and actions held to AWS's limits (reference §4.1),
each refusal naming the key at fault."""
from __future__ import annotations

import pytest

from test_model_alb import ALB, edit, load, refused_at
from vpclab.model.resources import FixedResponseAction, ForwardAction, RedirectAction

# The "api" rule of ALB, whose conditions the tests below replace.
API_CONDITIONS = """    Conditions:
      - {Field: path-pattern, PathPatternConfig: {Values: ["/api/*"]}}
      - {Field: host-header, HostHeaderConfig: {Values: ["*.example.com"]}}
      - {Field: http-header, HttpHeaderConfig: {HttpHeaderName: X-Env, Values: [beta]}}
      - {Field: query-string, QueryStringConfig: {Values: [{Key: v, Value: "1"}]}}
      - {Field: source-ip, SourceIpConfig: {Values: [10.0.0.0/8]}}
"""
API_ACTIONS = "    Actions: [{Type: forward, TargetGroupArn: api-v1}]\n"


def with_conditions(*conditions: str) -> str:
    return edit(API_CONDITIONS, "    Conditions:\n" + "".join(f"      - {c}\n" for c in conditions))


def with_actions(*actions: str, text: str = ALB) -> str:
    return edit(API_ACTIONS, "    Actions:\n" + "".join(f"      - {a}\n" for a in actions), text)


def conditions_refused_at(index: int, key: str, *conditions: str) -> str:
    suffix = f".{key}" if key else ""
    return refused_at(with_conditions(*conditions), f"listener_rules.api.Conditions[{index}]{suffix}")


PATH = "{Field: path-pattern, PathPatternConfig: {Values: [%s]}}"
HOST = "{Field: host-header, HostHeaderConfig: {Values: [%s]}}"
METHOD = "{Field: http-request-method, HttpRequestMethodConfig: {Values: [%s]}}"
SOURCE = "{Field: source-ip, SourceIpConfig: {Values: [%s]}}"
HEADER = "{Field: http-header, HttpHeaderConfig: {HttpHeaderName: %s, Values: [%s]}}"
QUERY = "{Field: query-string, QueryStringConfig: {Values: [%s]}}"

# -- priorities


@pytest.mark.parametrize("priority", [0, 50001, "high"])
def test_priority_is_1_to_50000(priority):
    reason = refused_at(edit("    Priority: 10\n", f"    Priority: {priority}\n"), "listener_rules.api.Priority")
    assert "1-50000" in reason or "expected an integer" in reason


def test_priorities_1_and_50000_are_allowed():
    lab = load(edit("    Priority: 10\n", "    Priority: 50000\n", edit("    Priority: 5\n", "    Priority: 1\n")))
    assert [r.priority for r in lab.rules_of("http")] == [1, 20, 50000]


def test_two_rules_of_a_listener_with_one_priority_are_refused():
    reason = refused_at(edit("    Priority: 20\n", "    Priority: 10\n"), "listener_rules.old.Priority")
    assert reason == ("listener http already has rule api at priority 10; each rule of a listener has its own "
                      "priority")


def test_rules_of_different_listeners_may_share_a_priority():
    text = edit("  health:\n    ListenerArn: http\n    Priority: 5", "  health:\n    ListenerArn: https\n    Priority: 10")
    assert [r.name for r in load(text).rules_of("https")] == ["health"]


def test_rule_needs_conditions():
    reason = refused_at(edit(API_CONDITIONS, "    Conditions: []\n"), "listener_rules.api.Conditions")
    assert reason.startswith("expected a list of conditions")


# -- conditions: at most one each of host, method, path, source-ip


@pytest.mark.parametrize("condition", [PATH % '"/a"', HOST % "a.example.com", METHOD % "GET", SOURCE % "10.0.0.0/8"])
def test_rule_with_two_conditions_of_a_once_per_rule_field_is_refused(condition):
    reason = conditions_refused_at(1, "Field", condition, condition)
    assert reason.startswith(f"a rule has at most one {condition.split(',')[0].split(': ')[1]} condition")


def test_rule_with_two_path_conditions_is_refused():
    reason = conditions_refused_at(1, "Field", PATH % '"/a"', PATH % '"/b"')
    assert reason == ("a rule has at most one path-pattern condition, and listener_rules.api.Conditions[0] is one "
                      "already; list several values in one condition")


def test_rule_with_two_header_conditions_is_allowed():
    rule = load(with_conditions(HEADER % ("X-A", "a"), HEADER % ("X-B", "b"))).listener_rules["api"]
    assert [(c.header_name, c.values) for c in rule.conditions] == [("X-A", ("a",)), ("X-B", ("b",))]


# -- values, match evaluations and wildcards


def test_condition_with_four_values_is_refused():
    reason = refused_at(with_conditions(PATH % '"/a", "/b", "/c", "/d"'),
                        "listener_rules.api.Conditions[0].PathPatternConfig.Values")
    assert reason == "a condition has at most 3 values, got 4"


def test_rule_with_six_match_evaluations_is_refused():
    reason = conditions_refused_at(2, "", PATH % '"/a", "/b", "/c"', HOST % "a.example.com, b.example.com",
                                   METHOD % "GET")
    assert reason.startswith("a rule has at most 5 match evaluations") and "brings it to 6" in reason


def test_rule_with_five_match_evaluations_is_allowed():
    rule = load(with_conditions(PATH % '"/a", "/b", "/c"', HOST % "a.example.com, b.example.com")).listener_rules["api"]
    assert sum(len(c.values) for c in rule.conditions) == 5


def test_rule_with_six_wildcards_is_refused():
    reason = conditions_refused_at(1, "", PATH % '"/a*/*", "/b*"', HOST % '"*.*.ex?mple.com"')
    assert reason.startswith("a rule has at most 5 wildcards (* or ?)") and "brings it to 6" in reason


def test_escaped_query_string_wildcards_do_not_count():
    rule = load(with_conditions(QUERY % r'{Key: "a\\*", Value: "\\*\\?\\*\\*\\?\\*"}')).listener_rules["api"]
    assert rule.conditions[0].values == ((r"a\*", r"\*\?\*\*\?\*"),)


def test_host_header_over_128_characters_is_refused():
    host = "a" * 120 + ".example.com"
    reason = refused_at(with_conditions(HOST % host), "listener_rules.api.Conditions[0].HostHeaderConfig.Values[0]")
    assert reason == "132 characters; a value is at most 128"


@pytest.mark.parametrize(("condition", "key"), [
    (HOST % '"ex ample.com"', "HostHeaderConfig.Values[0]"),
    (PATH % '"/a b"', "PathPatternConfig.Values[0]"),
    (METHOD % "get", "HttpRequestMethodConfig.Values[0]"),
    (HEADER % ('"X Env"', "a"), "HttpHeaderConfig.HttpHeaderName"),
    (HEADER % ('"X-*"', "a"), "HttpHeaderConfig.HttpHeaderName"),
])
def test_condition_values_outside_awss_characters_are_refused(condition, key):
    assert refused_at(with_conditions(condition), f"listener_rules.api.Conditions[0].{key}")


def test_methods_are_case_sensitive_and_custom_methods_allowed():
    reason = refused_at(with_conditions(METHOD % "get"), "listener_rules.api.Conditions[0].HttpRequestMethodConfig.Values[0]")
    assert "case sensitive" in reason
    assert load(with_conditions(METHOD % "PURGE, GET")).listener_rules["api"].conditions[0].values == ("PURGE", "GET")


def test_source_ip_takes_cidrs_and_refuses_ipv6():
    reason = refused_at(with_conditions(SOURCE % '"10.0.0.1"'), "listener_rules.api.Conditions[0].SourceIpConfig.Values[0]")
    assert "is not a CIDR block" in reason
    reason = refused_at(with_conditions(SOURCE % '"2001:db8::/32"'),
                        "listener_rules.api.Conditions[0].SourceIpConfig.Values[0]")
    assert reason == "IPv6 source addresses are not supported yet"


def test_query_string_needs_a_value_and_may_omit_the_key():
    rule = load(with_conditions(QUERY % '{Value: "on"}')).listener_rules["api"]
    assert rule.conditions[0].values == ((None, "on"),)
    reason = refused_at(with_conditions(QUERY % "{Key: debug}"),
                        "listener_rules.api.Conditions[0].QueryStringConfig.Values[0].Value")
    assert reason == "required key is missing"


def test_unknown_condition_field_is_refused_with_a_suggestion():
    reason = conditions_refused_at(0, "Field", "{Field: path-patern, PathPatternConfig: {Values: [/]}}")
    assert "did you mean 'path-pattern'?" in reason


def test_condition_with_another_fields_config_is_refused():
    reason = conditions_refused_at(0, "HostHeaderConfig", "{Field: path-pattern, HostHeaderConfig: {Values: [a.com]}}")
    assert reason == "a path-pattern condition takes PathPatternConfig, not HostHeaderConfig"


def test_cloudformations_older_values_form_for_path_and_host():
    rule = load(with_conditions('{Field: path-pattern, Values: ["/x"]}')).listener_rules["api"]
    assert rule.conditions[0].values == ("/x",)
    reason = conditions_refused_at(0, "Values", '{Field: http-request-method, Values: ["GET"]}')
    assert reason == "a http-request-method condition gives its values in HttpRequestMethodConfig"


# -- actions


def test_exactly_one_terminal_action():
    reason = refused_at(with_actions("{Type: forward, TargetGroupArn: api-v1, Order: 1}",
                                     "{Type: forward, TargetGroupArn: web, Order: 2}"),
                        "listener_rules.api.Actions[1].Type")
    assert reason.startswith("a rule has exactly one forward, redirect or fixed-response action")


def test_authenticate_actions_are_not_supported_yet():
    reason = refused_at(with_actions("{Type: authenticate-oidc, Order: 1}"), "listener_rules.api.Actions[0].Type")
    assert reason == "authenticate-oidc actions are not supported yet"


def test_unknown_action_type_is_refused():
    reason = refused_at(with_actions("{Type: forwrd, TargetGroupArn: web}"), "listener_rules.api.Actions[0].Type")
    assert "did you mean 'forward'?" in reason


def test_action_config_of_another_type_is_refused():
    reason = refused_at(with_actions("{Type: forward, TargetGroupArn: web, FixedResponseConfig: {StatusCode: '200'}}"),
                        "listener_rules.api.Actions[0].FixedResponseConfig")
    assert reason == "a forward action takes TargetGroupArn or ForwardConfig, not FixedResponseConfig"


def groups(*entries: str, sticky: str = "") -> str:
    stickiness = f", TargetGroupStickinessConfig: {sticky}" if sticky else ""
    return f"{{Type: forward, ForwardConfig: {{TargetGroups: [{', '.join(entries)}]{stickiness}}}}}"


def test_forward_to_six_groups_is_refused():
    entries = [f"{{TargetGroupArn: g{i}}}" for i in range(6)]
    text = with_actions(groups(*entries))
    for i in range(6):
        text = edit("target_groups:\n", f"target_groups:\n  g{i}: {{Protocol: HTTP, Port: 80, VpcId: main}}\n", text)
    reason = refused_at(text, "listener_rules.api.Actions[0].ForwardConfig.TargetGroups")
    assert reason == "a forward action has at most 5 target groups, got 6"


@pytest.mark.parametrize("weight", [-1, 1000])
def test_forward_weights_are_0_to_999(weight):
    text = with_actions(groups("{TargetGroupArn: api-v1, Weight: %d}" % weight, "{TargetGroupArn: web}"))
    reason = refused_at(text, "listener_rules.api.Actions[0].ForwardConfig.TargetGroups[0].Weight")
    assert reason == f"{weight} is outside 0-999"


def test_forward_weight_0_and_999_are_allowed_and_default_is_1():
    text = with_actions(groups("{TargetGroupArn: api-v1, Weight: 0}", "{TargetGroupArn: web, Weight: 999}",
                               "{TargetGroupArn: web-v2}"))
    action = load(text).listener_rules["api"].action
    assert [(g.target_group, g.weight) for g in action.target_groups] == [("api-v1", 0), ("web", 999), ("web-v2", 1)]


def test_forward_to_one_group_twice_is_refused():
    text = with_actions(groups("{TargetGroupArn: web}", "{TargetGroupArn: web}"))
    reason = refused_at(text, "listener_rules.api.Actions[0].ForwardConfig.TargetGroups[1].TargetGroupArn")
    assert reason == "target group web is listed twice"


@pytest.mark.parametrize("duration", [0, 604801])
def test_group_stickiness_is_1_to_604800_seconds(duration):
    text = with_actions(groups("{TargetGroupArn: web}", sticky=f"{{Enabled: true, DurationSeconds: {duration}}}"))
    reason = refused_at(text, "listener_rules.api.Actions[0].ForwardConfig.TargetGroupStickinessConfig.DurationSeconds")
    assert reason == f"{duration} is outside 1-604800"


def test_enabled_group_stickiness_needs_a_duration():
    text = with_actions(groups("{TargetGroupArn: web}", sticky="{Enabled: true}"))
    reason = refused_at(text, "listener_rules.api.Actions[0].ForwardConfig.TargetGroupStickinessConfig.DurationSeconds")
    assert reason.startswith("required key is missing")


def test_forward_to_an_unknown_group_is_refused():
    reason = refused_at(with_actions("{Type: forward, TargetGroupArn: wbe}"),
                        "listener_rules.api.Actions[0].TargetGroupArn")
    assert reason == "unknown target group 'wbe'; did you mean 'web'?"


def test_forward_by_target_group_arn():
    lab = load()
    text = with_actions(f"{{Type: forward, TargetGroupArn: '{lab.target_groups['web'].arn}'}}")
    assert load(text).listener_rules["api"].action.target_groups[0].target_group == "web"


REDIRECT = "{Type: redirect, RedirectConfig: {%s}}"


def redirect_refused_at(config: str, key: str, text: str = ALB) -> str:
    at = "listener_rules.api.Actions[0].RedirectConfig" + (f".{key}" if key else "")
    return refused_at(with_actions(REDIRECT % config, text=text), at)


def test_redirect_defaults_keep_what_is_not_given():
    action = load(with_actions(REDIRECT % "Protocol: HTTPS, StatusCode: HTTP_302")).listener_rules["api"].action
    assert action == RedirectAction(302, "HTTPS", "#{host}", "#{port}", "/#{path}", "#{query}")


def test_redirect_that_changes_nothing_is_refused():
    reason = redirect_refused_at("Host: '#{host}', StatusCode: HTTP_301", "")
    assert reason.startswith("a redirect must change the protocol, host, port or path")


def test_redirect_status_codes_are_http_301_and_http_302():
    assert redirect_refused_at("Protocol: HTTPS, StatusCode: '301'", "StatusCode") == \
        "expected HTTP_301 or HTTP_302, got '301'"


def test_https_listener_cannot_redirect_to_http():
    text = edit("  health:\n    ListenerArn: http", "  health:\n    ListenerArn: https",
                edit("  api:\n    ListenerArn: http", "  api:\n    ListenerArn: https"))
    reason = redirect_refused_at("Protocol: HTTP, StatusCode: HTTP_301", "Protocol", text)
    assert reason == "an HTTPS listener cannot redirect to HTTP"


@pytest.mark.parametrize(("config", "key", "reason"), [
    ("Port: 70000, StatusCode: HTTP_301", "Port", "70000 is outside 1-65535"),
    ("Path: new, StatusCode: HTTP_301", "Path", "a redirect's path starts with '/', got 'new'"),
    ("Protocol: FTP, StatusCode: HTTP_301", "Protocol", "expected HTTP, HTTPS or #{protocol}, got 'FTP'"),
    ("Host: a.com, Query: '?a=1', StatusCode: HTTP_301", "Query",
     "a redirect's query is written without its leading '?'"),
])
def test_redirect_parts_are_checked(config, key, reason):
    assert redirect_refused_at(config, key) == reason


FIXED = "{Type: fixed-response, FixedResponseConfig: {%s}}"


def fixed_refused_at(config: str, key: str) -> str:
    return refused_at(with_actions(FIXED % config), f"listener_rules.api.Actions[0].FixedResponseConfig.{key}")


@pytest.mark.parametrize("code", ["'302'", "'100'", "'600'", "OK"])
def test_fixed_response_codes_are_2xx_4xx_5xx(code):
    assert fixed_refused_at(f"StatusCode: {code}", "StatusCode").startswith("expected a 2XX, 4XX or 5XX code")


def test_fixed_response_content_types_are_awss_five():
    reason = fixed_refused_at("StatusCode: '200', ContentType: text/xml", "ContentType")
    assert reason.startswith("expected one of text/plain, text/css, text/html, application/javascript, "
                             "application/json")


def test_fixed_response_body_is_at_most_1024_characters():
    reason = fixed_refused_at(f"StatusCode: '503', MessageBody: {'x' * 1025}", "MessageBody")
    assert reason == "1025 characters; a fixed response's body is at most 1024"
    action = load(with_actions(FIXED % f"StatusCode: 503, MessageBody: {'x' * 1024}")).listener_rules["api"].action
    assert action == FixedResponseAction(503, "text/plain", "x" * 1024)


def test_listener_default_action_may_redirect_or_answer():
    text = edit("    DefaultActions: [{Type: forward, TargetGroupArn: web}]",
                "    DefaultActions: [{Type: redirect, RedirectConfig: {Protocol: HTTPS, Port: '443', "
                "StatusCode: HTTP_301}}]")
    li = load(text).listeners["http"]
    assert li.target_group is None and li.default_action.type == "redirect"


def test_listener_default_forward_is_read_like_a_rules():
    assert isinstance(load().listeners["https"].default_action, ForwardAction)
