"""Where the compiled VPC router sends a packet: AWS route-table behaviour (aws-behaviour.md §8).

Each test loads a small lab, compiles it, and evaluates the router namespace's
`ip -batch` lines with plan_routing's policy-routing evaluator. `where()` names
the namespace the router hands the packet to, or says "local", "drop" or
"unreachable".
"""
from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from plan_routing import PolicyRouter, router_of, router_side, where
from vpclab.model import LabFileError, accept_vpc_endpoint_connections, load_lab, load_lab_text
from vpclab.plan.compile import compile_lab
from vpclab.plan.ec2 import ENI_TABLE

REPO = Path(__file__).resolve().parents[2]
INTERNET = "8.8.8.8"


def compile_text(text: str):
    lab = load_lab_text(text, "lab.yaml")
    return lab, compile_lab(lab)


def router_of_lines(wiring, vpc: str) -> tuple[str, ...]:
    return wiring.namespace(f"router:{vpc}").ip_batch


def table_of(wiring, ns: str) -> int:
    """The AWS table the router picks for what `ns` sends."""
    rns, iif = router_side(wiring, ns)
    # (the other rule for this interface keeps traffic within its subnet off the route table)
    tables = [r.table for r in PolicyRouter.from_batch(wiring.namespace(rns).ip_batch).rules
              if r.iif == iif and r.to is None]
    assert len(tables) == 1
    return tables[0]


# Three subnets: one with its own table, one with another, one left to the main table.
TABLES = """
vpcs: {main: {CidrBlock: 10.0.0.0/16}}
subnets:
  public: {VpcId: main, CidrBlock: 10.0.1.0/24}
  private: {VpcId: main, CidrBlock: 10.0.2.0/24}
  plain: {VpcId: main, CidrBlock: 10.0.3.0/24}
internet_gateways: {igw: {VpcId: main}}
nat_gateways: {nat: {SubnetId: public}}
route_tables:
  public-rt:
    VpcId: main
    SubnetAssociations: [public]
    Routes: [{DestinationCidrBlock: 0.0.0.0/0, GatewayId: igw}]
  private-rt:
    VpcId: main
    SubnetAssociations: [private]
    Routes: [{DestinationCidrBlock: 0.0.0.0/0, NatGatewayId: nat}]
MAIN_TABLE
instances:
  pub-1: {SubnetId: public, PrivateIpAddress: 10.0.1.10}
  priv-1: {SubnetId: private, PrivateIpAddress: 10.0.2.10}
  plain-1: {SubnetId: plain, PrivateIpAddress: 10.0.3.10}
  proxy: {SubnetId: public, PrivateIpAddress: 10.0.1.20, SourceDestCheck: false}
"""
EXPLICIT_MAIN = """
  main-rt:
    VpcId: main
    Main: true
    Routes: [{DestinationCidrBlock: 0.0.0.0/0, InstanceId: proxy}]
"""


def test_subnet_uses_its_associated_route_table_else_the_main_table():
    lab, wiring = compile_text(TABLES.replace("MAIN_TABLE", EXPLICIT_MAIN))
    assert where(wiring, "pub-1", INTERNET) == "igw:igw"
    assert where(wiring, "proxy", INTERNET) == "igw:igw"
    assert where(wiring, "nat:nat", INTERNET) == "igw:igw"  # a NAT gateway follows its subnet's table too
    assert where(wiring, "priv-1", INTERNET) == "nat:nat"
    assert where(wiring, "plain-1", INTERNET) == "proxy"  # no association: the main table
    assert table_of(wiring, "pub-1") == table_of(wiring, "proxy") == table_of(wiring, "nat:nat")
    assert len({table_of(wiring, ns) for ns in ("pub-1", "priv-1", "plain-1")}) == 3

    # Without a Main: true table, the implicit main table has only the local route.
    lab, wiring = compile_text(TABLES.replace("MAIN_TABLE", ""))
    assert lab.route_table_of_subnet("plain").routes == (lab.route_table_of_subnet("plain").routes[0],)
    assert where(wiring, "plain-1", INTERNET) == "drop"
    assert where(wiring, "plain-1", "10.0.2.10") == "priv-1"
    assert where(wiring, "priv-1", INTERNET) == "nat:nat"


LPM = """
vpcs: {main: {CidrBlock: 10.0.0.0/16}}
subnets:
  public: {VpcId: main, CidrBlock: 10.0.1.0/24}
  app: {VpcId: main, CidrBlock: 10.0.2.0/24}
internet_gateways: {igw: {VpcId: main}}
nat_gateways: {nat: {SubnetId: public}}
route_tables:
  public-rt:
    VpcId: main
    SubnetAssociations: [public]
    Routes: [{DestinationCidrBlock: 0.0.0.0/0, GatewayId: igw}]
  app-rt:
    VpcId: main
    SubnetAssociations: [app]
    Routes:
      - {DestinationCidrBlock: 192.168.1.7/32, NatGatewayId: nat}
      - {DestinationCidrBlock: 0.0.0.0/0, NatGatewayId: nat}
      - {DestinationCidrBlock: 192.168.1.0/24, GatewayId: igw}
      - {DestinationCidrBlock: 192.168.0.0/16, InstanceId: proxy}
      - {DestinationCidrBlock: 10.0.0.0/8, InstanceId: proxy}
instances:
  app-1: {SubnetId: app, PrivateIpAddress: 10.0.2.10}
  pub-1: {SubnetId: public, PrivateIpAddress: 10.0.1.10}
  proxy: {SubnetId: public, PrivateIpAddress: 10.0.1.20, SourceDestCheck: false}
"""


@pytest.mark.parametrize("dst, expected", [
    ("192.168.1.7", "nat:nat"),  # /32
    ("192.168.1.8", "igw:igw"),  # /24
    ("192.168.2.1", "proxy"),  # /16
    ("10.1.0.1", "proxy"),  # /8
    ("10.0.1.10", "pub-1"),  # the local route /16 is longer than 10.0.0.0/8
    ("172.16.0.1", "nat:nat"),  # /0
])
def test_longest_prefix_match_picks_the_most_specific_route(dst, expected):
    _, wiring = compile_text(LPM)
    assert where(wiring, "app-1", dst) == expected  # whatever order the file lists them in


def test_local_route_covers_the_vpc_cidr_and_reaches_the_eni_directly():
    lab, wiring = compile_text(TABLES.replace("MAIN_TABLE", EXPLICIT_MAIN))
    everyone = {"pub-1": "10.0.1.10", "priv-1": "10.0.2.10", "plain-1": "10.0.3.10", "proxy": "10.0.1.20",
                "nat:nat": str(lab.nat_gateways["nat"].private_ip)}
    for src in everyone:  # from every table, to every ENI, in its subnet or another
        for dst_ns, dst in everyone.items():
            assert where(wiring, src, dst) == dst_ns, (src, dst)
    # Directly: straight out of the destination's veth, no gateway in between.
    _, iif = router_side(wiring, "priv-1")
    decision = router_of(wiring, "main").route(iif, "10.0.3.10")
    assert (decision.dev, decision.via, decision.table) == (router_side(wiring, "plain-1")[1], None, ENI_TABLE)
    # Every AWS table holds the local route, compiled as a throw of exactly the VPC CIDR.
    for rt in lab.route_tables.values():
        assert rt.routes[0].target_kind == "local"
    tables = {r.table for r in router_of(wiring, "main").rules if r.table not in (None, ENI_TABLE)}
    assert tables and all(f"route add throw 10.0.0.0/16 table {t}" in router_of_lines(wiring, "main")
                          for t in tables)
    # The router's own addresses (subnet .1, the resolver at base+2) are the router's.
    assert where(wiring, "pub-1", "10.0.3.1") == where(wiring, "priv-1", "10.0.0.2") == "local"


MIDDLEBOX = """
vpcs:
  main: {CidrBlock: 10.0.0.0/16}
subnets:
  app: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.1.0/24}
  db: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.2.0/24}
  inspect: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.3.0/24}
route_tables:
  app-rt:
    VpcId: main
    SubnetAssociations: [app]
    Routes:
      - {DestinationCidrBlock: 10.0.2.0/24, TARGET}
security_groups:
  open:
    VpcId: main
    SecurityGroupIngress:
      - {IpProtocol: -1, CidrIp: 10.0.0.0/16}
instances:
  app-1: {SubnetId: app, PrivateIpAddress: 10.0.1.10, SecurityGroupIds: [open]}
  app-2: {SubnetId: app, PrivateIpAddress: 10.0.1.11, SecurityGroupIds: [open]}
  db-1: {SubnetId: db, PrivateIpAddress: 10.0.2.10, SecurityGroupIds: [open]}
  mbox: {SubnetId: inspect, PrivateIpAddress: 10.0.3.10, SecurityGroupIds: [open], SourceDestCheck: false}
"""


def middlebox_targets() -> list[str]:
    eni = load_lab_text(MIDDLEBOX.replace("TARGET", "InstanceId: mbox"), "lab.yaml").instances["mbox"].eni_id
    return ["InstanceId: mbox", "NetworkInterfaceId: mbox", f"NetworkInterfaceId: {eni}"]


@pytest.mark.parametrize("target", middlebox_targets())
def test_route_more_specific_than_local_to_a_middlebox_wins(target):
    lab, wiring = compile_text(MIDDLEBOX.replace("TARGET", target))
    assert lab.instances["mbox"].source_dest_check is False
    assert where(wiring, "app-1", "10.0.2.10") == "mbox"  # 10.0.2.0/24 beats local 10.0.0.0/16
    assert where(wiring, "app-1", "10.0.2.99") == "mbox"  # the whole subnet, used or not
    # The middlebox's own subnet uses the main table: local, so what it forwards reaches db-1.
    assert where(wiring, "mbox", "10.0.2.10") == "db-1"
    # Only the associated table is steered: the reply, and other subnets, take local.
    assert where(wiring, "db-1", "10.0.1.10") == "app-1"
    assert where(wiring, "app-1", "10.0.3.10") == "mbox"  # the middlebox itself, by local
    assert where(wiring, "app-1", "10.0.1.11") == "app-2"
    # The middlebox's OS forwards.
    assert ("ipv4/ip_forward", "1") in wiring.namespace("mbox").sysctls
    assert ("ipv4/ip_forward", "1") not in wiring.namespace("app-1").sysctls


def test_a_host_route_inside_the_vpc_never_beats_local_unless_it_is_a_subnet_route():
    # The loader refuses what AWS refuses: inside the VPC CIDR only exact subnet CIDRs
    # may be more specific than local.
    for destination in ("10.0.2.10/32", "10.0.2.0/25", "10.0.0.0/17", "10.0.9.0/24"):
        with pytest.raises(LabFileError, match="not exactly a subnet's CIDR"):
            load_lab_text(MIDDLEBOX.replace("TARGET", "InstanceId: mbox").replace("10.0.2.0/24, Instance",
                                                                                  f"{destination}, Instance"),
                          "lab.yaml")
    lab, wiring = compile_text(MIDDLEBOX.replace("TARGET", "InstanceId: mbox"))
    vpc = lab.vpcs["main"].cidr
    subnets = {s.cidr for s in lab.subnets.values()}
    router = router_of(wiring, "main")
    # What compile produces: inside the VPC, an AWS table holds the throw of the VPC CIDR and
    # exact subnet CIDRs; the /32s to each ENI live only in ENI_TABLE, consulted after them.
    for table, routes in router.tables.items():
        inside = {d for d in routes if d.subnet_of(vpc)}
        if table == ENI_TABLE:
            assert inside == {IPv4Network(f"{eni}/32") for eni in ("10.0.1.10", "10.0.1.11", "10.0.2.10", "10.0.3.10")}
        else:
            assert inside <= {vpc} | subnets, table
            assert routes[vpc].kind == "throw"
    # (an ENI's rule goes straight there only for its own subnet, where AWS routes nothing)
    assert ENI_TABLE not in {r.table for r in router.rules if r.iif and r.to is None}
    eni_rule = next(r for r in router.rules if r.table == ENI_TABLE and not r.iif)
    assert all(r.pref < eni_rule.pref for r in router.rules if r.iif)
    # So db-1's /32 (table 200) does not beat app-rt's 10.0.2.0/24 to the middlebox...
    assert where(wiring, "app-1", "10.0.2.10") == "mbox"
    # ...and nothing in app-rt is more specific than local for app-2 or the middlebox.
    assert where(wiring, "app-1", "10.0.1.11") == "app-2"


def test_no_route_drops_silently():
    lab, wiring = compile_text(TABLES.replace("MAIN_TABLE", ""))
    _, iif = router_side(wiring, "plain-1")
    router = router_of(wiring, "main")
    for dst in (INTERNET, "10.0.3.99", "10.0.200.1"):  # nowhere; an unused address; outside every subnet
        decision = router.route(iif, dst)
        assert decision.action == "drop", dst
    # It is the final `blackhole` rule that drops: no ICMP, unlike `unreachable` or `prohibit`.
    assert "rule add pref 2001 blackhole" in router_of_lines(wiring, "main")
    assert router.route(iif, INTERNET).pref == max(r.pref for r in router.rules)
    assert not any(word in line for line in router_of_lines(wiring, "main")
                   for word in ("unreachable", "prohibit"))
    assert "reject" not in wiring.namespace("router:main").nft
    # Without it the kernel would try main and then answer "network unreachable".
    without = PolicyRouter.from_batch(line for line in router_of_lines(wiring, "main") if "blackhole" not in line)
    assert without.route(iif, INTERNET).action == "unreachable"


EDGE = """
vpcs: {main: {CidrBlock: 10.0.0.0/16}}
subnets:
  web: {VpcId: main, CidrBlock: 10.0.1.0/24}
  other: {VpcId: main, CidrBlock: 10.0.2.0/24}
  inspect: {VpcId: main, CidrBlock: 10.0.3.0/24}
internet_gateways: {igw: {VpcId: main}}
route_tables:
  public-rt:
    VpcId: main
    Main: true
    Routes: [{DestinationCidrBlock: 0.0.0.0/0, GatewayId: igw}]
  edge-rt:
    VpcId: main
    EdgeAssociations: [igw]
    Routes: [EDGE_ROUTE]
instances:
  web-1: {SubnetId: web, PrivateIpAddress: 10.0.1.10, AssociatePublicIpAddress: true}
  other-1: {SubnetId: other, PrivateIpAddress: 10.0.2.10, AssociatePublicIpAddress: true}
  mbox: {SubnetId: inspect, PrivateIpAddress: 10.0.3.10, SourceDestCheck: false}
"""


def test_internet_gateway_route_and_edge_association_steer_inbound_traffic():
    lab = load_lab(REPO / "examples" / "basic-vpc.yaml")
    wiring = compile_lab(lab)
    web, app = str(lab.instances["web-1"].private_ip), str(lab.instances["app-1"].private_ip)
    # Out: 0.0.0.0/0 -> igw leaves through the internet gateway's namespace.
    assert where(wiring, "web-1", INTERNET) == "igw:igw"
    assert where(wiring, "app-1", INTERNET) == "nat:nat-a"
    assert where(wiring, "nat:nat-a", INTERNET) == "igw:igw"
    # In, with no edge association: the local route delivers to the ENI.
    assert where(wiring, "igw", web, vpc="main") == "web-1"
    assert where(wiring, "igw", app, vpc="main") == "app-1"
    assert where(wiring, "igw", "10.0.2.99", vpc="main") == "drop"
    igw = wiring.namespace("igw:igw")
    assert "route add 10.0.0.0/16 via 169.254.0.1 dev vpc" in igw.ip_batch
    assert f"{lab.instances['web-1'].public_ip} : {web}" in igw.nft  # 1:1 NAT of the public IP
    assert f"{lab.nat_gateways['nat-a'].public_ip} : {lab.nat_gateways['nat-a'].private_ip}" in igw.nft
    assert str(lab.instances["app-1"].private_ip) not in igw.nft  # no public IP, no translation

    # An edge-associated table steers a subnet's inbound traffic to a middlebox...
    _, wiring = compile_text(EDGE.replace("EDGE_ROUTE", "{DestinationCidrBlock: 10.0.1.0/24, InstanceId: mbox}"))
    assert where(wiring, "igw", "10.0.1.10", vpc="main") == "mbox"
    assert where(wiring, "igw", "10.0.2.10", vpc="main") == "other-1"  # other subnets: local
    assert where(wiring, "mbox", "10.0.1.10") == "web-1"  # the middlebox's table is not the edge table
    assert where(wiring, "web-1", INTERNET) == "igw:igw"  # outbound is the subnet's business
    # ...or, replacing the local route's target, the whole VPC's.
    lab, wiring = compile_text(EDGE.replace("EDGE_ROUTE", "{DestinationCidrBlock: 10.0.0.0/16, InstanceId: mbox}"))
    assert [r.target_kind for r in lab.route_tables["edge-rt"].routes] == ["instance"]
    assert where(wiring, "igw", "10.0.1.10", vpc="main") == "mbox"
    assert where(wiring, "igw", "10.0.2.10", vpc="main") == "mbox"
    assert where(wiring, "other-1", "10.0.1.10") == "web-1"  # inside the VPC, local still applies


def test_route_to_pending_gwlb_endpoint_is_a_blackhole_and_available_one_goes_to_the_node():
    lab = load_lab(REPO / "examples" / "gwlb-two-vpc.yaml")
    assert {e.state for e in lab.vpc_endpoints.values()} == {"pendingAcceptance"}
    web1, web2 = (str(lab.instances[n].private_ip) for n in ("web-1", "web-2"))
    wiring = compile_lab(lab)
    router = router_of(wiring, "app")
    # Pending: dropped by a blackhole route in the table, never sent around the endpoint.
    for src, dst in (("e-web-1", INTERNET), ("e-web-2", INTERNET), ("igw", web1), ("igw", web2)):
        decision = router.route(src, dst)
        assert decision.action == "drop" and decision.table is not None, (src, dst)
    assert where(wiring, "web-1", INTERNET) == where(wiring, "igw", web1, vpc="app") == "drop"

    lab = accept_vpc_endpoint_connections(lab, "gwlbe-a")
    wiring = compile_lab(lab)
    node_a = "gwlb:gwlb:us-east-1a"
    assert where(wiring, "web-1", INTERNET) == node_a
    assert where(wiring, "igw", web1, vpc="app") == node_a
    # gwlbe-b is still pending.
    assert where(wiring, "web-2", INTERNET) == where(wiring, "igw", web2, vpc="app") == "drop"
    # What the node hands back is routed by the endpoint subnet's table: on to the IGW or the ENI.
    assert where(wiring, "ep-gwlbe-a", INTERNET, vpc="app") == "igw:app-igw"
    assert where(wiring, "ep-gwlbe-a", web1, vpc="app") == "web-1"
    # The node sits on the provider's side: its namespace holds the other end of the endpoint link.
    assert node_a in {link.b_ns for link in wiring.links if link.a_ns == "router:app"}

    wiring = compile_lab(accept_vpc_endpoint_connections(lab, "gwlbe-b"))
    assert where(wiring, "web-2", INTERNET) == where(wiring, "igw", web2, vpc="app") == "gwlb:gwlb:us-east-1b"
    assert where(wiring, "web-1", INTERNET) == node_a


def test_gwlb_node_and_appliances_reach_each_other_in_the_provider_vpc():
    lab = load_lab(REPO / "examples" / "gwlb-two-vpc.yaml")
    wiring = compile_lab(lab)
    for node in lab.load_balancers["gwlb"].nodes:
        ns = f"gwlb:gwlb:{node.az}"
        for appliance in ("appliance-a", "appliance-b"):
            assert where(wiring, ns, lab.instances[appliance].private_ip) == appliance
            assert where(wiring, appliance, node.private_ip) == ns


OWN_SUBNET = """
vpcs: {main: {CidrBlock: 10.0.0.0/16}}
subnets:
  app: {VpcId: main, CidrBlock: 10.0.1.0/24}
  inspect: {VpcId: main, CidrBlock: 10.0.3.0/24}
route_tables:
  app-rt:
    VpcId: main
    SubnetAssociations: [app]
    Routes: [{DestinationCidrBlock: 10.0.1.0/24, InstanceId: mbox}]
instances:
  app-1: {SubnetId: app, PrivateIpAddress: 10.0.1.10}
  app-2: {SubnetId: app, PrivateIpAddress: 10.0.1.11}
  mbox: {SubnetId: inspect, PrivateIpAddress: 10.0.3.10, SourceDestCheck: false}
"""


def test_traffic_within_a_subnet_is_not_routed_even_by_a_route_for_its_own_cidr():
    # AWS, "Gateway route tables", rules and considerations: route table rules apply to traffic
    # that leaves a subnet (sent to the subnet router's MAC); traffic to another network
    # interface's MAC in the subnet is layer 2 and the rules do not apply to it.
    _, wiring = compile_text(OWN_SUBNET)
    assert where(wiring, "app-1", "10.0.3.10") == "mbox"
    assert where(wiring, "app-1", "10.0.1.11") == "app-2"
