"""The hairpin appliance kind (`Appliance: {kind: hairpin}`): iptables in the appliance sends
GENEVE back to the GWLB node unchanged, with no vpclab process in the data path."""
from __future__ import annotations

import signal
import subprocess

import pytest

from conftest import start_capture, target_states, wait_for

pytestmark = pytest.mark.lab

# examples/gwlb-distributed.yaml, its two appliances switched to the hairpin kind.
HAIRPIN_LAB = """
lab:
  region: us-east-1
  account: "111122223333"

vpcs:
  main:
    CidrBlock: 10.0.0.0/16
    EnableDnsHostnames: true

subnets:
  endpoint-a: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.1.0/24}
  endpoint-b: {VpcId: main, AvailabilityZone: b, CidrBlock: 10.0.2.0/24}
  app-a: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.11.0/24}
  app-b: {VpcId: main, AvailabilityZone: b, CidrBlock: 10.0.12.0/24}
  sec-a: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.21.0/24}
  sec-b: {VpcId: main, AvailabilityZone: b, CidrBlock: 10.0.22.0/24}
  nat-subnet: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.31.0/24}

internet_gateways:
  igw: {VpcId: main}

nat_gateways:
  nat-a: {SubnetId: nat-subnet}

route_tables:
  edge:
    VpcId: main
    EdgeAssociations: [igw]
    Routes:
      - {DestinationCidrBlock: 10.0.11.0/24, VpcEndpointId: gwlbe-a}
      - {DestinationCidrBlock: 10.0.12.0/24, VpcEndpointId: gwlbe-b}
  app-a-rt:
    VpcId: main
    SubnetAssociations: [app-a]
    Routes:
      - {DestinationCidrBlock: 0.0.0.0/0, VpcEndpointId: gwlbe-a}
  app-b-rt:
    VpcId: main
    SubnetAssociations: [app-b]
    Routes:
      - {DestinationCidrBlock: 0.0.0.0/0, VpcEndpointId: gwlbe-b}
  endpoints-rt:
    VpcId: main
    SubnetAssociations: [endpoint-a, endpoint-b]
    Routes:
      - {DestinationCidrBlock: 0.0.0.0/0, GatewayId: igw}
      - {DestinationCidrBlock: 100.64.0.11/32, NatGatewayId: nat-a}
  nat-rt:
    VpcId: main
    SubnetAssociations: [nat-subnet]
    Routes:
      - {DestinationCidrBlock: 0.0.0.0/0, GatewayId: igw}
      - {DestinationCidrBlock: 10.0.11.0/24, VpcEndpointId: gwlbe-a}
      - {DestinationCidrBlock: 10.0.12.0/24, VpcEndpointId: gwlbe-b}
  security-rt:
    VpcId: main
    SubnetAssociations: [sec-a, sec-b]

security_groups:
  web-sg:
    VpcId: main
    SecurityGroupIngress:
      - {IpProtocol: tcp, FromPort: 80, ToPort: 80, CidrIp: 0.0.0.0/0}
      - {IpProtocol: tcp, FromPort: 22, ToPort: 22, CidrIp: 0.0.0.0/0}
      - {IpProtocol: udp, FromPort: 7, ToPort: 7, CidrIp: 0.0.0.0/0}
  appliance-sg:
    VpcId: main
    SecurityGroupIngress:
      - {IpProtocol: udp, FromPort: 6081, ToPort: 6081, CidrIp: 10.0.21.0/24}
      - {IpProtocol: udp, FromPort: 6081, ToPort: 6081, CidrIp: 10.0.22.0/24}
      - {IpProtocol: tcp, FromPort: 80, ToPort: 80, CidrIp: 10.0.21.0/24}
      - {IpProtocol: tcp, FromPort: 80, ToPort: 80, CidrIp: 10.0.22.0/24}

load_balancers:
  gwlb:
    Type: gateway
    Subnets: [sec-a, sec-b]
    LoadBalancerAttributes:
      load_balancing.cross_zone.enabled: true

target_groups:
  appliances:
    Protocol: GENEVE
    Port: 6081
    VpcId: main
    TargetType: instance
    HealthCheckProtocol: TCP
    HealthCheckPort: 80
    HealthCheckIntervalSeconds: 5
    HealthyThresholdCount: 2
    UnhealthyThresholdCount: 2
    TargetGroupAttributes:
      deregistration_delay.timeout_seconds: 10
    Targets: [appliance-1, appliance-2]

listeners:
  gwlb-listener:
    LoadBalancerArn: gwlb
    DefaultActions: [{Type: forward, TargetGroupArn: appliances}]

vpc_endpoint_services:
  inspection:
    GatewayLoadBalancerArns: [gwlb]
    AcceptanceRequired: false
    AllowedPrincipals: ["arn:aws:iam::111122223333:root"]

vpc_endpoints:
  gwlbe-a:
    VpcEndpointType: GatewayLoadBalancer
    ServiceName: inspection
    VpcId: main
    SubnetIds: [endpoint-a]
  gwlbe-b:
    VpcEndpointType: GatewayLoadBalancer
    ServiceName: inspection
    VpcId: main
    SubnetIds: [endpoint-b]

instances:
  web-1:
    SubnetId: app-a
    PrivateIpAddress: 10.0.11.10
    AssociatePublicIpAddress: true
    SecurityGroupIds: [web-sg]
  appliance-1:
    SubnetId: sec-a
    Role: appliance
    Appliance: {kind: hairpin}
    SecurityGroupIds: [appliance-sg]
  appliance-2:
    SubnetId: sec-b
    Role: appliance
    Appliance: {kind: hairpin}
    SecurityGroupIds: [appliance-sg]

internet:
  hosts:
    client: {}
    server: {}
"""


def gwlb_nodes(lab) -> list[dict]:
    return lab.status()["load_balancers"][0]["nodes"]


def geneve_back_at_gwlb(lab) -> int:
    """GENEVE datagrams the GWLB nodes took back from appliances: the Python path's and,
    when it runs, the eBPF fast path's."""
    total = 0
    for node in gwlb_nodes(lab):
        io = node["counters"]["io"]
        total += io["geneve_received"] + io["fast_path"].get("decap_hit", 0)
    return total


def nat_counters(lab, appliance: str) -> dict[str, int]:
    """Packets through each hairpin rule: {'DNAT': n, 'MASQUERADE': m}, summed over the GWLB nodes."""
    out = lab.sh(appliance, "iptables -t nat -L -v -n -x").stdout
    counts = {"DNAT": 0, "MASQUERADE": 0}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] in counts and "dpt:6081" in line:
            counts[fields[2]] += int(fields[0])
    return counts


@pytest.fixture
def hairpin(up):
    lab = up(HAIRPIN_LAB, "gwlb-hairpin-kind")
    wait_for(lambda: all(s == "healthy" for s in target_states(lab, "appliances").values()), 30,
             "both hairpin appliances healthy")
    return lab


def test_hairpin_appliances_return_geneve_to_the_gwlb(hairpin, tmp_path):
    lab = hairpin
    appliances = {i["name"]: i["private_ip"] for i in lab.status()["instances"] if i["role"] == "appliance"}
    nodes = {n["private_ip"] for n in gwlb_nodes(lab)}
    # no reference appliance runs: the kernel alone hairpins
    assert not any("appliance" in i for i in lab.status()["instances"] if i["role"] == "appliance")
    before = {name: nat_counters(lab, name) for name in appliances}
    gwlb_before = geneve_back_at_gwlb(lab)
    pcaps = {name: tmp_path / f"{name}.pcap" for name in appliances}
    captures = [start_capture(lab, name, "udp port 6081", "-w", str(pcap)) for name, pcap in pcaps.items()]
    pages = [lab.curl("client", f"http://{lab.instance('web-1')['public_ip']}/") for _ in range(4)]
    egress = lab.curl("web-1", "http://server.internet.test/")
    for capture in captures:
        capture.send_signal(signal.SIGINT)
        assert capture.wait(timeout=30) == 0
    assert all(p.startswith("web-1 ") and "client: 100.64.0.10:" in p for p in pages), pages
    nat_ip = lab.status()["nat_gateways"][0]["public_ip"]
    assert f"client: {nat_ip}:" in egress
    after = {name: nat_counters(lab, name) for name in appliances}
    # conntrack NATs a flow's first packet only: one DNAT and one MASQUERADE per GWLB flow
    flows = {name: after[name]["DNAT"] - before[name]["DNAT"] for name in appliances}
    assert sum(flows.values()) >= 5, (before, after)  # 4 ingress connections, 1 egress
    assert all(after[n]["MASQUERADE"] - before[n]["MASQUERADE"] == flows[n] for n in appliances), (before, after)
    returned = 0
    for name, pcap in pcaps.items():
        # GENEVE in from a node, and out from this appliance to that node's 6081: the node's source
        # port kept, the datagram byte for byte (its GENEVE options too)
        rows = [r.split("\t") for r in subprocess.run(
            ["tshark", "-r", str(pcap), "-Y", "geneve", "-T", "fields", "-E", "occurrence=f", "-e", "ip.src",
             "-e", "ip.dst", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "udp.payload"],
            capture_output=True, text=True, check=True).stdout.splitlines()]
        ins = [r for r in rows if r[0] in nodes and r[1] == appliances[name]]
        back = [r for r in rows if r[0] == appliances[name] and r[1] in nodes]
        assert len(ins) >= flows[name] and len(back) == len(ins), (name, rows)
        assert all(b[3] == "6081" for b in back)
        assert sorted((i[0], i[2], i[4]) for i in ins) == sorted((b[1], b[2], b[4]) for b in back), name
        assert all(r[4] for r in ins)  # the whole GENEVE datagram compared
        returned += len(back)
    # and the GWLB took them back (decapsulated, or the pages would not have come), and
    # dropped none as from an unknown target or malformed
    assert geneve_back_at_gwlb(lab) - gwlb_before >= returned > 0
    for node in gwlb_nodes(lab):
        drops = node["counters"]["drops"]
        assert not drops.get("unknown_target") and not drops.get("malformed_inner"), drops
