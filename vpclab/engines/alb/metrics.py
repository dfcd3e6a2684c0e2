"""An ALB node's CloudWatch metrics (namespace AWS/ApplicationELB), from HAProxy's runtime API.

`cloudwatch_metrics(show_stat_csv, show_info)` reads `show stat` (CSV) and `show info` of one
node's HAProxy; the names in the haproxy.cfg are ALB.md's: frontends `fe_<listener>`, backends
`tg_<target group>`, servers the slots of a `server-template`. Counters run from the node's
start (CloudWatch sums them per period); a load balancer's figure is the sum over its nodes
(`merge`).

- RequestCount: requests the listeners received (frontends' `req_tot`; with
  `option http-ignore-probes`, a connection that sends nothing is not counted, as at AWS).
- HTTPCode_ELB_3XX/4XX/5XX_Count: responses the load balancer made itself: all the frontends'
  responses of that class less those the targets sent (servers' `hrsp_Nxx`).
- HTTPCode_Target_2XX..5XX_Count: responses the targets sent.
- TargetResponseTime: seconds, averaged over the targets' recent responses (servers' `rtime`,
  HAProxy's mean over its last 1024 requests, weighted by each server's responses); None if
  no target answered yet.
- ActiveConnectionCount: client connections open now (frontends' `scur`).
- HealthyHostCount / UnHealthyHostCount, per target group: slots in service (UP, or serving
  without HAProxy checks) and slots that are DOWN; empty slots (MAINT) are not targets.
- ClientTLSNegotiationErrorCount: failed TLS handshakes on HTTPS listeners
  (`ssl_failed_handshake`).
"""
from __future__ import annotations

import csv
import io

FRONTEND_PREFIX, BACKEND_PREFIX = "fe_", "tg_"
AGGREGATES = ("FRONTEND", "BACKEND")
SUMMED = ("RequestCount", "ActiveConnectionCount", "ClientTLSNegotiationErrorCount",
          "HTTPCode_ELB_3XX_Count", "HTTPCode_ELB_4XX_Count", "HTTPCode_ELB_5XX_Count",
          "HTTPCode_Target_2XX_Count", "HTTPCode_Target_3XX_Count", "HTTPCode_Target_4XX_Count",
          "HTTPCode_Target_5XX_Count")


def parse_stat(show_stat_csv: str) -> list[dict[str, str]]:
    """Rows of `show stat`: the header line starts with `# `."""
    text = show_stat_csv.lstrip()
    if not text.startswith("# pxname,"):
        raise ValueError(f"not `show stat` output: {text[:60]!r}")
    return list(csv.DictReader(io.StringIO(text[2:])))


def parse_info(show_info: str) -> dict[str, str]:
    info = {}
    for line in show_info.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def _n(row: dict, key: str) -> int:
    try:
        return int(row.get(key) or 0)
    except ValueError:
        return 0


def cloudwatch_metrics(show_stat_csv: str, show_info: str = "") -> dict:
    """CloudWatch metrics of one node: {name: value}, and "TargetGroups": {name: {...}}."""
    rows = parse_stat(show_stat_csv)
    info = parse_info(show_info)
    frontends = [r for r in rows if r["svname"] == "FRONTEND" and r["pxname"].startswith(FRONTEND_PREFIX)]
    servers = [r for r in rows if r["svname"] not in AGGREGATES and r["pxname"].startswith(BACKEND_PREFIX)]
    metrics: dict = {
        "RequestCount": sum(_n(r, "req_tot") for r in frontends),
        "ActiveConnectionCount": sum(_n(r, "scur") for r in frontends),
        "ClientTLSNegotiationErrorCount": sum(_n(r, "ssl_failed_handshake") for r in frontends),
    }
    for cls in ("2xx", "3xx", "4xx", "5xx"):
        sent = sum(_n(r, f"hrsp_{cls}") for r in frontends)
        by_targets = sum(_n(r, f"hrsp_{cls}") for r in servers)
        metrics[f"HTTPCode_Target_{cls.upper()}_Count"] = by_targets
        if cls != "2xx":
            metrics[f"HTTPCode_ELB_{cls.upper()}_Count"] = max(sent - by_targets, 0)
    answered = [(r, sum(_n(r, f"hrsp_{c}") for c in ("1xx", "2xx", "3xx", "4xx", "5xx", "other"))) for r in servers]
    weight = sum(n for _, n in answered)
    metrics["TargetResponseTime"] = (round(sum(_n(r, "rtime") * n for r, n in answered) / weight / 1000, 3)
                                     if weight else None)
    groups: dict[str, dict] = {}
    for r in servers:
        group = groups.setdefault(r["pxname"][len(BACKEND_PREFIX):], {"HealthyHostCount": 0, "UnHealthyHostCount": 0})
        state = r["status"].split(" ")[0]
        if state in ("UP", "no"):  # "no check": serving, its health judged outside HAProxy
            group["HealthyHostCount"] += 1
        elif state == "DOWN":
            group["UnHealthyHostCount"] += 1
    metrics["TargetGroups"] = groups
    if "CurrConns" in info:
        metrics["ProcessConnections"] = _n(info, "CurrConns")  # every connection HAProxy holds, checks too
    return metrics


def merge(nodes: list[dict]) -> dict:
    """A load balancer's metrics from its nodes': counts summed, response time weighted by requests."""
    total: dict = {name: sum(n.get(name, 0) for n in nodes) for name in SUMMED}
    timed = [(n["TargetResponseTime"], sum(n.get(f"HTTPCode_Target_{c}XX_Count", 0) for c in "2345"))
             for n in nodes if n.get("TargetResponseTime") is not None]
    weight = sum(w for _, w in timed)
    total["TargetResponseTime"] = round(sum(t * w for t, w in timed) / weight, 3) if weight else None
    groups: dict[str, dict] = {}
    for node in nodes:
        for name, counts in node.get("TargetGroups", {}).items():
            group = groups.setdefault(name, {"HealthyHostCount": 0, "UnHealthyHostCount": 0})
            for key in group:
                group[key] += counts[key]
    total["TargetGroups"] = groups
    return total
