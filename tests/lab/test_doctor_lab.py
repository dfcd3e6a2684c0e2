"""`vpclab doctor` run for real, and `vpclab up` refusing a lab before building anything of it."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import ROOT
from vpclab.doctor import features

pytestmark = pytest.mark.lab
BASIC = ROOT / "examples" / "basic-vpc.yaml"
# What this project's CI machine has (install.sh installs the commands): every row vpclab's
# labs use. The eBPF fast path, and what nothing may depend on, vary by user and kernel.
MUST_BE_OK = features.EVERY_LAB | {
    "nft", "nft:table", "nft:conntrack", "nft:nat", "nft:masquerade", "nft:redirect", "nft:reject", "nft:ct-mark",
    "nft:ct-zone", "nft:ct-original-zone", "nft:ct-timeout", "nft:sets", "nft:maps", "nft:concat", "nft:jhash",
    "nft:numgen", "nft:netdev-ingress", "nft:netdev-egress", "conntrack", "ethtool", "af-packet",
    "ip-transparent", "dumpcap", "tcpdump", "tshark", "haproxy"}


def vpclab(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vpclab", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def host_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def lab_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line]


def test_doctor_finds_every_feature_the_labs_use_here_without_touching_the_host(lab_env):
    before = host_links()
    result = vpclab(lab_env, "doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kernel"] == os.uname().release and report["uid"] == os.getuid()
    rows = {row["name"]: row for row in report["features"]}
    assert set(rows) == set(features.BY_NAME)  # every feature tried, none left out
    assert {name for name in MUST_BE_OK if not rows[name]["ok"]} == set()
    assert report["missing_required"] == []
    assert rows["haproxy"]["detail"].startswith("2.")  # its version
    for name in ("nft:payload-set", "nft:ttl-set", "tc:matchall", "tc:pedit"):  # informational: said either way
        assert rows[name]["level"] == "info" and isinstance(rows[name]["ok"], bool)
        assert rows[name]["ok"] or rows[name]["detail"]  # a refusal says what the kernel answered
    # its veth lived in its own sandbox, gone with it
    assert "vpclabdoc" not in host_links() and host_links() == before


def test_doctor_prints_its_table_and_fails_when_a_required_feature_is_missing(lab_env):
    env = dict(lab_env, VPCLAB_DOCTOR_MISSING="veth")
    result = vpclab(env, "doctor")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"kernel {os.uname().release}"
    assert lines[1].split()[:2] == ["FEATURE", "STATUS"]
    veth = next(line for line in lines if line.startswith("veth "))
    assert veth.split()[1] == "missing"
    assert "  veth: reported missing by VPCLAB_DOCTOR_MISSING" in lines
    assert features.BY_NAME["veth"].how in veth
    assert "missing required features: veth" in result.stderr
    optional = vpclab(dict(lab_env, VPCLAB_DOCTOR_MISSING="dumpcap"), "doctor")
    assert optional.returncode == 0  # an optional feature missing is said, not fatal


def test_up_refuses_a_lab_needing_a_missing_feature_before_building_anything(lab_env, vpclab_home):
    env = dict(lab_env, VPCLAB_DOCTOR_MISSING="nft:ct-timeout")  # the NAT gateway's idle timeout
    result = vpclab(env, "up", str(BASIC), "--name", "refused", timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines()[:4] == [
        "error: lab refused needs what this machine lacks (see `vpclab doctor`):",
        "  nft:ct-timeout: missing (reported missing by VPCLAB_DOCTOR_MISSING)",
        f"    without it: {features.BY_NAME['nft:ct-timeout'].without}",
        f"    how to get it: {features.BY_NAME['nft:ct-timeout'].how}"]
    assert "sandbox" not in result.stderr and "rolled back" not in result.stderr  # refused, not rolled back
    assert not (vpclab_home / "labs").exists()
    assert lab_processes(str(vpclab_home)) == []

    # What was probed is cached per kernel and uid, privately; a second refusal probes nothing.
    cache = vpclab_home / "doctor" / features.cache_name(os.uname().release, os.getuid())
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700 and stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert "nft:ct-timeout" in json.loads(cache.read_text())["ok"]  # the override is not a finding
    written = cache.stat().st_mtime_ns
    again = vpclab(env, "up", str(BASIC), "--name", "refused", timeout=120)
    assert again.returncode == 1 and "nft:ct-timeout: missing" in again.stderr
    assert cache.stat().st_mtime_ns == written


def test_up_brings_a_lab_up_when_only_a_feature_it_does_not_use_is_missing(up):
    lab = up(BASIC, "unneeded", extra_env={"VPCLAB_DOCTOR_MISSING": "af-packet,haproxy"})  # GWLB, ALB only
    assert lab.curl("client", "http://100.64.1.11/").startswith("web-1 ")


# In a user namespace of our own, user.max_user_namespaces is that namespace's own limit:
# setting it to 0 there blocks nested user namespaces for what runs inside, as the host
# sysctl would, without touching the host.
BLOCKED = "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\""


def in_blocked_userns(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", BLOCKED, "sh", sys.executable,
                           "-m", "vpclab", *args], env=env, capture_output=True, text=True, timeout=300)


def test_doctor_names_the_sysctl_that_blocks_user_namespaces(lab_env):
    result = in_blocked_userns(lab_env, "doctor", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    rows = {row["name"]: row for row in report["features"]}
    assert rows["userns"]["ok"] is False
    assert rows["userns"]["detail"].endswith("blocked by user.max_user_namespaces=0")
    assert rows["netns"] == dict(rows["netns"], ok=None, state="not tried", detail="needs userns")
    assert report["missing_required"][0] == "userns"


def test_up_refuses_in_doctors_words_where_user_namespaces_are_blocked(lab_env, vpclab_home):
    result = in_blocked_userns(lab_env, "up", str(BASIC), "--name", "blocked")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[:2] == ["error: lab blocked needs what this machine lacks (see `vpclab doctor`):",
                         "  userns: missing (unshare: No space left on device; "
                         "blocked by user.max_user_namespaces=0)"]
    assert lines[-1].startswith("  not tried until then: mntns, pidns, netns")
    assert "rolled back" not in result.stderr
    assert not (vpclab_home / "labs").exists()
    assert lab_processes(str(vpclab_home)) == []
