"""`vpclab doctor`'s pure core: the feature table, what a lab's rulesets use, the verdict,
its table, JSON and cache. The probes themselves run for real in tests/lab/test_doctor_lab.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vpclab.doctor import features as F
from vpclab.doctor.features import Result
from vpclab.doctor.needs import lab_needs, lab_rulesets
from vpclab.doctor.probes import NFT_PROBES
from vpclab.model import load_lab

REPO = Path(__file__).resolve().parents[2]
KERNEL = "6.18.44-fc-v1252"


def test_every_feature_says_what_stops_working_and_how_to_get_it():
    assert len(F.BY_NAME) == len(F.FEATURES)
    for f in F.FEATURES:
        assert f.level in (F.REQUIRED, F.OPTIONAL, F.INFO)
        assert f.without and f.how, f.name
    assert F.EVERY_LAB <= set(F.BY_NAME)
    assert {"userns", "veth", "nft:nat", "nft:ct-zone", "nft:ct-timeout", "nft:sets", "nft:maps", "conntrack",
            "af-packet", "ebpf-fast-path", "dumpcap", "haproxy"} <= set(F.BY_NAME)


@pytest.mark.parametrize("name", sorted(NFT_PROBES))
def test_each_nftables_probe_uses_exactly_the_feature_it_names(name):
    uses = F.nft_uses(NFT_PROBES[name])
    assert name in uses
    if name not in ("nft:payload-set", "nft:ttl-set"):  # a TTL write is a payload write
        # a probe refused for a header rewrite's sake would blame the wrong feature
        assert "nft:payload-set" not in uses


def test_statements_map_to_their_features():
    assert F.nft_uses("") == set()
    assert F.nft_uses("table ip t {\n}") == {"nft", "nft:table"}
    ruleset = "\n".join([
        "table ip nlb {",
        "\tct timeout tcp_350 {",
        "\tchain c {",
        "\t\tct state new ct mark set iifname map { \"e1\" : 0x10 }",
        "\t\tct original zone set 3",
        "\t\tip daddr 10.0.0.1 tcp dport 80 dnat ip to numgen random mod 2 map { 0 : 10.0.1.10 . 80, 1 : 10.0.2.10 . 80 }",
        "\t\tip saddr @sg_1 tcp dport { 80, 443 } accept",
        "\t\tct mark set jhash ip saddr mod 2 seed 0x1",
        "\t\ttcp dport 1 reject with tcp reset",
        "}",
        "table netdev x {",
        "\t\ttype filter hook ingress device \"e1\" priority filter;",
    ])
    assert F.nft_uses(ruleset) == {
        "nft", "nft:table", "nft:conntrack", "nft:ct-timeout", "nft:ct-mark", "nft:maps", "nft:ct-zone",
        "nft:ct-original-zone", "nft:nat", "nft:numgen", "nft:concat", "nft:sets", "nft:jhash", "nft:reject",
        "nft:netdev-ingress"}


def test_header_rewrites_are_told_from_conntrack_and_meta_sets():
    for rewrite in ("ip daddr 10.0.0.1 ip daddr set 169.254.64.2", "ip saddr set 10.0.0.5", "ip dscp set cs1",
                    "ether saddr set 02:00:00:00:00:01", "tcp dport set 80", "ip6 daddr set ::1"):
        assert "nft:payload-set" in F.nft_uses(f"table ip t {{\n{rewrite}\n}}"), rewrite
    for fine in ("ct mark set 0x1 meta mark set ct mark", "ct zone set 3", "ct original zone set 3",
                 "ct timeout set \"tcp_350\"", "set sg_1 { type ipv4_addr; }", "dnat to ip daddr map @m"):
        assert "nft:payload-set" not in F.nft_uses(f"table ip t {{\n{fine}\n}}"), fine
    assert F.nft_uses("table ip t {\nip ttl set 64\n}") >= {"nft:payload-set", "nft:ttl-set"}


def test_a_lab_needs_what_its_compiled_rulesets_and_engines_use():
    basic = lab_needs(load_lab(REPO / "examples" / "basic-vpc.yaml"))
    assert F.EVERY_LAB <= basic
    assert {"nft:nat", "nft:ct-timeout", "nft:sets"} <= basic  # the NAT gateway's idle timeout
    assert not basic & {"af-packet", "conntrack", "ebpf-fast-path", "dumpcap", "haproxy"}

    nlb = lab_needs(load_lab(REPO / "tests" / "lab" / "labs" / "nlb.yaml"))
    assert {"nft:nat", "nft:ct-timeout", "nft:numgen", "nft:jhash", "nft:redirect", "conntrack"} <= nlb
    assert "af-packet" not in nlb

    gwlb = lab_needs(load_lab(REPO / "examples" / "gwlb-distributed.yaml"))
    assert {"af-packet", "ethtool"} <= gwlb
    assert "ebpf-fast-path" not in gwlb  # optional: nodes fall back to the Python path

    privatelink = lab_needs(load_lab(REPO / "examples" / "privatelink-cross-zone.yaml"))
    assert {"nft:nat", "nft:ct-mark", "nft:ct-timeout", "conntrack"} <= privatelink


def test_nlb_node_rulesets_are_part_of_a_labs_rulesets():
    rulesets = lab_rulesets(load_lab(REPO / "tests" / "lab" / "labs" / "nlb.yaml"))
    nodes = [r for r in rulesets if r.startswith("table ip nlb {")]
    assert len(nodes) == 2  # one node per AZ
    assert all("dnat ip to" in r for r in nodes)  # every registered target routable
    routers = [r for r in rulesets if r.startswith("table ip nlb_fastpath {")]
    assert len(routers) == 1 and "dnat ip to" in routers[0]  # the VPC router's fast path, for both nodes
    assert "nft:ct-original-addr" in lab_needs(load_lab(REPO / "tests" / "lab" / "labs" / "nlb.yaml"))


def test_userns_blockers_name_the_setting_that_blocks():
    open_ = {"user.max_user_namespaces": "96369", "kernel.unprivileged_userns_clone": None,
             "kernel.apparmor_restrict_unprivileged_userns": None}
    assert F.userns_blockers(open_, euid=1000) == []
    debian = dict(open_, **{"kernel.unprivileged_userns_clone": "0"})
    assert F.userns_blockers(debian, euid=1000) == ["kernel.unprivileged_userns_clone=0"]
    assert F.userns_blockers(debian, euid=0) == []  # binds unprivileged users only
    ubuntu = dict(open_, **{"kernel.apparmor_restrict_unprivileged_userns": "1"})
    assert F.userns_blockers(ubuntu, euid=1000) == ["kernel.apparmor_restrict_unprivileged_userns=1"]
    none = dict(open_, **{"user.max_user_namespaces": "0"})
    assert F.userns_blockers(none, euid=0) == ["user.max_user_namespaces=0"]


def test_the_test_override_reports_named_features_missing_and_refuses_unknown_names():
    results = [Result("veth", True), Result("nft:ct-timeout", True, "cached")]
    forced = F.with_override(results, ["nft:ct-timeout"], "VPCLAB_DOCTOR_MISSING")
    assert forced == [Result("veth", True),
                      Result("nft:ct-timeout", False, "reported missing by VPCLAB_DOCTOR_MISSING")]
    with pytest.raises(ValueError, match="VPCLAB_DOCTOR_MISSING: no such feature: nft:warp"):
        F.with_override(results, ["nft:warp"], "VPCLAB_DOCTOR_MISSING")


def test_missing_keeps_the_needed_features_not_ok_in_table_order():
    results = [Result("nft:sets", False, "EPERM"), Result("veth", True), Result("userns", None, "needs userns"),
               Result("dumpcap", False)]
    assert [r.name for r in F.missing(results, {"nft:sets", "veth", "userns"})] == ["userns", "nft:sets"]


def test_only_required_features_make_doctor_fail():
    results = [Result("dumpcap", False), Result("nft:payload-set", False), Result("haproxy", False)]
    assert F.missing_required(results) == []
    assert F.missing_required(results + [Result("veth", False)]) == [Result("veth", False)]
    assert F.missing_required([Result("mntns", None, "needs userns")]) == [Result("mntns", None, "needs userns")]


def test_table_has_the_four_columns_under_the_kernel_release_and_says_why_each_is_missing():
    refused = "/dev/stdin:5:21-28: Could not process rule: Operation not permitted"
    results = [Result("nft:payload-set", False, refused), Result("haproxy", True, "2.6.12"),
               Result("userns", True), Result("veth", False, "EPERM"), Result("mntns", None, "needs userns")]
    lines = F.render_table(results, KERNEL).splitlines()
    assert lines[0] == f"kernel {KERNEL}"
    assert lines[1].split() == ["FEATURE", "STATUS", "WITHOUT", "IT", "HOW", "TO", "GET", "IT"]
    rows = {line.split()[0]: line for line in lines[2:7]}
    assert [line.split()[0] for line in lines[2:7]] == ["userns", "mntns", "veth", "haproxy", "nft:payload-set"]
    assert rows["haproxy"].split()[1:3] == ["ok:", "2.6.12"]
    assert rows["veth"].split()[1] == "missing" and rows["veth"].endswith(F.BY_NAME["veth"].how)
    assert rows["mntns"].split()[1:3] == ["not", "tried"]
    assert "missing (info)" in rows["nft:payload-set"]
    assert lines[7:] == ["", "why missing:", "  mntns: needs userns", "  veth: EPERM", f"  nft:payload-set: {refused}"]


def test_json_says_each_feature_and_which_required_ones_are_missing():
    data = F.to_json([Result("veth", False, "EPERM"), Result("dumpcap", True, "4.0")], KERNEL, 1000)
    assert json.loads(json.dumps(data)) == data
    assert data["kernel"] == KERNEL and data["uid"] == 1000
    assert data["missing_required"] == ["veth"]
    veth = data["features"][0]
    assert veth == {"name": "veth", "level": "required", "ok": False, "state": "missing", "detail": "EPERM",
                    "without": F.BY_NAME["veth"].without, "how": F.BY_NAME["veth"].how}


def test_refusal_names_each_feature_what_breaks_and_how_to_get_it():
    text = F.refusal("web", [Result("nft:ct-timeout", False, "Operation\nnot permitted")])
    assert text.splitlines() == [
        "lab web needs what this machine lacks (see `vpclab doctor`):",
        "  nft:ct-timeout: missing (Operation not permitted)",
        f"    without it: {F.BY_NAME['nft:ct-timeout'].without}",
        f"    how to get it: {F.BY_NAME['nft:ct-timeout'].how}"]


def test_refusal_and_summary_name_the_cause_and_only_count_what_it_kept_from_being_tried():
    lacking = [Result("userns", False, "unshare: No space left on device; blocked by user.max_user_namespaces=0"),
               Result("netns", None, "needs userns"), Result("veth", None, "needs userns")]
    lines = F.refusal("web", lacking).splitlines()
    assert lines[1] == "  userns: missing (unshare: No space left on device; blocked by user.max_user_namespaces=0)"
    assert lines[4:] == ["  not tried until then: netns, veth"]
    assert F.summary(lacking) == "missing required features: userns (and 2 not tried until then)"
    assert F.summary(lacking[:1]) == "missing required features: userns"


def test_cache_keeps_only_what_was_ok_on_the_same_kernel():
    text = F.encode_cache([Result("veth", True), Result("nft:sets", False), Result("userns", True)], KERNEL)
    assert F.decode_cache(text, KERNEL) == {"veth", "userns"}
    assert F.decode_cache(text, "6.1.0-18-amd64") == set()
    assert F.decode_cache("not json", KERNEL) == set()
    assert F.decode_cache(json.dumps({"kernel": KERNEL, "ok": ["veth", "warp", 3]}), KERNEL) == {"veth"}
    assert F.decode_cache(json.dumps([1, 2]), KERNEL) == set()


def test_cache_file_is_named_by_uid_and_a_sanitised_release():
    assert F.cache_name(KERNEL, 1000) == f"doctor-1000-{KERNEL}.json"
    hostile = F.cache_name("../../etc/passwd\n", 0)
    assert "/" not in hostile and "\n" not in hostile


def test_haproxy_version_is_read_from_its_banner():
    assert F.haproxy_version("HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/") == (2, 6, 12)
    assert F.haproxy_version("HA-Proxy version 1.8.19 2019/02/11") == (1, 8, 19)
    assert F.haproxy_version("nonsense") is None


def test_xt_ttl_is_optional_and_never_a_reason_to_refuse_a_lab():
    """A router without it still forwards (TTL decremented, a documented deviation)."""
    assert F.BY_NAME["xt:ttl"].level == F.OPTIONAL
    assert "xt:ttl" not in lab_needs(load_lab(REPO / "examples" / "basic-vpc.yaml"))
