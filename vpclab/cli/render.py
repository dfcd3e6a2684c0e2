"""What the CLI prints of a running lab: `vpclab status` and other tables (shared by main and demo)."""
from __future__ import annotations

import time


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _fast_path(counters: dict) -> str:
    """A GWLB node's eBPF fast path: `on (N flows)`, `off`, or `-` where there is none to have."""
    fast = counters.get("io", {}).get("fast_path")
    if not isinstance(fast, dict):
        return "-"
    return "off" if "off" in fast else f"on ({fast.get('flows', 0)} flows)"


def _alb_lines(load_balancers: list[dict]) -> str:
    """Each ALB's name, listeners and metrics, and where its CA and access log are."""
    out = ""
    for lb in load_balancers:
        if lb["type"] != "application":
            continue
        listeners = ", ".join(f"{li['protocol']}:{li['port']}" for li in lb["listeners"])
        out += f"\n{lb['name']}: {lb['dns_name']} ({lb['scheme']}; {listeners})"
        m = lb.get("metrics")
        if m:
            out += (f"\n  RequestCount {m.get('RequestCount', 0)}  HTTPCode_Target_2XX_Count "
                    f"{m.get('HTTPCode_Target_2XX_Count', 0)}  HTTPCode_ELB_5XX_Count {m.get('HTTPCode_ELB_5XX_Count', 0)}"
                    f"  TargetResponseTime {m.get('TargetResponseTime', '-')}  ActiveConnectionCount "
                    f"{m.get('ActiveConnectionCount', 0)}")
        if lb.get("ca_certificate"):
            out += f"\n  HTTPS certificates from the lab CA: curl --cacert {lb['ca_certificate']}"
        if lb.get("access_log"):
            out += f"\n  access log: {lb['access_log']}"
    return "\n" + out if out else ""


def render_status(status: dict) -> str:
    lab = status["lab"]
    rows = [["NAME", "KIND", "ID", "SUBNET", "AZ", "PRIVATE IP", "PUBLIC IP"]]
    for i in status["instances"]:
        rows.append([i["name"], i["role"], i["id"], i["subnet"], i["az"], i["private_ip"], i["public_ip"] or "-"])
    for n in status["nat_gateways"]:
        rows.append([n["name"], "nat-gateway", n["id"], n["subnet"], "-", n["private_ip"], n["public_ip"]])
    for h in status["internet_hosts"]:
        rows.append([h["name"], "internet", "-", "-", "-", "-", h["ip"]])
    out = f"lab {lab['name']} ({lab['region']}, account {lab['account']})\n" + table(rows)
    if status["load_balancers"]:
        rows = [["LOAD BALANCER", "TYPE", "AZ", "NODE IP", "FLOWS", "NEW FLOWS", "DROPS", "FAST PATH"]]
        for lb in status["load_balancers"]:
            for n in lb["nodes"]:
                c = n.get("counters", {})
                if lb["type"] == "application":  # no flows: its request metrics follow the table
                    rows.append([lb["name"], lb["type"], n["az"], n["private_ip"], "-", "-", "-", "-"])
                    continue
                rows.append([lb["name"], lb["type"], n["az"], n["private_ip"], str(c.get("ActiveFlowCount", "-")),
                             str(c.get("NewFlowCount", "-")), str(sum(c.get("drops", {}).values())),
                             _fast_path(c)])
        out += "\n\n" + table(rows)
        out += _alb_lines(status["load_balancers"])
    targets = [(g, t) for g in status["target_groups"] for t in g["targets"]]
    if targets:
        rows = [["TARGET GROUP", "TARGET", "NAME", "IP", "AZ", "STATE", "REASON"]]
        rows += [[g["name"], t["id"], t["name"] or "-", t["ip"] or "-", t["az"] or "-", t["state"] or "-",
                  t["reason"] or "-"] for g, t in targets]
        out += "\n\n" + table(rows)
    if status["vpc_endpoints"]:
        rows = [["ENDPOINT", "ID", "TYPE", "VPC", "SUBNET", "STATE", "SERVICE"]]
        rows += [[e["name"], e["id"], e["type"], e["vpc"], ",".join(n["subnet"] for n in e["enis"]), e["state"],
                  e["service_name"]] for e in status["vpc_endpoints"]]
        out += "\n\n" + table(rows)
    if status.get("vpc_endpoint_services"):
        rows = [["ENDPOINT SERVICE", "ID", "TYPE", "SERVICE NAME"]]
        rows += [[s["name"], s["id"], s["type"], s["service_name"]] for s in status["vpc_endpoint_services"]]
        out += "\n\n" + table(rows)
    for tgw in status.get("transit_gateways", []):
        tables = {t["id"]: t["name"] for t in tgw["route_tables"]}
        rows = [["TRANSIT GATEWAY ATTACHMENT", "ID", "VPC", "AZS", "APPLIANCE MODE", "ROUTE TABLE"]]
        rows += [[a["name"], a["id"], a["vpc"], ",".join(e["az"] for e in a["enis"]), a["appliance_mode_support"],
                  tables.get(a["route_table"], "-")] for a in tgw["attachments"]]
        out += f"\n\n{tgw['name']}: {tgw['id']} (ASN {tgw['amazon_side_asn']})\n" + table(rows)
        names = {a["id"]: a["name"] for a in tgw["attachments"]}
        rows = [["ROUTE TABLE", "ID", "ASSOCIATIONS", "PROPAGATIONS", "ROUTES"]]
        rows += [[t["name"], t["id"], ",".join(names[i] for i in t["associations"]) or "-",
                  ",".join(names[i] for i in t["propagations"]) or "-", str(len(t["routes"]))]
                 for t in tgw["route_tables"]]
        out += "\n" + table(rows) + "\n  (vpclab routes ROUTE-TABLE lists a table's routes)"
    if status.get("lambda_functions"):
        out += "\n\n" + _function_lines(status["lambda_functions"])
    if status.get("engines"):
        rows = [["ENGINE", "KIND", "PID", "STATE", "RESTARTS", "LAST EXIT"]]
        rows += [[e["name"], e["kind"], str(e["pid"] or "-"), e["state"], str(e["restarts"]),
                  e["last_exit"] or "-"] for e in status["engines"]]
        out += "\n\n" + table(rows)
    return out


def _function_lines(functions: list[dict]) -> str:
    """The IP-sync functions: each one's last run, what it did, its missed-run counters, its metric."""
    rows = [["FUNCTION", "TARGET GROUP", "RUNS", "LAST RUN", "REGISTERED", "DEREGISTERED", "MISSED RUNS",
             "LoadBalancerIPCount"]]
    for fn in functions:
        last = fn["last_run"] or {}
        when = time.strftime("%H:%M:%S", time.localtime(last["at"])) if last else "never"
        if last and not last["ok"]:
            when += " (failed)"
        missed = ",".join(f"{ip}={n}" for ip, n in sorted(fn["missed_runs"].items())) or "-"
        rows.append([fn["name"], fn["target_group"], str(fn["runs"]), when,
                     ",".join(last.get("registered", ())) or "-", ",".join(last.get("deregistered", ())) or "-",
                     missed, str(last.get("LoadBalancerIPCount", "-"))])
    return table(rows)
