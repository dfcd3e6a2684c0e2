"""The VPC router's nftables ruleset: security groups, network ACLs, source/destination check.

AWS (aws-behaviour.md §8): a security group is per ENI, allow-only, merged across
the ENI's groups and stateful; a network ACL is per subnet, at the subnet boundary
only, numbered rules lowest first, first match wins, a final deny, stateless.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from plan_routing import router_side
from vpclab.model import load_lab, load_lab_text
from vpclab.plan.compile import compile_lab

REPO = Path(__file__).resolve().parents[2]


def chains(nft: str) -> dict[str, list[str]]:
    """chain name -> its rule lines (stripped), in order; `set NAME` -> its one-line body."""
    out: dict[str, list[str]] = {}
    current = None
    for raw in nft.splitlines():
        line = raw.strip()
        if m := re.fullmatch(r"set (\S+) \{ (.*) \}", line):
            out[f"set {m[1]}"] = [m[2]]
        elif m := re.fullmatch(r"chain (\S+) \{", line):
            current = out.setdefault(m[1], [])
        elif line == "}":
            current = None
        elif current is not None:
            current.append(line)
    return out


def set_members(nft: str, sg_id: str) -> set[str]:
    body = chains(nft)[f"set {sg_id.replace('-', '_')}"][0]
    assert body.startswith("type ipv4_addr;")
    m = re.search(r"elements = \{ (.*) \}", body)
    return set(m[1].split(", ")) if m else set()


def eni_chains(nft: str, eni_id: str) -> tuple[list[str], list[str]]:
    c = chains(nft)
    key = eni_id.replace("-", "_")
    return c[f"from_{key}"], c[f"to_{key}"]


RICH = """
vpcs: {main: {CidrBlock: 10.0.0.0/16}}
subnets:
  web: {VpcId: main, CidrBlock: 10.0.1.0/24}
  app: {VpcId: main, CidrBlock: 10.0.2.0/24}
  empty: {VpcId: main, CidrBlock: 10.0.3.0/24}
internet_gateways: {igw: {VpcId: main}}
nat_gateways: {nat: {SubnetId: web}}
security_groups:
  web-sg:
    VpcId: main
    SecurityGroupIngress:
      - {IpProtocol: tcp, FromPort: 80, ToPort: 80, CidrIp: 0.0.0.0/0}
      - {IpProtocol: tcp, FromPort: 8000, ToPort: 8100, CidrIp: 10.0.0.0/16}
      - {IpProtocol: udp, FromPort: 0, ToPort: 65535, CidrIp: 192.0.2.0/24}
      - {IpProtocol: icmp, FromPort: 8, ToPort: -1, CidrIp: 0.0.0.0/0}
      - {IpProtocol: icmp, FromPort: 3, ToPort: 4, CidrIp: 0.0.0.0/0}
      - {IpProtocol: 50, CidrIp: 198.51.100.0/24}
      - {IpProtocol: -1, CidrIp: 10.0.9.0/24}
    SecurityGroupEgress:
      - {IpProtocol: tcp, FromPort: 5432, ToPort: 5432, DestinationSecurityGroupId: db-sg}
  admin-sg:
    VpcId: main
    SecurityGroupIngress:
      - {IpProtocol: tcp, FromPort: 22, ToPort: 22, SourceSecurityGroupId: bastion-sg}
  bastion-sg: {VpcId: main}
  db-sg:
    VpcId: main
    SecurityGroupIngress:
      - {IpProtocol: tcp, FromPort: 5432, ToPort: 5432, SourceSecurityGroupId: web-sg}
    SecurityGroupEgress: []
  unused-sg: {VpcId: main}
network_acls:
  app-acl:
    VpcId: main
    SubnetAssociations: [app]
    Entries:
      - {RuleNumber: 200, Protocol: -1, RuleAction: allow, CidrBlock: 0.0.0.0/0}
      - {RuleNumber: 100, Protocol: tcp, RuleAction: deny, CidrBlock: 10.0.1.0/24, PortRange: {From: 22, To: 22}}
      - {RuleNumber: 32766, Protocol: udp, RuleAction: deny, CidrBlock: 0.0.0.0/0, PortRange: {From: 53, To: 53}}
      - {RuleNumber: 150, Protocol: icmp, RuleAction: allow, CidrBlock: 0.0.0.0/0, IcmpTypeCode: {Type: 8, Code: -1}}
      - {RuleNumber: 1, Protocol: tcp, RuleAction: allow, CidrBlock: 10.0.1.10/32, PortRange: {From: 22, To: 22}}
      - {RuleNumber: 100, Protocol: tcp, RuleAction: allow, Egress: true, CidrBlock: 10.0.1.0/24, PortRange: {From: 1024, To: 65535}}
  empty-acl:
    VpcId: main
    SubnetAssociations: [empty]
instances:
  web-1: {SubnetId: web, PrivateIpAddress: 10.0.1.10, SecurityGroupIds: [web-sg, admin-sg]}
  web-2: {SubnetId: web, PrivateIpAddress: 10.0.1.11, SecurityGroupIds: [web-sg]}
  bastion: {SubnetId: web, PrivateIpAddress: 10.0.1.12, SecurityGroupIds: [bastion-sg]}
  db-1: {SubnetId: app, PrivateIpAddress: 10.0.2.10, SecurityGroupIds: [db-sg]}
  plain: {SubnetId: app, PrivateIpAddress: 10.0.2.11}
  lonely: {SubnetId: empty, PrivateIpAddress: 10.0.3.10}
"""


@cache
def rich():
    lab = load_lab_text(RICH, "lab.yaml")
    return lab, compile_lab(lab).namespace("router:main").nft


def sg(lab, name: str) -> str:
    return lab.security_groups[name].id.replace("-", "_")


def test_security_group_rules_compile_to_stateful_allow_rules():
    lab, nft = rich()
    eni = lab.instances["web-1"].eni_id
    out, into = eni_chains(nft, eni)
    stateful = "ct state established,related return"
    # Ingress: replies first (stateful), then every allow of both groups (merged), then drop.
    assert into[into.index(stateful):] == [
        stateful,
        "ip saddr 0.0.0.0/0 tcp dport 80 return",
        "ip saddr 10.0.0.0/16 tcp dport 8000-8100 return",
        "ip saddr 192.0.2.0/24 meta l4proto udp return",  # the whole port range: any udp
        "ip saddr 0.0.0.0/0 icmp type 8 return",  # every code of type 8
        "ip saddr 0.0.0.0/0 icmp type 3 icmp code 4 return",
        "ip saddr 198.51.100.0/24 meta l4proto 50 return",  # another protocol: ports ignored
        "ip saddr 10.0.9.0/24 return",  # -1: all traffic
        f"ip saddr @{sg(lab, 'bastion-sg')} tcp dport 22 return",  # admin-sg, merged in
        f'drop comment "ingress not allowed for {eni}"',
    ]
    # Egress: web-sg's one rule plus admin-sg's default allow-all, merged.
    assert out[out.index(stateful):] == [
        stateful,
        f"ip daddr @{sg(lab, 'db-sg')} tcp dport 5432 return",
        "ip daddr 0.0.0.0/0 return",
        f'drop comment "egress not allowed for {eni}"',
    ]
    # Allow-only: the single drop of a group check is the last line; everything else returns.
    for chain in (out, into):
        checks = chain[chain.index(stateful):]
        assert all(line.endswith(" return") for line in checks[:-1])
    # New group with no ingress: nothing in (but replies); `SecurityGroupEgress: []`: nothing out.
    _, bastion_in = eni_chains(nft, lab.instances["bastion"].eni_id)
    assert bastion_in[bastion_in.index(stateful):] == [
        stateful, f'drop comment "ingress not allowed for {lab.instances["bastion"].eni_id}"']
    db_out, _ = eni_chains(nft, lab.instances["db-1"].eni_id)
    assert db_out[db_out.index(stateful):] == [
        stateful, f'drop comment "egress not allowed for {lab.instances["db-1"].eni_id}"']
    # Every ENI's chains hang off the forward hook by its router interface, both ways.
    wiring = compile_lab(lab)
    forward = chains(nft)["forward"]
    assert forward[0] == "type filter hook forward priority filter; policy accept;"
    # leaving one ENI first, then entering the other: one verdict map lookup each
    assert forward[1].startswith("iifname vmap { ") and forward[2].startswith("oifname vmap { ")
    for name, inst in lab.instances.items():
        ifname = router_side(wiring, name)[1]
        key = inst.eni_id.replace("-", "_")
        assert f'"{ifname}" : jump from_{key}' in forward[1]
        assert f'"{ifname}" : jump to_{key}' in forward[2]


def test_referenced_security_group_becomes_a_set_of_member_ips():
    lab, nft = rich()
    assert set_members(nft, lab.security_groups["web-sg"].id) == {"10.0.1.10", "10.0.1.11"}
    assert set_members(nft, lab.security_groups["admin-sg"].id) == {"10.0.1.10"}
    assert set_members(nft, lab.security_groups["bastion-sg"].id) == {"10.0.1.12"}
    assert set_members(nft, lab.security_groups["db-sg"].id) == {"10.0.2.10"}
    assert set_members(nft, lab.security_groups["unused-sg"].id) == set()
    # The default group: every instance given no group, and it admits its own members.
    default = lab.security_groups["main-default"]
    assert set_members(nft, default.id) == {"10.0.2.11", "10.0.3.10"}
    _, plain_in = eni_chains(nft, lab.instances["plain"].eni_id)
    assert f"ip saddr @{sg(lab, 'main-default')} return" in plain_in
    # db-sg admits web-sg's members by set, not by address.
    _, db_in = eni_chains(nft, lab.instances["db-1"].eni_id)
    assert f"ip saddr @{sg(lab, 'web-sg')} tcp dport 5432 return" in db_in
    # The NAT gateway is in no group, and every set a rule names is declared.
    assert str(lab.nat_gateways["nat"].private_ip) not in "".join(
        v[0] for k, v in chains(nft).items() if k.startswith("set "))
    used = set(re.findall(r"@(\w+)", nft))
    assert used and used <= {k[4:] for k in chains(nft) if k.startswith("set ")}


def test_network_acl_rules_are_ordered_by_number_with_a_final_deny():
    lab, nft = rich()
    c = chains(nft)
    acl = lab.network_acls["app-acl"].id.replace("-", "_")
    assert c[f"{acl}_ingress"] == [
        'ip saddr 10.0.1.10/32 tcp dport 22 return comment "rule 1"',
        'ip saddr 10.0.1.0/24 tcp dport 22 drop comment "rule 100"',
        'ip saddr 0.0.0.0/0 icmp type 8 return comment "rule 150"',
        'ip saddr 0.0.0.0/0 return comment "rule 200"',
        'ip saddr 0.0.0.0/0 udp dport 53 drop comment "rule 32766"',
        "drop",  # AWS's final `*` rule
    ]
    assert c[f"{acl}_egress"] == [
        'ip daddr 10.0.1.0/24 tcp dport 1024-65535 return comment "rule 100"', "drop"]
    # A custom ACL with no entries denies everything; the default ACL allows everything.
    empty = lab.network_acls["empty-acl"].id.replace("-", "_")
    assert c[f"{empty}_ingress"] == c[f"{empty}_egress"] == ["drop"]
    default = lab.network_acl_of_subnet("web").id.replace("-", "_")
    assert c[f"{default}_ingress"] == ['ip saddr 0.0.0.0/0 return comment "rule 100"', "drop"]
    assert c[f"{default}_egress"] == ['ip daddr 0.0.0.0/0 return comment "rule 100"', "drop"]
    # At the subnet boundary only, and stateless: before the security groups' conntrack check.
    for name, subnet_acl, cidr in (("db-1", acl, "10.0.2.0/24"), ("lonely", empty, "10.0.3.0/24")):
        out, into = eni_chains(nft, lab.instances[name].eni_id)
        assert out[0] == f"ip daddr != {cidr} jump {subnet_acl}_egress"
        assert f"ip saddr != {cidr} jump {subnet_acl}_ingress" in into
        assert into.index(f"ip saddr != {cidr} jump {subnet_acl}_ingress") < into.index(
            "ct state established,related return")
    # An ACL whose first rule allows everything (the default one) would return every packet:
    # no packet jumps to it.
    web_out, web_in = eni_chains(nft, lab.instances["web-1"].eni_id)
    assert not any(" jump acl_" in line for line in web_out + web_in)
    assert web_out[0] == web_in[1] == "ct state established,related return"
    # Nor does the NAT gateway's (no groups either): nothing to check, so its ENI is not even looked up.
    nat_out, nat_in = eni_chains(nft, lab.nat_gateways["nat"].eni_id)
    assert nat_out == nat_in == []
    nat_if = next(line for line in c["forward"] if "iifname vmap" in line)
    assert lab.nat_gateways["nat"].eni_id.replace("-", "_") not in " ".join(c["forward"])
    assert lab.instances["web-1"].eni_id.replace("-", "_") in nat_if


SDC = """
vpcs: {main: {CidrBlock: 10.0.0.0/16}}
subnets:
  app: {VpcId: main, CidrBlock: 10.0.1.0/24}
  inspect: {VpcId: main, CidrBlock: 10.0.3.0/24}
internet_gateways: {igw: {VpcId: main}}
nat_gateways: {nat: {SubnetId: inspect}}
instances:
  app-1: {SubnetId: app, PrivateIpAddress: 10.0.1.10}
  mbox: {SubnetId: inspect, PrivateIpAddress: 10.0.3.10, SourceDestCheck: false}
"""


def test_source_dest_check_off_drops_no_spoof_check():
    lab = load_lab_text(SDC, "lab.yaml")
    wiring = compile_lab(lab)
    nft = wiring.namespace("router:main").nft
    pre = chains(nft)["prerouting"]
    app_if, mbox_if, nat_if = (router_side(wiring, ns)[1] for ns in ("app-1", "mbox", "nat:nat"))
    assert pre[0] == "type filter hook prerouting priority raw; policy accept;"
    # The check on: from its veth, only its own source address; to it, only its own address.
    # One lookup, however many ENIs: a checked ENI's own address passes, nothing else from it does.
    assert pre[1:4] == ["meta nfproto ipv6 drop",
                        f'iifname . ip saddr vmap {{ "{app_if}" . 10.0.1.10 : return }}',
                        f'iifname {{ "{app_if}" }} drop comment "source check"']
    # From any ENI, never the router's own addresses: the kernel no longer checks that itself
    # (accept_local spares every forwarded packet a second route lookup); the router's own
    # traffic (over lo) is spared
    assert pre[4:] == ['iifname != "lo" ip saddr { 10.0.0.2, 169.254.169.253, 10.0.3.1, 10.0.1.1, 169.254.0.1 } drop comment '
                       '"martian: the router\'s own address"']
    assert ("ipv4/conf/all/accept_local", "1") in wiring.namespace("router:main").sysctls
    _, app_in = eni_chains(nft, lab.instances["app-1"].eni_id)
    assert app_in[0] == 'ip daddr != 10.0.1.10 drop comment "destination check"'
    # The check off (the middlebox) and the NAT gateway (which forwards by nature): neither.
    for ifname, eni in ((mbox_if, lab.instances["mbox"].eni_id), (nat_if, lab.nat_gateways["nat"].eni_id)):
        assert not any(f'"{ifname}"' in line for line in pre)
        _, into = eni_chains(nft, eni)
        assert not any("destination check" in line for line in into)
    assert ("ipv4/ip_forward", "1") in wiring.namespace("mbox").sysctls


def test_nat_gateway_and_gwlb_enis_have_no_security_groups():
    lab = load_lab(REPO / "examples" / "gwlb-distributed.yaml")
    wiring = compile_lab(lab)
    nft = wiring.namespace("router:main").nft
    managed = [lab.nat_gateways["nat-a"].eni_id] + [n.eni_id for n in lab.load_balancers["gwlb"].nodes]
    subnet_of = {lab.nat_gateways["nat-a"].eni_id: lab.nat_gateways["nat-a"].subnet,
                 **{n.eni_id: n.subnet for n in lab.load_balancers["gwlb"].nodes}}
    assert len(managed) == 3
    for eni in managed:
        for chain in eni_chains(nft, eni):
            assert not any("ct state" in line or "not allowed" in line for line in chain), eni
            # the subnet's ACL still applies, unless it allows everything anyway
            assert any(" jump acl_" in line for line in chain) or lab.network_acl_of_subnet(subnet_of[eni]).default
    managed_ips = {str(lab.nat_gateways["nat-a"].private_ip)}
    managed_ips |= {str(node.private_ip) for node in lab.load_balancers["gwlb"].nodes}
    for group in lab.security_groups.values():
        if group.vpc == "main":
            assert not set_members(nft, group.id) & managed_ips
    # Instances do have their groups.
    for inst in lab.instances.values():
        assert any("ct state" in line for line in eni_chains(nft, inst.eni_id)[1])


# --- nft -c: the kernel's own parser, in an unprivileged user+net namespace ---


@cache
def nft_checker() -> list[str] | None:
    if not (shutil.which("nft") and shutil.which("unshare")):
        return None
    cmd = ["unshare", "--user", "--map-root-user", "--net", "nft", "-c", "-f"]
    try:
        probe = subprocess.run(cmd + ["/dev/null"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return cmd if probe.returncode == 0 else None


def rulesets():
    labs = [(p.name, load_lab(p)) for p in sorted((REPO / "examples").glob("*.yaml"))]
    labs += [("rich", load_lab_text(RICH, "lab.yaml")), ("sdc", load_lab_text(SDC, "lab.yaml"))]
    return [pytest.param(ns.nft, id=f"{name}:{ns.name}")
            for name, lab in labs for ns in compile_lab(lab).namespaces if ns.nft]


@pytest.mark.parametrize("ruleset", rulesets())
def test_plan_nft_rulesets_pass_nft_check(ruleset, tmp_path):
    cmd = nft_checker()
    if cmd is None:
        pytest.skip("nft -c needs nft and unprivileged user namespaces")
    path = tmp_path / "ruleset.nft"
    path.write_text(ruleset)
    result = subprocess.run(cmd + [str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_nat_gateway_idles_tcp_out_after_350_seconds_from_its_nat_chain():
    wiring = compile_lab(load_lab_text(SDC, "lab.yaml"))
    c = chains(wiring.namespace("nat:nat").nft)
    # set on the connection conntrack has just made (a rule before conntrack, at priority raw, is
    # ignored by the kernel), in the chain only a connection's first packet sees
    assert c["postrouting"][1].startswith('meta l4proto tcp ct timeout set "tcp_idle"')
    assert "raw" not in c and "policy = { established: 350 }" in wiring.namespace("nat:nat").nft
