"""CloudWatch metrics of an ALB node (AWS/ApplicationELB names) from a real HAProxy's
`show stat` and `show info`."""
from __future__ import annotations

import socket
import time

import pytest

from alb_haproxy import _free_port, echo_server, needs_haproxy, request, running
from vpclab.engines.alb import errors, metrics


def runtime(sock_path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_text_that_is_not_show_stat_is_refused():
    with pytest.raises(ValueError, match="show stat"):
        metrics.cloudwatch_metrics("Unknown command\n", "")


def test_a_load_balancer_sums_its_nodes_and_weights_response_time_by_target_responses():
    a = {"RequestCount": 3, "HTTPCode_Target_2XX_Count": 3, "TargetResponseTime": 0.010,
         "TargetGroups": {"web": {"HealthyHostCount": 2, "UnHealthyHostCount": 0}}}
    b = {"RequestCount": 1, "HTTPCode_Target_2XX_Count": 1, "TargetResponseTime": 0.050,
         "TargetGroups": {"web": {"HealthyHostCount": 1, "UnHealthyHostCount": 1}}}
    total = metrics.merge([a, b])
    assert total["RequestCount"] == 4 and total["TargetResponseTime"] == 0.02
    assert total["TargetGroups"] == {"web": {"HealthyHostCount": 3, "UnHealthyHostCount": 1}}


@needs_haproxy()
def test_requests_target_codes_elb_codes_and_hosts_from_a_running_node(tmp_path):
    port, admin = _free_port(), tmp_path / "admin.sock"
    backend_lines = "".join(f"  {line}\n" for line in errors.backend_lines(tmp_path / "errors"))
    with echo_server() as target:
        config = (f"global\n  stats socket {admin} mode 600 level admin\n"
                  "defaults\n  mode http\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n"
                  f"frontend fe_http\n  bind 127.0.0.1:{port}\n  option http-ignore-probes\n"
                  "  http-request return status 404 content-type text/plain string nope if { path /fixed }\n"
                  "  use_backend tg_empty if { path /empty }\n  default_backend tg_web\n"
                  f"backend tg_web\n{backend_lines}  server-template s 1-4 127.0.0.1:{target}\n"
                  "  server s9 127.0.0.1:9 disabled\n"
                  f"backend tg_empty\n{backend_lines}  server-template s 1-2 127.0.0.1:9 disabled\n")
        with running(config, tmp_path, port):
            runtime(admin, "set server tg_web/s4 state maint")
            codes = [request(port, path=p)[0] for p in ("/", "/", "/", "/empty", "/fixed")]
            # The last client's close reaches HAProxy a moment after its answer: wait (bounded) for it.
            for _ in range(50):
                stat, info = runtime(admin, "show stat"), runtime(admin, "show info")
                if metrics.cloudwatch_metrics(stat, info)["ActiveConnectionCount"] == 0:
                    break
                time.sleep(0.05)
    assert codes == [200, 200, 200, 503, 404]
    found = metrics.cloudwatch_metrics(stat, info)
    assert found["RequestCount"] == 5
    assert found["HTTPCode_Target_2XX_Count"] == 3 and found["HTTPCode_Target_5XX_Count"] == 0
    assert found["HTTPCode_ELB_5XX_Count"] == 1 and found["HTTPCode_ELB_4XX_Count"] == 1
    assert found["TargetResponseTime"] is not None and 0 <= found["TargetResponseTime"] < 5
    assert found["ActiveConnectionCount"] == 0 and found["ClientTLSNegotiationErrorCount"] == 0
    # Three slots serve (no HAProxy checks: health is judged by vpclab's checker); maintenance is no target.
    assert found["TargetGroups"] == {"web": {"HealthyHostCount": 3, "UnHealthyHostCount": 0},
                                     "empty": {"HealthyHostCount": 0, "UnHealthyHostCount": 0}}
