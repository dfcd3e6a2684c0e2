"""What the CLI prints of a running lab: `vpclab status` and other tables (shared by main and demo)."""
from __future__ import annotations


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _fast_path(counters: dict) -> str:
    """A GWLB node's eBPF fast path: `on (N flows)`, `off`, or `-` where there is none to have."""
    fast = counters.get("io", {}).get("fast_path")
    if not isinstance(fast, dict):
        return "-"
    return "off" if "off" in fast else f"on ({fast.get('flows', 0)} flows)"


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
                rows.append([lb["name"], lb["type"], n["az"], n["private_ip"], str(c.get("ActiveFlowCount", "-")),
                             str(c.get("NewFlowCount", "-")), str(sum(c.get("drops", {}).values())),
                             _fast_path(c)])
        out += "\n\n" + table(rows)
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
    if status.get("engines"):
        rows = [["ENGINE", "KIND", "PID", "STATE", "RESTARTS", "LAST EXIT"]]
        rows += [[e["name"], e["kind"], str(e["pid"] or "-"), e["state"], str(e["restarts"]),
                  e["last_exit"] or "-"] for e in status["engines"]]
        out += "\n\n" + table(rows)
    return out
