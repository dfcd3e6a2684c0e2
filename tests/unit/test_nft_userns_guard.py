"""A guard that does not depend on the kernel CI runs on: every nftables ruleset vpclab
produces, for every lab we ship or test, uses only statements a user namespace accepts.

Kernel 6.18 refuses in a user namespace (EPERM), in every family (ip, inet, bridge, netdev)
and hook: every payload `set`, i.e. any header field rewritten (`ip daddr set`, `ip ttl set`,
`ip dscp set`, `tcp dport set`, `th dport set`, `udp checksum set`, `icmp type set`,
`ip6 hoplimit set`, `ether saddr set`, `vlan id set`, raw `@nh,64,8 set`). Another kernel accepted
them, so CI passed while a stock machine failed. Not built there at all (ENOENT even as root):
`queue` (CONFIG_NFT_QUEUE) and flowtables, `flow add` (CONFIG_NF_FLOW_TABLE). Accepted in a user
namespace there: `dnat`, `snat`, `masquerade`, `redirect`, `ct zone set` (with a direction; only
in prerouting and output, a netdev chain gets EPROTO),
`ct mark set`, `ct label set`, `ct timeout set`, `ct helper`, `notrack`, `meta mark set`,
`meta priority set`, `tcp option maxseg size set` (an extension header, not a payload),
`tproxy`, `synproxy` (input and forward), `reject`, `dup`, netdev `fwd`, `log`.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from vpclab.engines.nlb import ruleset as nlb
from vpclab.engines.gwlb.sockets import kernel_ip_drop
from vpclab.model import load_lab_text
from vpclab.plan.common import endpoint_links
from vpclab.plan.compile import compile_lab
from vpclab.plan.elbv2 import nlb_node_config

REPO = Path(__file__).resolve().parents[2]
# every protocol whose header fields nft can address as a payload (nft describe)
PAYLOAD = ("ether|vlan|arp|ip|ip6|icmp|icmpv6|igmp|tcp|udp|udplite|sctp|dccp|th|ah|esp|comp|gre|gretap|geneve|"
           "vxlan|ipip|ip6ip|ipv4|dst|hbh|rt|rt0|rt2|srh|frag|mh")
REFUSED = {
    "payload set (a header rewrite)": re.compile(rf"\b(?:{PAYLOAD})\s+[a-z][\w-]*\s+set\b"),
    "raw payload set": re.compile(r"@(?:ll|nh|th|ih),\d+,\d+\s+set\b"),
    "queue (not in the kernel)": re.compile(r"(?:^|\s)queue\b(?!\s*\{)"),
    "flowtable (not in the kernel)": re.compile(r"\bflowtable\b|\bflow\s+(?:add|offload)\b"),
}


def refused(ruleset: str) -> list[str]:
    """Each line of `ruleset` with a statement a user namespace may refuse, and why."""
    found = []
    for line in ruleset.splitlines():
        code = re.sub(r'"[^"]*"', '""', line.split("#")[0])  # quoted names and comments say nothing
        found += [f"{why}: {line.strip()}" for why, pattern in REFUSED.items() if pattern.search(code)]
    return found


# --- every lab: shipped, tested, benchmarked, documented ---------------------------------------

def _embedded(path: Path) -> list[str]:
    """Whole labs written as string constants in a Python file."""
    return [node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.lstrip().startswith("lab:") and "\nvpcs:" in node.value]


# placeholders a lab test fills in, with every value it uses
PLACEHOLDERS = {"SOURCE_DEST_CHECK": ("true", "false")}


def _filled(where: str, text: str) -> list[tuple[str, object]]:
    for placeholder, values in PLACEHOLDERS.items():
        if placeholder in text:
            return [lab for value in values for lab in _filled(f"{where}[{value}]", text.replace(placeholder, value))]
    return [(where, load_lab_text(text, "lab.yaml"))]


def _labs() -> list[tuple[str, object]]:
    labs = []
    for path in sorted([*REPO.glob("examples/**/*.yaml"), *REPO.glob("tests/**/*.yaml")]):
        labs += _filled(str(path.relative_to(REPO)), path.read_text())
    doc = (REPO / "docs" / "lab-file.md").read_text()
    labs += [(f"docs/lab-file.md#{i}", load_lab_text(block, "lab-file.md"))
             for i, block in enumerate(b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if b.startswith("lab:"))]
    for path in sorted([*REPO.glob("tests/**/*.py"), *REPO.glob("bench/*.py")]):
        labs += [(f"{path.relative_to(REPO)}#{i}", load_lab_text(text, "embedded.yaml"))
                 for i, text in enumerate(_embedded(path))]
    return labs


LABS = _labs()


def _variants(config: nlb.NodeConfig) -> list[nlb.NodeConfig]:
    """The node as compiled, and with every listener attribute a live change can switch on,
    and with its endpoints pending acceptance."""
    from dataclasses import replace
    every = tuple(replace(li, preserve_client_ip=True, proxy_protocol_v2=True, source_ip_stickiness=True,
                          relay_port=li.relay_port or 20000) for li in config.listeners)
    both = tuple(replace(li, protocol="TCP_UDP") for li in config.listeners)
    pending = tuple(replace(e, available=False) for e in config.endpoints)
    return [config, replace(config, listeners=every), replace(config, listeners=both),
            replace(config, endpoints=pending)]


def rulesets(lab) -> list[tuple[str, str]]:
    """(where, ruleset) for every nftables ruleset the lab makes: the fabric's (routers, NAT and
    internet gateways), each NLB node's with its targets healthy (and with none), and each GWLB
    node's drop on its endpoint veths."""
    out = [(ns.name, ns.nft) for ns in compile_lab(lab).namespaces if ns.nft]
    for lb in lab.load_balancers.values():
        if lb.type != "network":
            continue
        for node in lb.nodes:
            config = nlb.NodeConfig.from_dict(nlb_node_config(lab, lb.name, node.az))
            views = {name: [nlb.TargetView(t.id, str(t.ip), t.port, t.az, nlb.HEALTHY) for t in group.targets]
                     for name, group in lab.target_groups.items()}
            for variant in _variants(config):
                routable = nlb.listener_routes(variant, views)
                for update in (False, True):
                    out.append((f"nlb {lb.name} {node.az}", nlb.node_ruleset(variant, routable, update)))
                out.append((f"nlb {lb.name} {node.az} without targets", nlb.node_ruleset(variant, {})))
                for update in (False, True):  # its VPC router's part: its clients' and its endpoints' dispatch
                    out.append((f"nlb router {lb.name} {node.az}",
                                nlb.router_fastpath_ruleset([(variant, routable)], update)))
    out += [(f"gwlb endpoint {link.ifname}", kernel_ip_drop(link.ifname)) for link in endpoint_links(lab)]
    return out


def test_the_guard_sees_every_kind_of_lab():
    names = {where.split("#")[0] for where, _ in LABS}
    assert "examples/privatelink-cross-zone.yaml" in names and "bench/nlb.py" in names
    kinds = {ns for _, lab in LABS for ns, _ in rulesets(lab)}
    assert any(k.startswith("nlb ") for k in kinds) and any(k.startswith("gwlb endpoint") for k in kinds)
    assert any(k.startswith("router") for k in kinds)


@pytest.mark.parametrize("where,lab", LABS, ids=[w for w, _ in LABS])
def test_no_ruleset_uses_a_statement_a_user_namespace_may_refuse(where, lab):
    for ns, ruleset in rulesets(lab):
        assert not refused(ruleset), f"{where}, {ns}:\n" + "\n".join(refused(ruleset))


# --- the guard itself ----------------------------------------------------------------------------

def test_the_old_endpoint_rewrite_is_refused():
    # what engines.nlb put on each endpoint veth before: stateless header rewrites in netdev chains
    old = ('table netdev nlb {\n\tchain in_pl_consumer_a {\n'
           '\t\ttype filter hook ingress device "pl-consumer-a" priority filter; policy accept;\n'
           '\t\tip daddr 10.11.0.5 ip daddr set 169.254.64.2 comment "vpce-0a94b37605bf28d35"\n'
           '\t\tip daddr != 169.254.64.2 drop\n\t}\n\tchain out_pl_consumer_a {\n'
           '\t\ttype filter hook egress device "pl-consumer-a" priority filter; policy accept;\n'
           '\t\tip saddr 169.254.64.2 ip saddr set 10.11.0.5\n\t}\n}\n')
    assert [r.split(":")[0] for r in refused(old)] == ["payload set (a header rewrite)"] * 2


def test_the_old_endpoint_rewrite_put_back_in_the_engine_fails_the_guard(monkeypatch):
    lab = dict(LABS)["examples/privatelink-cross-zone.yaml"]
    real = nlb.node_ruleset

    def old_node_ruleset(config, routable, update=False):
        rewrite = "".join(f"table netdev nlb {{ chain in_{i} {{ type filter hook ingress device \"{e.ifname}\" "
                          f"priority filter; ip daddr {e.eni_ip} ip daddr set {e.link_ip}; }} }}\n"
                          for i, e in enumerate(config.endpoints))
        return real(config, routable, update) + rewrite

    monkeypatch.setattr(nlb, "node_ruleset", old_node_ruleset)
    assert any(refused(ruleset) for _, ruleset in rulesets(lab))


@pytest.mark.parametrize("statement", [
    "ip ttl set 5", "ip dscp set cs1", "ip6 hoplimit set 1", "tcp dport set 8080", "meta l4proto tcp th dport set 1",
    "udp checksum set 0", "icmp type set echo-reply", "ether saddr set 00:11:22:33:44:55", "vlan id set 5",
    "@nh,64,8 set 5", "queue num 1 bypass", "ip protocol tcp flow add @f", "flowtable f { hook ingress priority 0; }",
])
def test_refused_statements_are_caught(statement):
    assert refused(f"\t\t{statement}")


@pytest.mark.parametrize("statement", [
    'ct original zone set iifname map { "pl-a" : 1 }', "ct mark set iifname map { \"pl-a\" : 0x100 }",
    "meta mark set ct mark", 'ct timeout set "tcp_350"', "ip daddr 10.0.0.5 tcp dport 80 dnat ip to 10.0.1.10",
    "meta mark 0x1 snat ip to 10.0.0.5", "tcp dport 80 redirect to :20000", "meta priority set 1:2",
    "tcp flags syn tcp option maxseg size set 1400", 'ip daddr 10.0.0.5 drop comment "ip daddr set is refused"',
    "set allowed { type ipv4_addr; }", "ip saddr @allowed accept", "ip daddr { 10.0.0.1, 10.0.0.2 } accept",
    "tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale 7",
])
def test_accepted_statements_pass(statement):
    assert not refused(f"\t\t{statement}")
