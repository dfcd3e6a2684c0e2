"""The ALB node's haproxy.cfg (engines.alb.config, rules) and runtime decisions (engines.alb.runtime),
named after the AWS behaviour they reproduce (reference §4).

Matching is checked by compiling the generated patterns with Python's `re`, which reads
PCRE's `\\xHH` escapes and anchors the same way; the whole file is checked by `haproxy -c`."""
from __future__ import annotations

import copy
import re
import shutil
import subprocess

import pytest

from vpclab.engines.alb import config, rules, runtime

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

NODE = {
    "load_balancer": "web-alb", "arn": "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/web-alb/ab",
    "dns_name": "web-alb-1.us-east-1.elb.amazonaws.com", "scheme": "internet-facing",
    "availability_zone": "us-east-1a", "node_ip": "10.0.1.10", "public_ip": "100.64.1.5",
    "attributes": {"idle_timeout.timeout_seconds": "60", "routing.http2.enabled": "true"},
    "listeners": [{
        "name": "http", "arn": "arn:l/http", "protocol": "HTTP", "port": 80, "certificate": None,
        "rules": [
            {"name": "api", "arn": "a", "priority": 10, "conditions": [
                {"field": "path-pattern", "values": ["/api/*"]},
                {"field": "host-header", "values": ["*.example.com"]},
                {"field": "http-header", "name": "X-Env", "values": ["beta"]},
                {"field": "http-request-method", "values": ["GET", "POST"]},
                {"field": "query-string", "values": [{"key": "v", "value": "1"}]},
                {"field": "source-ip", "values": ["10.0.0.0/8"]}],
             "action": {"type": "forward", "target_groups": [{"name": "web", "weight": 3}, {"name": "v2", "weight": 1}],
                        "stickiness": {"enabled": True, "duration_seconds": 3600}}},
            {"name": "old", "arn": "o", "priority": 20,
             "conditions": [{"field": "path-pattern", "values": ["/old/*"]}],
             "action": {"type": "redirect", "protocol": "HTTPS", "host": "#{host}", "port": "443",
                        "path": "/new/#{path}", "query": "#{query}", "status_code": 301}},
            {"name": "ping", "arn": "p", "priority": 30,
             "conditions": [{"field": "path-pattern", "values": ["/ping"]}],
             "action": {"type": "fixed-response", "status_code": 200, "content_type": "text/plain",
                        "message_body": "pong"}},
            {"name": "default", "arn": "d", "priority": "default", "conditions": [],
             "action": {"type": "forward", "target_groups": [{"name": "web", "weight": 1}]}}]}],
    "target_groups": {
        "web": {"arn": "arn:tg/web", "protocol": "HTTP", "port": 80, "target_type": "instance",
                "attributes": {"stickiness.enabled": "true", "stickiness.type": "lb_cookie",
                               "stickiness.lb_cookie.duration_seconds": "86400",
                               "slow_start.duration_seconds": "30"},
                "health_check": {},
                "targets": [{"id": "i-1", "ip": "10.0.11.10", "port": 80, "az": "us-east-1a"},
                            {"id": "i-2", "ip": "10.0.12.10", "port": 80, "az": "us-east-1b"}]},
        "v2": {"arn": "arn:tg/v2", "protocol": "HTTPS", "port": 443, "target_type": "ip",
               "attributes": {"load_balancing.algorithm.type": "least_outstanding_requests",
                              "stickiness.enabled": "true", "stickiness.type": "app_cookie",
                              "stickiness.app_cookie.cookie_name": "SESSION"},
               "health_check": {}, "targets": []}},
}


def _acl(condition: dict) -> str:
    return rules.condition_acl("c", condition)


def _patterns(acl: str) -> list[re.Pattern]:
    flags = re.IGNORECASE if " -i " in acl else 0
    return [re.compile(p, flags) for p in re.findall(r"'([^']*)'", acl)]


def _matches(condition: dict, subject: str) -> bool:
    return any(p.search(subject) for p in _patterns(_acl(condition)))


# --- conditions -------------------------------------------------------------------


def test_host_header_is_case_insensitive_with_wildcards():
    cond = {"field": "host-header", "values": ["*.example.com"]}
    assert _matches(cond, "www.EXAMPLE.com")
    assert _matches(cond, "a.b.example.com")
    assert "req.hdr(host),field(1,:)" in _acl(cond)  # the port is not part of the host matched


def test_host_wildcard_star_dot_does_not_match_the_bare_domain():
    assert not _matches({"field": "host-header", "values": ["*.example.com"]}, "example.com")


def test_host_question_mark_is_exactly_one_character():
    cond = {"field": "host-header", "values": ["www?.example.com"]}
    assert _matches(cond, "www1.example.com")
    assert not _matches(cond, "www.example.com")
    assert not _matches(cond, "www12.example.com")


def test_dots_in_a_host_value_are_literal():
    assert not _matches({"field": "host-header", "values": ["a.example.com"]}, "aXexample.com")


def test_path_pattern_is_case_sensitive():
    cond = {"field": "path-pattern", "values": ["/api/*"]}
    assert _matches(cond, "/api/users")
    assert not _matches(cond, "/API/users")


def test_path_pattern_matches_the_path_only_not_the_query():
    acl = _acl({"field": "path-pattern", "values": ["/img/*.png"]})
    assert acl.split()[2] == "path"  # HAProxy's `path` stops before the query string
    assert " -i " not in acl


def test_http_header_name_any_case_and_value_wildcards_without_case():
    acl = _acl({"field": "http-header", "name": "User-Agent", "values": ["*Mobile*"]})
    assert "req.fhdr(User-Agent)" in acl  # HAProxy header names are case-insensitive
    assert _matches({"field": "http-header", "name": "User-Agent", "values": ["*Mobile*"]}, "Foo MOBILE bar")


def test_http_header_name_must_be_a_token():
    with pytest.raises(ValueError, match="not an HTTP token"):
        _acl({"field": "http-header", "name": "X) || true", "values": ["x"]})


def test_http_request_method_is_exact_and_case_sensitive():
    acl = _acl({"field": "http-request-method", "values": ["GET", "CUSTOM_METHOD"]})
    assert acl == "acl c method -m str 'GET' 'CUSTOM_METHOD'"
    assert " -i " not in acl


def test_query_string_key_and_value_case_insensitive_with_wildcards():
    cond = {"field": "query-string", "values": [{"key": "version", "value": "v*"}]}
    assert _matches(cond, "a=1&VERSION=V2&b=3")
    assert not _matches(cond, "a=1&xversion=v2")
    assert not _matches(cond, "version=2")


def test_query_string_value_alone_matches_any_key():
    cond = {"field": "query-string", "values": [{"key": None, "value": "blue"}]}
    assert _matches(cond, "colour=blue")
    assert _matches(cond, "x=1&shade=BLUE")
    assert not _matches(cond, "colour=blueish")


def test_source_ip_is_the_tcp_peer_not_x_forwarded_for():
    assert _acl({"field": "source-ip", "values": ["10.0.0.0/8", "192.168.1.7/32"]}) == \
        "acl c src 10.0.0.0/8 192.168.1.7/32"


def test_values_of_a_condition_are_ored_and_conditions_anded():
    rule = NODE["listeners"][0]["rules"][0]
    lines, names = rules.rule_acls("r0", rule)
    assert len(lines) == len(rule["conditions"]) == len(names)
    pick = [line for line in rules.selection_lines([rule]) if "set-var(txn.rule)" in line][0]
    assert all(name in pick.split() for name in names)  # every condition on one line: AND


def test_hostile_values_cannot_leave_their_quotes():
    acl = _acl({"field": "path-pattern", "values": ["/a' if TRUE or '/b$x"]})
    assert acl.count("'") == 2 and "\\x27" in acl
    assert _matches({"field": "path-pattern", "values": ["/a' b"]}, "/a' b")


# --- rule order and actions -------------------------------------------------------


def test_rules_evaluate_lowest_priority_first_and_default_last():
    lines = rules.selection_lines(NODE["listeners"][0]["rules"])
    picks = [line for line in lines if "set-var(txn.rule)" in line]
    assert [p.split("str(")[1].split(")")[0] for p in picks] == ["r0", "r1", "r2", "r3"]
    assert all("!{ var(txn.rule) -m found }" in p for p in picks)  # first match wins
    assert "int(0)" in [line for line in lines if "rule_priority" in line][-1]  # the default rule logs 0


def test_refusals_come_before_the_rules_so_the_log_shows_no_matched_rule():
    text = config.render(NODE, runtime_socket="rt.sock", refusal_lines=["http-request deny status 405 if { method TRACE }"])
    frontend = text.split("frontend fe_")[1]
    assert frontend.index("deny status 405") < frontend.index("set-var(txn.rule)")


def test_log_only_rule_variables_are_set_only_with_access_logs_on():
    def text(enabled):
        node = copy.deepcopy(NODE)
        node["attributes"] = {**node.get("attributes", {}), "access_logs.s3.enabled": enabled}
        return config.render(node, runtime_socket="rt.sock")
    assert "txn.rule_priority" not in text("false") and "txn.actions_executed" not in text("false")
    assert "txn.rule_priority" in text("true") and "txn.actions_executed" in text("true")


def test_redirect_keeps_host_path_and_query_and_drops_the_default_port():
    lines = rules.redirect_lines("r1", NODE["listeners"][0]["rules"][1]["action"], NODE["listeners"][0])
    assert lines[0] == ('http-request redirect location "https://%[req.hdr(host),field(1,:)]/new/'
                        '%[path,ltrim(/)]?%[query]" code 301 if { var(txn.rule) -m str r1 } { query -m len gt 0 }')
    assert "?" not in lines[1]  # no query: no "?"


def test_redirect_to_a_non_default_port_names_it_and_302_is_kept():
    action = {"type": "redirect", "protocol": "HTTPS", "port": "8443", "status_code": 302, "query": ""}
    (line,) = rules.redirect_lines("r1", action, NODE["listeners"][0])
    assert '"https://%[req.hdr(host),field(1,:)]:8443/%[path,ltrim(/)]"' in line and "code 302" in line


def test_redirect_status_must_be_301_or_302():
    with pytest.raises(ValueError):
        rules.redirect_lines("r1", {"type": "redirect", "status_code": 307}, NODE["listeners"][0])


def test_fixed_response_returns_status_type_and_body():
    line = rules.fixed_response_line("r2", {"status_code": 503, "content_type": "application/json",
                                            "message_body": '{"down": "$HOME"}'})
    assert line == ('http-request return status 503 content-type "application/json" '
                    'string "{\\"down\\": \\"\\$HOME\\"}" if { var(txn.rule) -m str r2 }')


def test_weighted_forward_draws_in_proportion_to_weights():
    action = NODE["listeners"][0]["rules"][0]["action"]
    requests, uses = rules.forward_lines("r0", action, NODE["target_groups"])
    assert "rand(4)" in requests[0]
    draws = [u for u in uses if "txn.pick" in u]
    assert "ge 0 } { var(txn.pick) -m int lt 3" in draws[0] and draws[0].startswith("use_backend tg_web ")
    assert "ge 3 } { var(txn.pick) -m int lt 4" in draws[1] and draws[1].startswith("use_backend tg_v2 ")


def test_group_stickiness_cookie_awsalbtg_wins_over_the_draw():
    action = NODE["listeners"][0]["rules"][0]["action"]
    _requests, uses = rules.forward_lines("r0", action, NODE["target_groups"])
    token = rules.group_token("arn:tg/v2")
    sticky = [u for u in uses if "req.cook(AWSALBTG" in u]
    assert uses.index(sticky[0]) < uses.index([u for u in uses if "txn.pick" in u][0])
    assert f"use_backend tg_v2 if {{ var(txn.rule) -m str r0 }} {{ req.cook(AWSALBTG) -m str {token} }}" in uses
    assert any("AWSALBTGCORS" in u for u in uses)


def test_a_group_of_weight_zero_gets_nothing():
    action = {"type": "forward", "target_groups": [{"name": "web", "weight": 1}, {"name": "v2", "weight": 0}]}
    _requests, uses = rules.forward_lines("r0", action, NODE["target_groups"])
    assert uses == ["use_backend tg_web if { var(txn.rule) -m str r0 }"]


# --- the whole file -------------------------------------------------------------------


def test_listener_frontend_binds_the_node_ip_and_https_offers_h2():
    node = copy.deepcopy(NODE)
    node["listeners"][0].update(protocol="HTTPS", port=443)
    text = config.render(node, runtime_socket="rt.sock", certificates={"http": "site.pem"})
    assert "    bind 10.0.1.10:443 ssl crt site.pem alpn h2,http/1.1" in text
    node["attributes"]["routing.http2.enabled"] = "false"
    assert "alpn" not in config.render(node, runtime_socket="rt.sock", certificates={"http": "site.pem"})


def test_https_listener_without_a_certificate_is_refused():
    node = copy.deepcopy(NODE)
    node["listeners"][0]["protocol"] = "HTTPS"
    with pytest.raises(ValueError, match="certificate"):
        config.render(node, runtime_socket="rt.sock")


def test_master_worker_with_an_admin_runtime_socket_that_hands_over_listeners():
    text = config.render(NODE, runtime_socket="node.sock")
    assert "    master-worker\n" in text
    assert "    stats socket node.sock mode 600 level admin expose-fd listeners\n" in text


def test_timeouts_follow_idle_timeout_and_connect_waits_10s():
    node = copy.deepcopy(NODE)
    node["attributes"]["idle_timeout.timeout_seconds"] = "7"
    text = config.render(node, runtime_socket="s")
    for line in ("timeout connect 10s", "timeout client 7s", "timeout server 7s"):
        assert f"    {line}\n" in text


def test_lb_cookie_stickiness_is_awsalb_with_awsalbcors():
    text = config.render(NODE, runtime_socket="s")
    assert "    cookie AWSALB insert nocache dynamic maxlife 86400s attr Path=/\n" in text  # the duration
    assert "AWSALBCORS=%[res.cook(AWSALB)]" in text and "SameSite=None; Secure" in text
    # Expires 7 days ahead on every response, as AWS sets it whatever the duration
    awsalb = [line for line in text.splitlines() if "AWSALB=" in line or "AWSALBCORS=" in line]
    assert sum("Expires=%[date(604800),http_date]" in line for line in awsalb) == 3


def test_app_cookie_stickiness_issues_awsalbapp_and_routes_on_it():
    text = config.render(NODE, runtime_socket="s")
    assert "    stick match req.cook(AWSALBAPP-0)\n" in text  # routed on ALB's cookie, not the app's
    assert "    stick store-response var(txn.albapp) if { res.cook(SESSION) -m found }\n" in text
    assert 'add-header Set-Cookie "AWSALBAPP-0=%[var(txn.albapp)]; Expires=' in text


def test_least_outstanding_requests_is_leastconn_and_round_robin_roundrobin():
    text = config.render(NODE, runtime_socket="s")
    web = text.split("backend tg_web\n")[1].split("\n\n")[0]
    v2 = text.split("backend tg_v2\n")[1].split("\n\n")[0]
    assert "balance roundrobin" in web and "balance leastconn" in v2


def test_slow_start_weighs_each_slot_and_https_groups_skip_verification():
    text = config.render(NODE, runtime_socket="s")
    # full weight, the daemon ramping a target through the runtime API; never HAProxy's
    # `slowstart`, which would ramp every slot leaving maintenance
    assert "    server s1 10.0.11.10:80 weight 100\n" in text and "slowstart" not in text
    assert "    server s1 0.0.0.0:443 disabled ssl verify none\n" in text


def test_slots_are_at_least_16_and_twice_the_targets():
    assert config.slot_count(2) == 16 and config.slot_count(12) == 24
    text = config.render(NODE, runtime_socket="s")
    assert "    server s16 0.0.0.0:80 disabled weight 100\n" in text and "server s17 " not in text


def test_a_ramping_slot_keeps_its_weight_across_a_reload():
    slots = {"web": [{"ip": "10.0.11.10", "port": 80, "state": "ready", "weight": 100},
                     {"ip": "10.0.12.10", "port": 80, "state": "ready", "weight": 37}] + [None] * 14}
    text = config.render(NODE, runtime_socket="s", slots=slots)
    assert "    server s2 10.0.12.10:80 weight 37\n" in text
    assert "    server s1 0.0.0.0:443 disabled ssl verify none\n" in text  # no slow start, no weight


def test_generated_config_is_valid_for_haproxy(tmp_path):
    node = copy.deepcopy(NODE)
    node["node_ip"] = "127.0.0.1"
    (tmp_path / "c.cfg").write_text(config.render(node, runtime_socket=str(tmp_path / "rt.sock")))
    done = subprocess.run([HAPROXY, "-c", "-f", str(tmp_path / "c.cfg")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- runtime decisions ------------------------------------------------------------------


def test_only_healthy_targets_take_requests():
    assert runtime.slot_states({"a": "healthy", "b": "unhealthy", "c": "initial"}) == \
        {"a": "ready", "b": "maint", "c": "maint"}


def test_all_targets_unhealthy_fail_open_to_every_registered_target():
    assert runtime.slot_states({"a": "unhealthy", "b": "initial", "c": "draining"}) == \
        {"a": "ready", "b": "ready", "c": "maint"}


def test_a_deregistering_target_takes_no_new_request_even_a_sticky_one():
    assert runtime.slot_states({"a": "healthy", "b": "draining"})["b"] == "maint"


def test_a_registered_target_takes_a_free_slot_and_keeps_it():
    slots = runtime.Slots.for_targets("web", NODE["target_groups"]["web"]["targets"])
    assert slots.slot_of("i-2") == 2
    assert slots.free("i-1") == 1
    assert slots.place("i-3", "10.0.11.11", 80) == 1
    assert slots.place("i-3", "10.0.11.11", 80) == 1
    assert slots.render({"i-3": "ready"})[:3] == [{"ip": "10.0.11.11", "port": 80, "state": "ready"},
                                                  {"ip": "10.0.12.10", "port": 80, "state": "maint"}, None]


def test_full_slots_ask_for_a_bigger_backend():
    slots = runtime.Slots("web", 1)
    assert slots.place("a", "10.0.0.1", 80) == 1
    assert slots.place("b", "10.0.0.2", 80) is None


def test_runtime_commands_fill_and_empty_a_slot():
    assert runtime.fill_commands("web", 3, "10.0.11.10", 80) == ["set server tg_web/s3 addr 10.0.11.10 port 80"]
    assert runtime.state_command("web", 3, "ready") == "set server tg_web/s3 state ready"
    assert runtime.empty_commands("web", 3) == ["set server tg_web/s3 state maint",
                                                "shutdown sessions server tg_web/s3"]
    with pytest.raises(ValueError):
        runtime.state_command("web", 3, "up; shutdown")


def test_in_flight_reads_current_sessions_per_slot():
    stat = ("# pxname,svname,qcur,qmax,scur,smax\nfe_http,FRONTEND,,,3,4\n"
            "tg_web,s1,0,0,2,5\ntg_web,s2,0,0,0,1\ntg_web,BACKEND,0,0,2,5\ntg_v2,s1,0,0,9,9\n")
    assert runtime.in_flight(stat, "web") == {1: 2, 2: 0}


def test_a_refusal_is_told_from_a_data_reply():
    assert runtime.refused("No such server.\n")
    assert runtime.refused("'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n")
    assert not runtime.refused("IP changed from '0.0.0.0' to '10.0.11.10', port changed from '80' to '80'\n")
    assert not runtime.refused("# pxname,svname,h2_detected_conn_protocol_errors\nfe_http,FRONTEND,0\n")
    assert not runtime.refused("")


def test_backends_set_the_awsalbtg_token_only_when_a_rule_has_group_stickiness():
    with_sticky = config.render(NODE, runtime_socket="unix@x.sock")
    assert with_sticky.count(f"set-var({rules.GROUP_TOKEN_VAR})") == len(NODE["target_groups"])
    node = copy.deepcopy(NODE)
    node["listeners"][0]["rules"][0]["action"]["stickiness"] = {"enabled": False}
    assert f"set-var({rules.GROUP_TOKEN_VAR})" not in config.render(node, runtime_socket="unix@x.sock")


def test_node_threads_are_half_the_cpus_and_at_least_one():
    assert [config.node_threads(n) for n in (None, 1, 2, 3, 4, 16)] == [1, 1, 1, 1, 2, 8]
    text = config.render(NODE, runtime_socket="unix@x.sock", threads=1)
    assert re.search(r"^global\n(    .*\n)*    nbthread 1\n", text, re.M)
    assert "nbthread" not in config.render(NODE, runtime_socket="unix@x.sock")
