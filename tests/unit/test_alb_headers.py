"""The headers an ALB adds and refuses (reference §4.3): the HAProxy lines, and what a target
behind a real HAProxy running them receives."""
from __future__ import annotations

import re
import time

import pytest

from alb_haproxy import check_config, frontend_config, haproxy_in_front, needs_haproxy, request, seen
from vpclab.engines.alb import headers

HTTP = {"name": "http", "protocol": "HTTP", "port": 80}
HTTPS = {"name": "https", "protocol": "HTTPS", "port": 443}
ODD_PORT = {"name": "alt", "protocol": "HTTP", "port": 8080}
TRACE = re.compile(r"^1-([0-9a-f]{8})-[0-9a-f]{24}$")
CLIENT_ROOT = "Root=1-67891233-abcdef012345678912345678"


def lines(listener=HTTP, **attributes):
    """A frontend's lines as the daemon orders them (the rules would sit between the two)."""
    return headers.refusal_lines() + headers.frontend_request_lines(listener, attributes)


def test_what_only_the_access_log_reads_is_set_only_with_access_logs_on():
    log_vars = ("txn.alb_host", "txn.alb_ua", "txn.trace_id")
    off = "\n".join(headers.frontend_request_lines(HTTP, {}))
    on = "\n".join(headers.frontend_request_lines(HTTP, {"access_logs.s3.enabled": "true"}))
    assert not any(v in off for v in log_vars) and all(v in on for v in log_vars)


def test_trace_and_too_many_forwarded_for_are_refused_before_anything_else():
    first, second = headers.refusal_lines()
    assert "deny status 405" in first and "method TRACE" in first
    assert "deny status 463" in second and "req.hdr_cnt(X-Forwarded-For) gt 30" in second


def test_each_xff_mode_gives_its_own_lines():
    assert headers.xff_lines("preserve", False) == []
    assert headers.xff_lines("remove", False) == ["http-request del-header X-Forwarded-For"]
    # the client's address is formatted once per connection, then appended from the variable
    first, *appends = headers.xff_lines("append", True)
    assert '"%[src]:%[src_port]"' in first and headers.PEER_VAR in first
    assert appends and all(f"%[var({headers.PEER_VAR})]" in line for line in appends)
    assert not any("src_port" in line for line in headers.xff_lines("append", False))


def test_an_unknown_xff_mode_is_refused_naming_the_attribute():
    with pytest.raises(ValueError, match="xff_header_processing.mode"):
        lines(**{"routing.http.xff_header_processing.mode": "replace"})


def test_only_http_and_https_listeners_have_headers():
    with pytest.raises(ValueError, match="protocol"):
        lines({"name": "tcp", "protocol": "TCP", "port": 80})


def test_forwarded_proto_and_port_name_the_listener():
    text = "\n".join(lines(HTTPS))
    assert "X-Forwarded-Proto https" in text and "X-Forwarded-Port 443" in text


def test_preserve_host_header_leaves_host_alone():
    assert not any("set-header Host" in line for line in lines(ODD_PORT, **{
        "routing.http.preserve_host_header.enabled": "true"}))


@needs_haproxy()
@pytest.mark.parametrize("listener", [HTTP, HTTPS, ODD_PORT])
def test_haproxy_accepts_the_lines_of_every_listener(listener, tmp_path):
    for mode in headers.XFF_MODES:
        check_config(frontend_config(lines(listener, **{"routing.http.xff_header_processing.mode": mode,
                                                        "routing.http.xff_client_port.enabled": "true"}),
                                     8080, 18080), tmp_path)


# --- what a target behind HAProxy receives -------------------------------------------------

@needs_haproxy()
def test_append_mode_adds_the_client_address_to_the_end_of_x_forwarded_for(tmp_path):
    with haproxy_in_front(lines(), tmp_path) as port:
        assert seen(port)["x-forwarded-for"] == ["127.0.0.1"]
        assert seen(port, headers=[("X-Forwarded-For", "203.0.113.7")])["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]


@needs_haproxy()
def test_client_port_option_appends_ip_and_port(tmp_path):
    with haproxy_in_front(lines(**{"routing.http.xff_client_port.enabled": "true"}), tmp_path) as port:
        (value,) = seen(port, headers=[("X-Forwarded-For", "203.0.113.7")])["x-forwarded-for"]
        assert re.fullmatch(r"203\.0\.113\.7, 127\.0\.0\.1:\d+", value), value


@needs_haproxy()
def test_preserve_mode_sends_x_forwarded_for_as_the_client_sent_it(tmp_path):
    with haproxy_in_front(lines(**{"routing.http.xff_header_processing.mode": "preserve"}), tmp_path) as port:
        assert "x-forwarded-for" not in seen(port)
        assert seen(port, headers=[("X-Forwarded-For", "203.0.113.7")])["x-forwarded-for"] == ["203.0.113.7"]


@needs_haproxy()
def test_remove_mode_drops_x_forwarded_for(tmp_path):
    with haproxy_in_front(lines(**{"routing.http.xff_header_processing.mode": "remove"}), tmp_path) as port:
        assert "x-forwarded-for" not in seen(port, headers=[("X-Forwarded-For", "203.0.113.7")])


@needs_haproxy()
def test_more_than_30_forwarded_for_entries_get_463_and_30_pass(tmp_path):
    with haproxy_in_front(lines(), tmp_path) as port:
        status, got, body = request(port, headers=[("X-Forwarded-For", ", ".join(["192.0.2.1"] * 31))])
        assert status == 463 and got["server"] == "awselb/2.0" and b"<h1>463" in body
        assert len(seen(port, headers=[("X-Forwarded-For", ", ".join(["192.0.2.1"] * 30))])["x-forwarded-for"][0]
                   .split(",")) == 31


@needs_haproxy()
def test_trace_method_gets_405_from_the_load_balancer(tmp_path):
    with haproxy_in_front(lines(), tmp_path) as port:
        status, got, body = request(port, "TRACE")
        assert (status, got["server"]) == (405, "awselb/2.0") and b"405 Method Not Allowed" in body


@needs_haproxy()
def test_forwarded_proto_and_port_reach_the_target(tmp_path):
    with haproxy_in_front(lines(ODD_PORT), tmp_path) as port:
        got = seen(port)
        assert (got["x-forwarded-proto"], got["x-forwarded-port"]) == (["http"], ["8080"])


@needs_haproxy()
def test_host_gets_the_listener_port_on_a_non_default_port(tmp_path):
    with haproxy_in_front(lines(ODD_PORT), tmp_path) as port:
        assert seen(port, headers=[("Host", "www.example.com")])["host"] == ["www.example.com:8080"]
        assert seen(port, headers=[("Host", "www.example.com:80")])["host"] == ["www.example.com:8080"]


@needs_haproxy()
def test_host_loses_its_port_on_port_80(tmp_path):
    with haproxy_in_front(lines(HTTP), tmp_path) as port:
        assert seen(port, headers=[("Host", "www.example.com:80")])["host"] == ["www.example.com"]


@needs_haproxy()
def test_preserve_host_header_keeps_the_port_the_client_sent(tmp_path):
    with haproxy_in_front(lines(ODD_PORT, **{"routing.http.preserve_host_header.enabled": "true"}), tmp_path) as port:
        assert seen(port, headers=[("Host", "www.example.com:80")])["host"] == ["www.example.com:80"]


@needs_haproxy()
def test_trace_id_is_added_with_a_root_in_aws_format_when_absent(tmp_path):
    with haproxy_in_front(lines(), tmp_path) as port:
        before = int(time.time())
        first, second = (seen(port)["x-amzn-trace-id"][0] for _ in range(2))
    for value in (first, second):
        root = TRACE.fullmatch(value.removeprefix("Root="))
        assert value.startswith("Root=") and root, value
        assert abs(int(root.group(1), 16) - before) <= 5  # the epoch seconds, in hex
    assert first != second


@needs_haproxy()
def test_a_client_root_is_kept_with_a_self_field_put_first(tmp_path):
    with haproxy_in_front(lines(), tmp_path) as port:
        (value,) = seen(port, headers=[("X-Amzn-Trace-Id", CLIENT_ROOT + ";Sampled=1")])["x-amzn-trace-id"]
    self_field, rest = value.split(";", 1)
    assert TRACE.fullmatch(self_field.removeprefix("Self=")) and rest == CLIENT_ROOT + ";Sampled=1"


@needs_haproxy()
def test_an_existing_self_field_is_updated_in_place(tmp_path):
    with haproxy_in_front(lines(), tmp_path) as port:
        (value,) = seen(port, headers=[("X-Amzn-Trace-Id", CLIENT_ROOT + ";Self=1-00000000-0;Lineage=a:1")])[
            "x-amzn-trace-id"]
    root, self_field, lineage = value.split(";")
    assert root == CLIENT_ROOT and lineage == "Lineage=a:1"
    assert TRACE.fullmatch(self_field.removeprefix("Self=")), value


@needs_haproxy()
def test_a_trace_id_over_7_kb_is_replaced_by_a_root_only(tmp_path):
    with haproxy_in_front(lines(), tmp_path, extra_global="  tune.bufsize 32768\n") as port:
        (value,) = seen(port, headers=[("X-Amzn-Trace-Id", CLIENT_ROOT + ";Custom=" + "a" * 7200)])["x-amzn-trace-id"]
    assert TRACE.fullmatch(value.removeprefix("Root=")), value[:80]
