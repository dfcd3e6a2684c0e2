"""The pure core of `vpclab doctor`: the feature table, what uses what, the verdict, its
rendering and its cache file. No I/O here; `probes` tries each feature for real."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

# required: a lab that uses it cannot come up without it; optional: a lab comes up, one
# command or speed-up is lost; info: nothing in vpclab depends on it (shown to explain).
REQUIRED, OPTIONAL, INFO = "required", "optional", "info"


@dataclass(frozen=True)
class Feature:
    name: str
    level: str
    without: str  # what stops working without it
    how: str      # how to get it


_KERNEL = "a kernel built with "
FEATURES: tuple[Feature, ...] = (
    Feature("userns", REQUIRED, "every lab: each runs in its own user namespace (rootless or as root)",
            "allow user namespaces: user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1, "
            "kernel.apparmor_restrict_unprivileged_userns=0 (sysctl -w, as root)"),
    Feature("mntns", REQUIRED, "every lab (instances' own resolv.conf and hosts)", _KERNEL + "CONFIG_NAMESPACES"),
    Feature("pidns", REQUIRED, "every lab (its daemon is PID 1, so nothing outlives it)", _KERNEL + "CONFIG_PID_NS"),
    Feature("netns", REQUIRED, "every lab", _KERNEL + "CONFIG_NET_NS"),
    Feature("utsns", REQUIRED, "every lab (instances' hostnames)", _KERNEL + "CONFIG_UTS_NS"),
    Feature("ipcns", REQUIRED, "every lab", _KERNEL + "CONFIG_IPC_NS"),
    Feature("veth", REQUIRED, "every lab: each ENI is a veth into its VPC router", _KERNEL + "CONFIG_VETH"),
    Feature("ip", REQUIRED, "every lab (links, addresses, routes, rules)", "apt-get install iproute2"),
    Feature("nsenter", REQUIRED, "vpclab exec and capture, instances' commands", "apt-get install util-linux"),
    Feature("nft", REQUIRED, "every lab (security groups, network ACLs, NAT)", "apt-get install nftables"),
    Feature("nft:table", REQUIRED, "every ruleset", _KERNEL + "CONFIG_NF_TABLES, CONFIG_NF_TABLES_IPV4"),
    Feature("nft:conntrack", REQUIRED, "stateful security groups, every NAT and load balancer",
            _KERNEL + "CONFIG_NF_CONNTRACK, CONFIG_NFT_CT"),
    Feature("nft:nat", REQUIRED, "internet and NAT gateways, NLBs (dnat, snat)", _KERNEL + "CONFIG_NFT_NAT"),
    Feature("nft:masquerade", REQUIRED, "masquerade rules", _KERNEL + "CONFIG_NFT_MASQ"),
    Feature("nft:redirect", REQUIRED, "NLB listeners with Proxy Protocol v2 (to the local relay)",
            _KERNEL + "CONFIG_NFT_REDIR"),
    Feature("nft:reject", REQUIRED, "NLBs' TCP reset for unknown connections", _KERNEL + "CONFIG_NFT_REJECT"),
    Feature("nft:ct-mark", REQUIRED, "replies routed back through NLB nodes and endpoints",
            _KERNEL + "CONFIG_NFT_CT"),
    Feature("nft:ct-zone", REQUIRED, "interface endpoints (colliding consumer CIDRs kept apart)",
            _KERNEL + "CONFIG_NF_CONNTRACK_ZONES"),
    Feature("nft:ct-original-zone", REQUIRED, "interface endpoints (a zone per direction)",
            _KERNEL + "CONFIG_NF_CONNTRACK_ZONES, nftables 0.9.1+"),
    Feature("nft:ct-original-addr", REQUIRED, "the VPC router's NLB fast path (its checks by the node's address)",
            "nftables 0.9.1+ on " + _KERNEL + "CONFIG_NFT_CT"),
    Feature("nft:ct-timeout", REQUIRED, "AWS's idle timeouts on NLBs and NAT gateways (350 s TCP, 120 s UDP)",
            _KERNEL + "CONFIG_NF_CONNTRACK_TIMEOUT, CONFIG_NFT_CT"),
    Feature("nft:sets", REQUIRED, "security groups referencing groups, network ACLs", _KERNEL + "CONFIG_NF_TABLES_SET"),
    Feature("nft:maps", REQUIRED, "elastic IPs, NLB target choice, per-ENI dispatch (map, vmap)",
            _KERNEL + "CONFIG_NF_TABLES_SET"),
    Feature("nft:concat", REQUIRED, "source/destination check, NLB targets (address . port)",
            "nftables 0.9+ on " + _KERNEL + "CONFIG_NF_TABLES_SET"),
    Feature("nft:jhash", REQUIRED, "NLB UDP flow hashing and source-IP stickiness", _KERNEL + "CONFIG_NFT_HASH"),
    Feature("nft:maxseg-set", REQUIRED, "transit gateways (TCP MSS clamped to their 8,500-byte MTU)",
            _KERNEL + "CONFIG_NFT_EXTHDR, CONFIG_NFT_RT"),
    Feature("nft:numgen", REQUIRED, "NLB TCP target choice", _KERNEL + "CONFIG_NFT_NUMGEN"),
    Feature("nft:netdev-ingress", REQUIRED, "chains hooked on one link's ingress (endpoints, GWLB nodes)",
            _KERNEL + "CONFIG_NF_TABLES_NETDEV"),
    Feature("nft:netdev-egress", REQUIRED, "chains hooked on one link's egress (endpoints)",
            _KERNEL + "CONFIG_NETFILTER_EGRESS (5.16+)"),
    Feature("conntrack", REQUIRED, "NLBs reset a failed target's connections as AWS does",
            "apt-get install conntrack"),
    Feature("ethtool", REQUIRED, "GWLB endpoints (tx checksum offload off on relayed links)",
            "apt-get install ethtool"),
    Feature("af-packet", REQUIRED, "GWLB nodes (raw packets on endpoint links)", _KERNEL + "CONFIG_PACKET"),
    Feature("ip-transparent", REQUIRED, "NLB Proxy Protocol v2 with client IP preservation",
            "IP_TRANSPARENT (CAP_NET_ADMIN in the lab's namespace)"),
    Feature("ebpf-fast-path", OPTIONAL, "the GWLB eBPF fast path (nodes fall back to the Python data path)",
            "run as root; apt-get install clang libbpf1; python3 -m vpclab.engines.gwlb.fastpath build"),
    Feature("clang", OPTIONAL, "building the GWLB fast path (fastpath.bpf.o)", "apt-get install clang libbpf-dev"),
    Feature("dumpcap", OPTIONAL, "vpclab capture", "apt-get install tshark (or wireshark-common)"),
    Feature("tcpdump", OPTIONAL, "vpclab capture printing to the terminal", "apt-get install tcpdump"),
    Feature("tshark", OPTIONAL, "decoding captures (tests read pcaps with it)", "apt-get install tshark"),
    Feature("xt:ttl", OPTIONAL, "TTL kept inside a VPC (routers decrement it, as docs/deviations.md says)",
            "apt-get install iptables; " + _KERNEL + "CONFIG_NFT_COMPAT, CONFIG_NETFILTER_XT_TARGET_TTL, "
            "CONFIG_NETFILTER_XT_MATCH_HL"),
    Feature("iptables:nat", REQUIRED, "hairpin GWLB appliances (Appliance kind hairpin: iptables DNAT, MASQUERADE)",
            "apt-get install iptables (iptables-nft); " + _KERNEL + "CONFIG_NFT_NAT, CONFIG_NFT_MASQ"),
    Feature("haproxy", OPTIONAL, "Application Load Balancers (HAProxy 2.6+)", "apt-get install haproxy"),
    Feature("nft:payload-set", INFO, "nothing should: header rewrites in nftables (`ip daddr set`); no lab may use them",
            "refused in user namespaces by some kernels: use conntrack NAT instead"),
    Feature("nft:ttl-set", INFO, "nothing yet: a candidate to keep TTL untouched inside a VPC",
            "refused in user namespaces by some kernels (a payload set)"),
    Feature("tc:matchall", INFO, "nothing yet: a candidate to keep TTL untouched inside a VPC",
            _KERNEL + "CONFIG_NET_CLS_MATCHALL (modules cannot be loaded from a user namespace)"),
    Feature("tc:pedit", INFO, "nothing yet: a candidate to keep TTL untouched inside a VPC",
            _KERNEL + "CONFIG_NET_ACT_PEDIT (modules cannot be loaded from a user namespace)"),
)
BY_NAME = {f.name: f for f in FEATURES}

# What every lab needs, whatever its file holds.
EVERY_LAB = frozenset({"userns", "mntns", "pidns", "netns", "utsns", "ipcns", "veth", "ip", "nsenter"})

# Statements in an nftables ruleset and the feature each one uses.
_NFT_USES: tuple[tuple[str, re.Pattern], ...] = tuple((name, re.compile(pattern, re.M)) for name, pattern in (
    ("nft:table", r"^\s*table "),
    ("nft:conntrack", r"\bct (state|status|direction|mark|zone|timeout|original|reply)\b"),
    ("nft:nat", r"\b(dnat|snat)\b"),
    ("nft:masquerade", r"\bmasquerade\b"),
    ("nft:redirect", r"\bredirect\b"),
    ("nft:reject", r"\breject\b"),
    ("nft:ct-mark", r"\bct mark\b"),
    ("nft:ct-zone", r"\bct (original |reply )?zone\b"),
    ("nft:ct-original-zone", r"\bct (original|reply) zone\b"),
    ("nft:ct-original-addr", r"\bct (original|reply) ip [sd]addr\b"),
    ("nft:ct-timeout", r"\bct timeout\b"),
    ("nft:sets", r"@\w|^\s*set \w+ \{|\{ [^{}:]*, [^{}:]* \}"),
    ("nft:maps", r"\bv?map\b"),
    ("nft:concat", r"\S \. \S"),
    ("nft:jhash", r"\bjhash\b"),
    ("nft:numgen", r"\bnumgen\b"),
    ("nft:maxseg-set", r"\btcp option maxseg size set\b"),
    ("nft:netdev-ingress", r"\bhook ingress\b"),
    ("nft:netdev-egress", r"\bhook egress\b"),
    # a header field followed by `set`: a payload write (`ct mark set`, `meta mark set` are not)
    ("nft:payload-set", r"\b(ip6?|ether|vlan|arp|tcp|udp|udplite|sctp|dccp|th|icmp|icmpv6)\s+[a-z-]+\s+set\b"),
    ("nft:ttl-set", r"\bip ttl set\b|\bip6 hoplimit set\b"),
))


def nft_uses(ruleset: str) -> set[str]:
    """The features an nftables ruleset uses (and the `nft` command that loads it)."""
    if not ruleset.strip():
        return set()
    return {"nft"} | {name for name, pattern in _NFT_USES if pattern.search(ruleset)}


@dataclass(frozen=True)
class Result:
    """A feature as probed: ok True/False, or None when not tried (its prerequisite is missing)."""
    name: str
    ok: bool | None
    detail: str = ""

    @property
    def feature(self) -> Feature:
        return BY_NAME[self.name]

    @property
    def state(self) -> str:
        return "ok" if self.ok else "missing" if self.ok is False else "not tried"


def not_tried(name: str, missing: str) -> Result:
    return Result(name, None, f"needs {missing}")


def userns_blockers(sysctls: Mapping[str, str | None], euid: int) -> list[str]:
    """The settings that stop user namespaces, from their values (None: the knob does not
    exist on this kernel). Debian's unprivileged_userns_clone and Ubuntu's AppArmor knob
    bind unprivileged users only; max_user_namespaces binds everyone."""
    found = []
    if sysctls.get("user.max_user_namespaces") == "0":
        found.append("user.max_user_namespaces=0")
    if euid != 0:
        if sysctls.get("kernel.unprivileged_userns_clone") == "0":
            found.append("kernel.unprivileged_userns_clone=0")
        if sysctls.get("kernel.apparmor_restrict_unprivileged_userns") == "1":
            found.append("kernel.apparmor_restrict_unprivileged_userns=1")
    return found


def haproxy_version(line: str) -> tuple[int, ...] | None:
    """(2, 6, 12) from `haproxy -v`'s first line, or None."""
    m = re.search(r"HA-?Proxy version (\d+)\.(\d+)(?:\.(\d+))?", line)
    return tuple(int(x) for x in m.groups() if x is not None) if m else None


def with_override(results: Iterable[Result], missing: Iterable[str], source: str) -> list[Result]:
    """`results` with the features named in `missing` reported missing (for tests: `source`
    says which setting made them so)."""
    forced = set(missing)
    unknown = forced - set(BY_NAME)
    if unknown:
        raise ValueError(f"{source}: no such feature: {', '.join(sorted(unknown))}")
    return [Result(r.name, False, f"reported missing by {source}") if r.name in forced else r for r in results]


def missing(results: Iterable[Result], needed: Iterable[str]) -> list[Result]:
    """The results of `needed` features that are not ok, in table order."""
    wanted = set(needed)
    return [r for r in sorted(results, key=_order) if r.name in wanted and not r.ok]


def missing_required(results: Iterable[Result]) -> list[Result]:
    return [r for r in results if r.feature.level == REQUIRED and not r.ok]


def _order(result: Result) -> int:
    return list(BY_NAME).index(result.name)


def _status(result: Result, width: int = 40) -> str:
    """`ok` with what was found (a version), or `missing` and its level; why in the notes."""
    if result.ok:
        text = " ".join(f"ok: {result.detail}".split()) if result.detail else "ok"
        return text if len(text) <= width else text[:width - 3] + "..."
    return result.state if result.feature.level == REQUIRED else f"{result.state} ({result.feature.level})"


def render_table(results: Iterable[Result], kernel: str) -> str:
    """The kernel, one row per feature, then what the kernel or host answered for each one missing."""
    ordered = sorted(results, key=_order)
    rows = [["FEATURE", "STATUS", "WITHOUT IT", "HOW TO GET IT"]]
    rows += [[r.name, _status(r), r.feature.without, r.feature.how] for r in ordered]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"kernel {kernel}"]
    lines += ["  ".join([*(c.ljust(w) for c, w in zip(row[:3], widths)), row[3]]).rstrip() for row in rows]
    notes = [f"  {r.name}: {' '.join(r.detail.split())}" for r in ordered if not r.ok and r.detail]
    if notes:
        lines += ["", "why missing:", *notes]
    return "\n".join(lines)


def to_json(results: Iterable[Result], kernel: str, uid: int) -> dict:
    ordered = sorted(results, key=_order)
    return {"kernel": kernel, "uid": uid,
            "features": [{"name": r.name, "level": r.feature.level, "ok": r.ok, "state": r.state,
                          "detail": r.detail, "without": r.feature.without, "how": r.feature.how}
                         for r in ordered],
            "missing_required": [r.name for r in missing_required(ordered)]}


def refusal(lab: str, lacking: Iterable[Result]) -> str:
    """Why `vpclab up` refuses a lab, in doctor's words: each feature found missing, then those
    not tried because of it."""
    lacking = list(lacking)
    lines = [f"lab {lab} needs what this machine lacks (see `vpclab doctor`):"]
    for r in lacking:
        if r.ok is None:
            continue
        lines.append(f"  {r.name}: {r.state}" + (f" ({' '.join(r.detail.split())})" if r.detail else ""))
        lines.append(f"    without it: {r.feature.without}")
        lines.append(f"    how to get it: {r.feature.how}")
    untried = [r.name for r in lacking if r.ok is None]
    if untried:
        lines.append(f"  not tried until then: {', '.join(untried)}")
    return "\n".join(lines)


def summary(lacking: Iterable[Result]) -> str:
    """One line for the required features doctor found missing (and those it could not try)."""
    lacking = list(lacking)
    found = [r.name for r in lacking if r.ok is False]
    untried = [r.name for r in lacking if r.ok is None]
    return f"missing required features: {', '.join(found)}" + (
        f" (and {len(untried)} not tried until then)" if untried else "")


# --- the cache: one file per kernel release and uid ------------------------------------

def cache_name(kernel: str, uid: int) -> str:
    """A file name for the cache of `kernel` (the release, as uname says it) and `uid`."""
    return f"doctor-{uid}-{re.sub(r'[^A-Za-z0-9._-]', '_', kernel)[:100]}.json"


def encode_cache(results: Iterable[Result], kernel: str) -> str:
    """Only what was found ok is kept: a missing feature is tried again next time."""
    return json.dumps({"kernel": kernel, "ok": sorted(r.name for r in results if r.ok)})


def decode_cache(text: str, kernel: str) -> set[str]:
    """The features known ok on `kernel`; nothing from a file that is unreadable or of another kernel."""
    try:
        data = json.loads(text)
        if data.get("kernel") != kernel:
            return set()
        return {name for name in data["ok"] if isinstance(name, str) and name in BY_NAME}
    except (ValueError, AttributeError, KeyError, TypeError):
        return set()

