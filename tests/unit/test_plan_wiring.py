"""The shape of a compiled lab: veths, interface names, determinism, every example."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from plan_routing import PolicyRouter, router_side
from vpclab.model import accept_vpc_endpoint_connections, load_lab, load_lab_text
from vpclab.plan import transit_gateway
from vpclab.plan.common import INTERNET_NS, VPC_MTU, interface_links
from vpclab.plan.compile import compile_lab
from vpclab.plan.ec2 import ENI_TABLE

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
NAMESPACE_KINDS = {"router", "instance", "igw", "nat", "internet", "host", "gwlb", "nlb", "alb", "tgw"}

# Names that truncate to the same 15 characters, or differ only by '.', '_' and '-'.
LONG_NAMES = """
vpcs:
  main: {CidrBlock: 10.0.0.0/16}
  second-vpc-with-a-long-name: {CidrBlock: 10.1.0.0/16}
subnets:
  a-subnet: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.1.0/24}
  b-subnet: {VpcId: main, AvailabilityZone: b, CidrBlock: 10.0.2.0/24}
  other: {VpcId: second-vpc-with-a-long-name, CidrBlock: 10.1.1.0/24}
internet_gateways:
  internet-gateway-with-a-long-name: {VpcId: main}
  internet-gateway-with-a-long-name-2: {VpcId: second-vpc-with-a-long-name}
nat_gateways:
  nat-gateway-number-one-in-a: {SubnetId: a-subnet}
  nat-gateway-number-one-in-b: {SubnetId: b-subnet}
instances:
  web.server.number.1: {SubnetId: a-subnet}
  web-server-number-1: {SubnetId: a-subnet}
  web_server_number_1: {SubnetId: b-subnet}
INSTANCES
  same-name-elsewhere-in-the-lab: {SubnetId: other, AssociatePublicIpAddress: true}
internet:
  hosts:
    internet-host-with-a-long-name-1: {}
    internet-host-with-a-long-name-2: {}
    internet-host-with-a-long-name-3: {}
"""


def long_names_lab():
    many = "\n".join(f"  very-long-instance-name-{i}: {{SubnetId: b-subnet}}" for i in range(12))
    return load_lab_text(LONG_NAMES.replace("INSTANCES", many), "long.yaml")


def long_gwlb_lab():
    text = (REPO / "examples" / "gwlb-two-vpc.yaml").read_text()
    text = re.sub(r"\bgwlb\b", "inspection-load-balancer-long-a", text)
    text = text.replace("gwlbe-", "gateway-load-balancer-endpoint-")
    lab = load_lab_text(text, "long-gwlb.yaml")
    for endpoint in list(lab.vpc_endpoints):
        lab = accept_vpc_endpoint_connections(lab, endpoint)
    return lab


def labs():
    out = [pytest.param(lambda p=p: load_lab(p), id=p.name) for p in EXAMPLES]
    out.append(pytest.param(long_names_lab, id="long-names"))
    out.append(pytest.param(long_gwlb_lab, id="long-gwlb"))
    return out


def enis(lab):
    """(owner namespace, owner's interface, subnet, private IP) of every ENI the router serves."""
    for nat in lab.nat_gateways.values():
        yield f"nat:{nat.name}", "eth0", lab.subnets[nat.subnet], nat.private_ip
    for lb in lab.load_balancers.values():
        for node in lb.nodes:
            kind = {"gateway": "gwlb", "application": "alb"}.get(lb.type, "nlb")
            yield f"{kind}:{lb.name}:{node.az}", "eth0", lab.subnets[node.subnet], node.private_ip
    for link in interface_links(lab):  # an interface endpoint's ENI ends in the provider's router
        yield link.router_ns, link.router_ifname, lab.subnets[link.eni.subnet], link.eni.ip
    for inst in lab.instances.values():
        yield inst.name, "eth0", lab.subnets[inst.subnet], inst.private_ip
    names = transit_gateway.link_names(lab)  # a transit gateway's ENI ends in the gateway's namespace
    for attachment in lab.transit_gateway_attachments.values():
        for eni in attachment.enis:
            yield (f"tgw:{attachment.transit_gateway}", names[(attachment.name, eni.az)], lab.subnets[eni.subnet],
                   eni.ip)


@pytest.mark.parametrize("make_lab", labs())
def test_every_eni_is_a_veth_into_its_vpc_router_with_mtu_9001(make_lab):
    lab = make_lab()
    wiring = compile_lab(lab)
    count = 0
    for ns, owner_ifname, subnet, ip in enis(lab):
        count += 1
        rns = f"router:{subnet.vpc}"
        veths = [link for link in wiring.links if link.a_ns == ns and link.b_ns.startswith("router:")
                 and link.a_ifname == owner_ifname and link.b_ns != ns]
        assert len(veths) == 1, ns
        link = veths[0]
        assert link.b_ns == rns and link.mtu == VPC_MTU == 9001
        ifname = link.b_ifname
        batch = wiring.namespace(rns).ip_batch
        assert f"link set {ifname} up" in batch
        assert f"addr add {subnet.router_ip}/32 dev {ifname}" in batch  # the router answers as .1
        assert f"ntable change name arp_cache dev {ifname} proxy_delay 0" in batch
        assert f"route add {ip}/32 dev {ifname} table {ENI_TABLE}" in batch
        policy = PolicyRouter.from_batch(batch)
        # What stays within the subnet is layer 2 at AWS: straight to the ENI table.
        assert [r.table for r in policy.rules if r.iif == ifname and r.to == subnet.cidr] == [ENI_TABLE], ns
        # One rule for what leaves the subnet, to a table holding exactly the subnet's AWS routes.
        tables = [rule.table for rule in policy.rules if rule.iif == ifname and rule.to is None]
        assert len(tables) == 1, ns
        aws_table = lab.route_table_of_subnet(subnet.name)
        assert set(policy.tables[tables[0]]) == {route.destination for route in aws_table.routes}, ns
        own = wiring.namespace(ns).ip_batch
        if owner_ifname == "eth0":
            # The ENI's side: its address in the subnet, the router as default gateway.
            assert f"addr add {ip}/{subnet.cidr.prefixlen} dev eth0" in own
            assert f"route add default via {subnet.router_ip} dev eth0" in own
        elif ns.startswith("tgw:"):
            # A transit gateway's ENI: its address on the gateway's side, MTU 8,500 there.
            assert f"addr add {ip}/32 dev {owner_ifname}" in own
            assert f"link set {owner_ifname} mtu 8500" in own
        else:
            # An interface endpoint's ENI in the provider VPC's router: it answers ARP for the ENI's IP
            # (proxy ARP, without holding it: the CIDRs may collide) and sends replies to the consumer's.
            assert ns.startswith("router:") and ns != rns
            assert ("ipv4/conf/default/proxy_arp", "1") in wiring.namespace(ns).sysctls
            assert f"ntable change name arp_cache dev {owner_ifname} proxy_delay 0" in own
            assert any(line.startswith(f"route add default dev {owner_ifname} table ") for line in own)
    # One veth per ENI, no more; the router answers ARP for the whole subnet.
    assert count == sum(1 for link in wiring.links if link.b_ns.startswith("router:")
                        and (not link.a_ns.startswith("router:") or link.a_ifname.startswith("pl-")))
    for ns in wiring.namespaces:
        if ns.kind == "router":
            assert ("ipv4/conf/default/proxy_arp", "1") in ns.sysctls
            assert ("ipv4/ip_forward", "1") in ns.sysctls
        if ns.kind in ("router", "nlb"):  # policy rules: no second route lookup per forwarded packet
            assert ("ipv4/conf/all/accept_local", "1") in ns.sysctls
        if ("ipv4/ip_forward", "1") in ns.sysctls:  # no socket lookup per forwarded packet either
            assert ("ipv4/ip_early_demux", "0") in ns.sysctls, ns.name
    # Everything that touches a VPC router (ENIs, endpoints, the IGW) runs at the VPC MTU.
    for link in wiring.links:
        if link.a_ns.startswith("router:") or link.b_ns.startswith("router:"):
            assert link.mtu == 9001, link


IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
REFERENCES = re.compile(r"(?:\bdev|\biif|^link set|name arp_cache dev) (\S+)")


@pytest.mark.parametrize("make_lab", labs())
def test_interface_names_fit_linux_limit_and_are_unique_per_namespace(make_lab):
    wiring = compile_lab(make_lab())
    names: dict[str, list[str]] = {ns.name: [] for ns in wiring.namespaces}
    for link in wiring.links:
        names[link.a_ns].append(link.a_ifname)
        names[link.b_ns].append(link.b_ifname)
    for ns in wiring.namespaces:
        own = names[ns.name]
        assert len(own) == len(set(own)), (ns.name, sorted(own))
        for ifname in own:
            assert IFNAME.fullmatch(ifname) and ifname not in (".", "..", "lo"), ifname
        # Every interface the namespace's lines name is one it has.
        exists = set(own) | {"lo"}
        for line in ns.ip_batch:
            for ref in REFERENCES.findall(line):
                assert ref in exists, (ns.name, line)
        for ref in re.findall(r'[io]ifname "([^"]+)"', ns.nft):
            assert ref in exists, (ns.name, ref)
        assert set(ns.tx_offload_off) <= exists


@pytest.mark.parametrize("make_lab", labs())
def test_namespace_names_are_unique_and_every_link_and_service_lands_in_one(make_lab):
    wiring = compile_lab(make_lab())
    names = [ns.name for ns in wiring.namespaces]
    assert len(names) == len(set(names))
    for link in wiring.links:
        assert {link.a_ns, link.b_ns} <= set(names) and link.a_ns != link.b_ns
    for service in wiring.services:
        assert service.ns in names


def test_an_instance_named_internet_does_not_share_the_internet_namespace():
    lab = load_lab_text("""
vpcs: {main: {CidrBlock: 10.0.0.0/16}}
subnets: {s: {VpcId: main, CidrBlock: 10.0.1.0/24}}
internet_gateways: {igw: {VpcId: main}}
instances: {internet: {SubnetId: s}}
""", "lab.yaml")
    names = [ns.name for ns in compile_lab(lab).namespaces]
    assert len(names) == len(set(names)), sorted(names)


def test_internet_router_and_resolver_are_dot_1_and_dot_2_of_the_internet_cidr():
    lab = load_lab_text("""
vpcs: {main: {CidrBlock: 10.0.0.0/16}}
subnets: {s: {VpcId: main, CidrBlock: 10.0.1.0/24}}
internet_gateways: {igw: {VpcId: main}}
internet:
  CidrBlock: 198.18.0.0/16
  hosts:
    h1: {Ip: 198.18.1.10}
    h2: {Ip: 198.18.2.10}
""", "lab.yaml")
    wiring = compile_lab(lab)
    for host in ("h1", "h2"):
        batch = wiring.namespace(host).ip_batch
        address = next(IPv4Network(line.split()[2], strict=False) for line in batch if line.startswith("addr add"))
        gateway = IPv4Address(next(line.split()[4] for line in batch if line.startswith("route add default")))
        assert gateway == IPv4Address("198.18.0.1") and gateway in address, batch  # docs/lab-file.md: .1
    dns = next(s for s in wiring.services if s.ns == INTERNET_NS and s.kind == "dns")
    assert dns.addresses == ("198.18.0.2:53",)


def test_same_lab_compiles_to_the_same_wiring():
    for path in EXAMPLES:
        first, second = compile_lab(load_lab(path)), compile_lab(load_lab(path))
        assert first == second and first.render() == second.render(), path.name
    lab = load_lab(REPO / "examples" / "gwlb-two-vpc.yaml")
    assert compile_lab(accept_vpc_endpoint_connections(lab, "gwlbe-b")) == compile_lab(
        accept_vpc_endpoint_connections(load_lab(REPO / "examples" / "gwlb-two-vpc.yaml"), "gwlbe-b"))
    assert compile_lab(long_names_lab()) == compile_lab(long_names_lab())
    # Across interpreters too: nothing may hang on set or hash order.
    script = (
        "import sys; from pathlib import Path; from vpclab.model import load_lab; "
        "from vpclab.plan.compile import compile_lab; "
        "sys.stdout.write(''.join(compile_lab(load_lab(Path(p))).render() for p in sys.argv[1:]))"
    )
    renders = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-c", script, *map(str, EXAMPLES)], capture_output=True,
                                text=True, env=env, cwd=REPO, timeout=120, check=True)
        renders.add(result.stdout)
    assert len(renders) == 1


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_compile(path):
    lab = load_lab(path)
    wiring = compile_lab(lab)
    assert wiring.render().strip()
    assert {ns.kind for ns in wiring.namespaces} <= NAMESPACE_KINDS
    for vpc in lab.vpcs:
        router = wiring.namespace(f"router:{vpc}")
        assert router.kind == "router" and router.nft.startswith("table inet vpc {")
        policy = PolicyRouter.from_batch(router.ip_batch)  # every line understood, no route or rule twice
        assert policy.rules[-1].action == "blackhole"
        assert len({r.pref for r in policy.rules}) == len(policy.rules)
    for ns, owner_ifname, _, _ in enis(lab):
        router_side(wiring, ns, owner_ifname)  # exactly one veth into a router
    for name in lab.internet_gateways:
        assert wiring.namespace(f"igw:{name}").kind == "igw"
    if lab.internet_hosts or lab.internet_gateways:
        assert wiring.namespace(INTERNET_NS).kind == "internet"
