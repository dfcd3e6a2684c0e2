"""ALB access logs (reference §4.6): one entry per request in ALB's field order, made from what
a real HAProxy logs to the receiver's UNIX datagram socket."""
from __future__ import annotations

import shlex
import threading
import time

import pytest

from alb_haproxy import _free_port, echo_server, needs_haproxy, request, running
from vpclab.engines.alb import access_log, errors, headers

FIELDS = ("type time elb client:port target:port request_processing_time target_processing_time "
          "response_processing_time elb_status_code target_status_code received_bytes sent_bytes request "
          "user_agent ssl_cipher ssl_protocol target_group_arn trace_id domain_name chosen_cert_arn "
          "matched_rule_priority request_creation_time actions_executed redirect_url error_reason "
          "target:port_list target_status_code_list classification classification_reason").split()
ELB = "app/web-alb/50dc6c495c0c9188"
TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/73e2d6bc24d8a067"
CONTEXT = {"elb": ELB, "target_group_arns": {"tg_web": TG_ARN}, "certificate_arns": {}}


def raw(**changes) -> str:
    """A datagram as HAProxy sends it for a forwarded GET (values per LOG_FORMAT)."""
    values = {"accept_s": "1530570168", "accept_ms": "364", "client_ip": "192.168.131.39", "client_port": "2817",
              "frontend": "fe_http", "frontend_ip": "10.0.1.10", "frontend_port": "80", "backend": "tg_web",
              "server": "s1", "server_ip": "10.0.0.1", "server_port": "80",
              "Th": "0", "Ti": "0", "TR": "1", "Tw": "0", "Tc": "1", "Tr": "3", "Ta": "5",
              "status": "200", "termination": "----", "received_bytes": "34", "sent_bytes": "366",
              "method": "GET", "uri": "/index.html?x=1", "version": "HTTP/1.1",
              "ssl": "0", "ssl_cipher": "-", "ssl_protocol": "-", "sni": "-",
              "host": "www.example.com", "user_agent": 'curl/7.46.0 "quoted"', "trace_id": "Root=1-58337262-36d228ad5d99923122bbe354",
              "rule_priority": "0", "actions": "-", "redirect_url": "-", "tg_arn": "-"}
    values.update(changes)
    tokens = [access_log.MARKER]
    for name, _ in access_log.FIELDS:
        value = values[name]
        tokens.append(value.encode().hex().upper() if name in access_log.HEX and value != "-" else value)
    return "<134>" + " ".join(tokens)


def entry(**changes) -> dict[str, str]:
    fields = shlex.split(access_log.alb_entry(raw(**changes), CONTEXT), posix=True)
    assert len(fields) == len(FIELDS), fields
    return dict(zip(FIELDS, fields))


def test_a_forwarded_request_has_every_field_in_alb_order():
    e = entry()
    assert e["type"] == "http" and e["elb"] == ELB
    assert e["time"] == "2018-07-02T22:22:48.369000Z" and e["request_creation_time"] == "2018-07-02T22:22:48.364000Z"
    assert (e["client:port"], e["target:port"]) == ("192.168.131.39:2817", "10.0.0.1:80")
    assert (e["request_processing_time"], e["target_processing_time"], e["response_processing_time"]) == \
        ("0.001", "0.003", "0.000")
    assert (e["elb_status_code"], e["target_status_code"]) == ("200", "200")
    assert (e["received_bytes"], e["sent_bytes"]) == ("34", "366")
    assert e["request"] == "GET http://www.example.com:80/index.html?x=1 HTTP/1.1"
    assert e["user_agent"] == 'curl/7.46.0 "quoted"'
    assert (e["ssl_cipher"], e["ssl_protocol"], e["target_group_arn"]) == ("-", "-", TG_ARN)
    assert e["trace_id"] == "Root=1-58337262-36d228ad5d99923122bbe354"
    assert e["matched_rule_priority"] == "0" and e["actions_executed"] == "forward"
    assert (e["target:port_list"], e["target_status_code_list"]) == ("10.0.0.1:80", "200")
    assert [e[k] for k in ("domain_name", "chosen_cert_arn", "redirect_url", "error_reason", "classification",
                           "classification_reason")] == ["-"] * 6


def test_a_request_never_dispatched_has_timings_of_minus_one():
    e = entry(server="<NOSRV>", server_ip="-", server_port="-", Tw="-1", Tc="-1", Tr="-1", status="503",
              termination="SC--", backend="tg_web")
    assert (e["request_processing_time"], e["target_processing_time"], e["response_processing_time"]) == \
        ("-1", "-1", "-1")
    assert (e["elb_status_code"], e["target_status_code"], e["target:port_list"]) == ("503", "-", "-")


def test_a_client_that_left_before_the_answer_is_logged_460():
    e = entry(status="-1", termination="CH--", Tr="-1")
    assert (e["elb_status_code"], e["target_status_code"], e["target_processing_time"]) == ("460", "-", "-1")


def test_a_redirect_rule_logs_its_priority_action_and_url():
    e = entry(server="<NOSRV>", server_ip="-", server_port="-", backend="fe_http", Tw="-1", Tc="-1", Tr="-1",
              status="301", termination="LR--", rule_priority="20", actions="redirect",
              redirect_url="https://www.example.com:443/new/x")
    assert (e["elb_status_code"], e["target_status_code"], e["matched_rule_priority"]) == ("301", "-", "20")
    assert (e["actions_executed"], e["redirect_url"], e["target_group_arn"]) == \
        ("redirect", "https://www.example.com:443/new/x", "-")


def test_https_over_http2_is_h2_with_the_cipher_sni_and_certificate():
    context = {**CONTEXT, "certificate_arns": {"fe_https": "arn:aws:acm:us-east-1:123456789012:certificate/abc"}}
    line = access_log.alb_entry(raw(ssl="1", version="HTTP/2.0", frontend="fe_https", frontend_port="443",
                                    ssl_cipher="ECDHE-RSA-AES128-GCM-SHA256", ssl_protocol="TLSv1.2",
                                    sni="www.example.com", uri="https://www.example.com/index.html?x=1"), context)
    e = dict(zip(FIELDS, shlex.split(line)))
    assert e["type"] == "h2" and e["request"] == "GET https://www.example.com:443/index.html?x=1 HTTP/2.0"
    assert (e["ssl_cipher"], e["ssl_protocol"], e["domain_name"]) == ("ECDHE-RSA-AES128-GCM-SHA256", "TLSv1.2",
                                                                      "www.example.com")
    assert e["chosen_cert_arn"].endswith("certificate/abc")


def test_a_request_haproxy_could_not_read_is_logged_without_a_request_line():
    e = entry(method="<BADREQ>", uri="<BADREQ>", version="<BADREQ>", status="400", termination="PR--",
              server="<NOSRV>", server_ip="-", server_port="-", host="-", user_agent="-", trace_id="-",
              rule_priority="-")
    assert e["request"] == "- - - " and e["elb_status_code"] == "400" and e["matched_rule_priority"] == "-"


@pytest.mark.parametrize("garbage", ["", "hello", access_log.MARKER + " 1 2 3", raw().replace("www", "zz", 1)[:-3]])
def test_a_malformed_datagram_is_refused(garbage):
    with pytest.raises(access_log.MalformedLogLine):
        access_log.alb_entry(garbage, CONTEXT)


def test_the_receiver_counts_and_drops_a_malformed_datagram(tmp_path):
    receiver = access_log.Receiver(tmp_path / "log.sock", tmp_path / "logs" / "web-alb.log", CONTEXT)
    try:
        assert receiver.handle(b"junk") is None and receiver.handle(raw().encode()) is not None
        assert (receiver.received, receiver.written, receiver.malformed) == (2, 1, 1)
        assert len((tmp_path / "logs" / "web-alb.log").read_text().splitlines()) == 1
    finally:
        receiver.close()


@needs_haproxy()
def test_haproxy_logs_each_request_to_the_receiver_as_one_alb_entry(tmp_path):
    log_path = tmp_path / "access-logs" / "web-alb.log"
    sock = tmp_path / "alb.sock"
    receiver = access_log.Receiver(sock, log_path, {**CONTEXT, "target_group_arns": {"tg_web": TG_ARN}})
    stop = threading.Thread(target=receiver.serve, args=(stopping := threading.Event(),), daemon=True)
    stop.start()
    port = _free_port()
    listener = {"name": "http", "protocol": "HTTP", "port": port}
    try:
        with echo_server() as backend:
            # as the daemon orders them: refusals, the rule chosen, then the headers
            frontend = (access_log.log_lines(str(sock)) + headers.refusal_lines() +
                        ["http-request set-var(txn.rule_priority) int(0)"] +
                        headers.frontend_request_lines(listener, {"access_logs.s3.enabled": "true"}))
            config = ("defaults\n  mode http\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n"
                      f"frontend fe_http\n  bind 127.0.0.1:{port}\n" + "".join(f"  {x}\n" for x in frontend) +
                      f"  default_backend tg_web\nbackend tg_web\n  server s1 127.0.0.1:{backend}\n")
            with running(config, tmp_path, port):
                assert request(port, path="/a?b=c", headers=[("Host", "www.example.com"),
                                                            ("User-Agent", 'tester "one"')])[0] == 200
                assert request(port, "TRACE")[0] == 405
                deadline = time.monotonic() + 10
                while receiver.written < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
    finally:
        stopping.set()
        stop.join(5)
        receiver.close()
    lines = log_path.read_text().splitlines()
    assert len(lines) == 2 and receiver.malformed == 0, lines
    # HAProxy logs each request when it ends: the two may arrive in either order
    entries = [dict(zip(FIELDS, shlex.split(line))) for line in lines]
    forwarded, traced = sorted(entries, key=lambda e: e["request"].startswith("TRACE"))
    assert forwarded["request"] == f"GET http://www.example.com:{port}/a?b=c HTTP/1.1"
    assert forwarded["user_agent"] == 'tester "one"' and forwarded["target_group_arn"] == TG_ARN
    assert (forwarded["elb_status_code"], forwarded["target_status_code"]) == ("200", "200")
    assert forwarded["target:port"] == f"127.0.0.1:{backend}" and forwarded["matched_rule_priority"] == "0"
    assert forwarded["trace_id"].startswith("Root=1-") and forwarded["client:port"].startswith("127.0.0.1:")
    assert (traced["elb_status_code"], traced["target:port"], traced["matched_rule_priority"]) == ("405", "-", "-")
    assert errors.elb_status_code(405, "PR--", None) == (405, None)
