"""EC2's packet filters, compiled into each VPC router's nftables ruleset.

Security groups (stateful, per ENI), network ACLs (stateless, at the subnet boundary),
the source/destination check and the router's own addresses; where a VPC has the NLB
fast path, the checks of connections the router dispatches for a node (`plan.common`).
The package (`plan.ec2`) wires the routers that load this ruleset.
"""
from __future__ import annotations

from ipaddress import IPv4Address

from vpclab.model.resources import Lab, NaclEntry, NetworkAcl, SgRule, Vpc
from vpclab.plan.common import NLB_FAST_MARK, Eni, InterfaceLink, nlb_fast_path_chains

NLB_REPLY_MARK = 0x100  # + node index: replies to preserved-client connections go back to their node


def _match_protocol(protocol: str, ports: tuple[int | None, int | None], icmp: tuple[int | None, int | None]) -> str:
    """nft match for a protocol and its destination ports or ICMP type/code."""
    if protocol == "-1":
        return ""
    if protocol in ("tcp", "udp"):
        lo, hi = ports
        if lo is None or (lo == 0 and hi == 65535):
            return f"meta l4proto {protocol}"
        return f"{protocol} dport {lo}" if lo == hi else f"{protocol} dport {lo}-{hi}"
    if protocol == "icmp":
        icmp_type, code = icmp
        if icmp_type is None or icmp_type == -1:
            return "meta l4proto icmp"
        if code is None or code == -1:
            return f"icmp type {icmp_type}"
        return f"icmp type {icmp_type} icmp code {code}"
    return f"meta l4proto {protocol}"


def sg_rule_match(rule: SgRule, direction: str, group_ids: dict[str, str]) -> str:
    """The nft match of one security group permission (direction: ingress or egress)."""
    field = "saddr" if direction == "ingress" else "daddr"
    if rule.group is not None:
        peer = f"ip {field} @{_set_name(group_ids[rule.group])}"
    else:
        peer = f"ip {field} {rule.cidr}"
    proto = _match_protocol(rule.protocol, (rule.from_port, rule.to_port), (rule.from_port, rule.to_port))
    return " ".join(p for p in (peer, proto) if p)


def nacl_entry_match(entry: NaclEntry) -> str:
    field = "daddr" if entry.egress else "saddr"
    proto = _match_protocol(entry.protocol, (entry.port_from, entry.port_to), (entry.icmp_type, entry.icmp_code))
    return " ".join(p for p in (f"ip {field} {entry.cidr}", proto) if p)


def _set_name(sg_id: str) -> str:
    return sg_id.replace("-", "_")


def _nacl_chain(acl: NetworkAcl, egress: bool) -> list[str]:
    """Stateless: numbered rules, lowest first, first match wins, then deny."""
    name = f"{_set_name(acl.id)}_{'egress' if egress else 'ingress'}"
    lines = [f"\tchain {name} {{"]
    for entry in sorted((e for e in acl.entries if e.egress == egress), key=lambda e: e.rule_number):
        verdict = "return" if entry.action == "allow" else "drop"
        lines.append(f"\t\t{nacl_entry_match(entry)} {verdict} comment \"rule {entry.rule_number}\"")
    lines += ["\t\tdrop", "\t}"]
    return lines


def router_ruleset(lab: Lab, vpc: Vpc, enis: list[Eni], own: tuple[str, ...] = (), nlb_fast_path: bool = False,
                   provided: list[InterfaceLink] = ()) -> str:
    """The router's table; `own` are its addresses, which no packet may come from (ACCEPT_LOCAL).

    With `nlb_fast_path`, the router may itself NAT connections to NLB nodes (the daemon's
    `nlb_fastpath` table, engines.nlb), and checks them as if they had crossed the node: the
    client's egress and the node's ingress against the node's address before any DNAT, the
    node's egress and the target's ingress after SNAT (postrouting), both ways, each packet
    (network ACLs are stateless); the forward chain leaves them alone. `provided`: the interface
    endpoint links whose connections it dispatches for this VPC's nodes in the same way."""
    groups = {n: sg for n, sg in lab.security_groups.items() if sg.vpc == vpc.name}
    group_ids = {n: sg.id for n, sg in groups.items()}
    members: dict[str, list[IPv4Address]] = {n: [] for n in groups}
    for eni in enis:
        for g in eni.security_groups:
            members[g].extend(eni.ips)
    acls = [a for a in lab.network_acls.values() if a.vpc == vpc.name]

    out = ["table inet vpc {"]
    for name, sg in groups.items():
        elements = ", ".join(str(ip) for ip in members[name])
        body = f"type ipv4_addr; elements = {{ {elements} }}" if elements else "type ipv4_addr;"
        out.append(f"\tset {_set_name(sg.id)} {{ {body} }}")
    out += [
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority raw; policy accept;",
        "\t\tmeta nfproto ipv6 drop",
    ]
    checked = [e for e in enis if e.source_dest_check]
    if checked:  # one lookup, however many ENIs the VPC has: its own address from a checked ENI passes
        pairs = ", ".join(f"\"{e.ifname}\" . {ip} : return" for e in checked for ip in e.ips)
        names = ", ".join(f"\"{e.ifname}\"" for e in checked)
        out += [f"\t\tiifname . ip saddr vmap {{ {pairs} }}",
                f"\t\tiifname {{ {names} }} drop comment \"source check\""]
    if own:  # only what a checked ENI did not send gets here
        # (from lo it is the router's own traffic: the VPC resolver asked from the router, daemon/ipsync.py)
        out.append(f"\t\tiifname != \"lo\" ip saddr {{ {', '.join(own)} }} drop "
                   "comment \"martian: the router's own address\"")
    out.append("\t}")
    nlb_nodes = nlb_node_enis(enis)
    eni_chains = []
    for eni in enis:
        acl = lab.network_acl_of_subnet(eni.subnet.name)
        cidr = eni.subnet.cidr
        sgs = [groups[g] for g in eni.security_groups]
        # Leaving the ENI: subnet ACL egress at the boundary, then the groups' egress.
        leaving = [] if _allows_all(acl, egress=True) else [
            f"\t\tip daddr != {cidr} jump {_set_name(acl.id)}_egress"]
        leaving += _sg_checks(sgs, "egress", group_ids, eni)
        own_ips = str(eni.ip) if not eni.secondary_ips else "{ " + ", ".join(map(str, eni.ips)) + " }"
        entering = [f"\t\tip daddr != {own_ips} drop comment \"destination check\""] if eni.source_dest_check else []
        if not _allows_all(acl, egress=False):
            entering.append(f"\t\tip saddr != {cidr} jump {_set_name(acl.id)}_ingress")
        entering += _sg_checks(sgs, "ingress", group_ids, eni)
        eni_chains.append((eni, leaving, entering))
    # one lookup each way, however many ENIs the VPC has; none for an ENI with nothing to check
    jumps_from = [f"\"{e.ifname}\" : jump from_{e.chain}" for e, leaving, _ in eni_chains if leaving]
    jumps_to = [f"\"{e.ifname}\" : jump to_{e.chain}" for e, _, entering in eni_chains if entering]
    fast = nlb_fast_path and bool(nlb_nodes)
    if nlb_nodes:
        marks = ", ".join(f"\"{eni.ifname}\" : {NLB_REPLY_MARK + i:#x}" for i, eni in enumerate(nlb_nodes))
        out += ["\tchain nlb_replies {", "\t\ttype filter hook prerouting priority mangle; policy accept;"]
        if fast:
            nodes = ", ".join(str(e.ip) for e in nlb_nodes)
            out += [f"\t\tct mark & {NLB_FAST_MARK:#x} == {NLB_FAST_MARK:#x} goto nlb_fast_pre",
                    # a connection's first packet, before the router or the node dispatches it
                    f"\t\tct state new ip daddr {{ {nodes} }} jump nlb_fast_pre"]
        out += [f"\t\tct state new ct mark set iifname map {{ {marks} }}",
                "\t\tct direction reply ct mark != 0 meta mark set ct mark", "\t}"]
    if fast:
        node_of = {e.owner_ns: e for e in nlb_nodes}
        endpoints = [(link.router_mark, node_of[link.node_ns]) for link in provided if link.node_ns in node_of]
        out += nlb_fast_path_chains(nlb_nodes, eni_chains, jumps_from, jumps_to, endpoints)
    out += ["\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;"]
    if fast:
        out.append(f"\t\tct mark & {NLB_FAST_MARK:#x} == {NLB_FAST_MARK:#x} accept comment \"NLB fast path: checked "
                   "before DNAT and after SNAT\"")
    if jumps_from:
        out.append("\t\tiifname vmap { " + ", ".join(jumps_from) + " }")
    if jumps_to:
        out.append("\t\toifname vmap { " + ", ".join(jumps_to) + " }")
    out.append("\t}")
    for acl in acls:
        out += _nacl_chain(acl, egress=False) + _nacl_chain(acl, egress=True)
    for eni, leaving, entering in eni_chains:
        out += [f"\tchain from_{eni.chain} {{", *leaving, "\t}", f"\tchain to_{eni.chain} {{", *entering, "\t}"]
    out.append("}")
    return "\n".join(out) + "\n"


def _allows_all(acl: NetworkAcl, egress: bool) -> bool:
    """Whether an ACL's first rule that way allows every packet (the default ACL): jumping to it
    would only cost every packet a lookup."""
    entries = sorted((e for e in acl.entries if e.egress == egress), key=lambda e: e.rule_number)
    return bool(entries) and entries[0].action == "allow" and entries[0].protocol == "-1" and \
        entries[0].cidr.prefixlen == 0


def nlb_node_enis(enis: list[Eni]) -> list[Eni]:
    """NLB nodes' own ENIs (not the interface endpoint ENIs that also end in a node)."""
    return [e for e in enis if e.owner_ns.startswith("nlb:") and e.owner_ifname == "eth0"]


def _sg_checks(sgs, direction: str, group_ids: dict[str, str], eni: Eni) -> list[str]:
    """Stateful, allow-only, merged across the ENI's groups."""
    if not sgs:  # an ENI AWS manages (NAT gateway): no security groups
        return []
    lines = ["\t\tct state established,related return"]
    for sg in sgs:
        for rule in sg.ingress if direction == "ingress" else sg.egress:
            lines.append(f"\t\t{sg_rule_match(rule, direction, group_ids)} return")
    lines.append(f"\t\tdrop comment \"{direction} not allowed for {eni.id}\"")
    return lines
