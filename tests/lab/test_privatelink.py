"""PrivateLink (reference §6): interface endpoints to an NLB, proven with real connections."""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import pytest

from conftest import ROOT, wait_for
from vpclab.engines.io.proxy_protocol import parse_header, proxy_header

pytestmark = pytest.mark.lab
LAB = ROOT / "examples" / "privatelink-cross-zone.yaml"
URL = "http://provider-nlb.example.local/"


def hellos(lab, count: int) -> Counter:
    """Which provider subnet answered each of `count` curls from the consumer (one exec, many curls)."""
    script = f"for i in $(seq {count}); do curl -s --max-time 3 {URL} | head -1; echo; done"
    lines = lab.sh("consumer", script, timeout=count * 4 + 20).stdout.splitlines()
    return Counter(line for line in lines if line.strip())


def endpoint(lab) -> dict:
    return next(e for e in lab.status()["vpc_endpoints"] if e["name"] == "provider-endpoint")


def test_cross_zone_off_reaches_only_subnet_1_and_on_reaches_all_three(up):
    lab = up(LAB, "pl")
    assert hellos(lab, 30) == {"Hello from Provider VPC on Subnet 1": 30}
    lab.vpclab("modify", "--lab", lab.name, "provider-nlb", "load_balancing.cross_zone.enabled=true")
    seen = hellos(lab, 30)
    assert set(seen) == {f"Hello from Provider VPC on Subnet {n}" for n in (1, 2, 3)}
    assert sum(seen.values()) == 30


def test_targets_see_the_nlb_nodes_ip_though_the_cidrs_are_identical(up):
    lab = up(LAB, "pl")
    body = lab.curl("consumer", URL)
    node_a = next(b for b in lab.status()["load_balancers"] if b["name"] == "provider-nlb")["nodes"][0]
    assert f"client: {node_a['private_ip']}:" in body


def test_endpoint_security_group_is_enforced(up):
    # The consumer moves to 10.11.0.128/26, a subnet the endpoint's group does not allow.
    text = LAB.read_text().replace(
        "  consumer-2: {VpcId: consumer-vpc, AvailabilityZone: b, CidrBlock: 10.11.0.64/26}",
        "  consumer-2: {VpcId: consumer-vpc, AvailabilityZone: b, CidrBlock: 10.11.0.64/26}\n"
        "  consumer-3: {VpcId: consumer-vpc, AvailabilityZone: c, CidrBlock: 10.11.0.128/26}")
    text = text.replace("  consumer: {SubnetId: consumer-1}",
                        "  consumer: {SubnetId: consumer-1}\n  outsider: {SubnetId: consumer-3}")
    lab = up(text, "plsg")
    assert "Subnet 1" in lab.curl("consumer", URL)
    assert lab.curl("outsider", URL) == ""


def test_endpoint_pending_acceptance_carries_nothing_until_accepted(up):
    lab = up(LAB.read_text().replace("AcceptanceRequired: false", "AcceptanceRequired: true"), "placc")
    assert endpoint(lab)["state"] == "pendingAcceptance"
    assert lab.curl("consumer", URL) == ""
    lab.vpclab("endpoint", "--lab", lab.name, "accept", endpoint(lab)["id"])
    assert endpoint(lab)["state"] == "available"
    assert "Subnet 1" in wait_for(lambda: lab.curl("consumer", URL), 10, "the endpoint to carry traffic")
    lab.vpclab("endpoint", "--lab", lab.name, "reject", endpoint(lab)["id"])
    assert lab.curl("consumer", URL) == ""


def test_proxy_protocol_v2_through_the_endpoint_carries_the_consumer_the_eni_and_the_endpoint_id(up):
    lab = up(LAB.read_text().replace(
        "    UnhealthyThresholdCount: 2\n    Targets: [web-1, web-2, web-3]",
        "    UnhealthyThresholdCount: 2\n    TargetGroupAttributes: {proxy_protocol_v2.enabled: true}\n"
        "    Targets: [web-1, web-2, web-3]"), "plpp")
    ep = endpoint(lab)
    eni_ip = ep["enis"][0]["ip"]
    consumer_ip = lab.instance("consumer")["private_ip"]
    body = wait_for(lambda: lab.curl("consumer", URL), 15, "an answer through the relay")
    fields = dict(line.split(": ", 1) for line in body.splitlines() if ": " in line)
    raw = bytes.fromhex(fields["proxy-protocol-hex"])
    header = parse_header(raw)
    assert header.source[0] == consumer_ip
    assert header.destination == (eni_ip, 80)
    assert header.vpc_endpoint_id == ep["id"]
    assert raw == proxy_header(header.source, (eni_ip, 80), vpc_endpoint_id=ep["id"])
    assert len(raw) == 100


# Two consumer VPCs with the very same CIDR, each with an endpoint to the same service in the same
# AZ (so both ENIs end in the same NLB node), the same ENI IP and a consumer at the same address.
TWINS = """
lab: {region: us-east-1, account: "222222222222"}
vpcs:
  provider-vpc: {CidrBlock: 10.11.0.0/24, Account: "111111111111"}
  left-vpc: {CidrBlock: 10.20.0.0/24}
  right-vpc: {CidrBlock: 10.20.0.0/24}
subnets:
  provider-1: {VpcId: provider-vpc, AvailabilityZone: a, CidrBlock: 10.11.0.0/26}
  left-1: {VpcId: left-vpc, AvailabilityZone: a, CidrBlock: 10.20.0.0/26}
  right-1: {VpcId: right-vpc, AvailabilityZone: a, CidrBlock: 10.20.0.0/26}
security_groups:
  web-sg:
    VpcId: provider-vpc
    SecurityGroupIngress: [{IpProtocol: tcp, FromPort: 80, ToPort: 80, CidrIp: 10.11.0.0/24}]
instances:
  web-1: {SubnetId: provider-1, SecurityGroupIds: [web-sg], TestPageMessage: Hello from the provider}
  left: {SubnetId: left-1, PrivateIpAddress: 10.20.0.10}
  right: {SubnetId: right-1, PrivateIpAddress: 10.20.0.10}
load_balancers:
  provider-nlb: {Type: network, Scheme: internal, Subnets: [provider-1]}
target_groups:
  web:
    {Protocol: TCP, Port: 80, VpcId: provider-vpc, TargetType: instance, HealthCheckIntervalSeconds: 5,
     HealthyThresholdCount: 2, Targets: [web-1]}
listeners:
  http: {LoadBalancerArn: provider-nlb, Protocol: TCP, Port: 80, DefaultActions: [{Type: forward, TargetGroupArn: web}]}
vpc_endpoint_services:
  provider-service:
    {NetworkLoadBalancerArns: [provider-nlb], AcceptanceRequired: false, AllowedPrincipals: ["*"]}
vpc_endpoints:
  left-endpoint:
    {VpcEndpointType: Interface, ServiceName: provider-service, VpcId: left-vpc, SubnetIds: [left-1],
     SubnetConfigurations: [{SubnetId: left-1, Ipv4: 10.20.0.50}]}
  right-endpoint:
    {VpcEndpointType: Interface, ServiceName: provider-service, VpcId: right-vpc, SubnetIds: [right-1],
     SubnetConfigurations: [{SubnetId: right-1, Ipv4: 10.20.0.50}]}
"""

# One HTTP/1.0 request from 10.20.0.10:40000 to the ENI: connect, wait for a line on stdin, then ask.
CLIENT = ("import socket, sys\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('10.20.0.10', 40000)); s.settimeout(5); s.connect(('10.20.0.50', 80))\n"
          "print('connected', flush=True); sys.stdin.readline()\n"
          "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); body = b''\n"
          "while chunk := s.recv(65536): body += chunk\n"
          "print(body.decode(errors='replace'))\n")


def held_connection(lab, node: str, script: str, meanwhile) -> tuple[str, str]:
    """Run `script` in `node` until it prints `connected`, call `meanwhile()`, then let the
    script go on (a line on its stdin); its stdout and stderr."""
    client = subprocess.Popen([sys.executable, "-m", "vpclab", "exec", "--lab", lab.name, node, "--",
                               "python3", "-c", script], env=lab.env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdout.readline().strip() == "connected"
        meanwhile()
        return client.communicate("\n", timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


def test_consumers_with_identical_addresses_and_ports_behind_two_endpoints_stay_apart(up):
    lab = up(TWINS, "pltwin")
    wait_for(lambda: "Hello" in lab.curl("left", "http://10.20.0.50/"), 30, "the service through an endpoint")
    right = []  # the left consumer's connection is open when the right one opens the very same tuple
    out, err = held_connection(lab, "left", CLIENT, lambda: right.append(
        lab.vpclab("exec", "--lab", lab.name, "right", "--", "python3", "-c", CLIENT, input="\n")))
    assert "Hello from the provider" in right[0].stdout
    assert "Hello from the provider" in out, err
    # each connection reached the target as its own, from its own port of the node's IP
    clients = {line for line in (out + right[0].stdout).splitlines() if line.startswith("client: ")}
    assert len(clients) == 2


FORGOTTEN = ("import socket, sys\n"
             "s = socket.create_connection(('10.20.0.50', 80), timeout=5)\n"
             "print('connected', flush=True); sys.stdin.readline()\n"
             "try:\n"
             "    s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print('answer', s.recv(100))\n"
             "except ConnectionResetError:\n"
             "    print('reset')\n")


def test_a_segment_of_a_connection_the_node_no_longer_knows_is_reset_through_the_endpoint(up):
    # as after an idle timeout: the provider's router, which dispatched the connection, hands a segment
    # it does not know to the node, which resets it (the ENI's IP is not the node's: it forwards it)
    lab = up(TWINS, "plrst")
    wait_for(lambda: "Hello" in lab.curl("left", "http://10.20.0.50/"), 30, "the service through an endpoint")
    out, err = held_connection(lab, "left", FORGOTTEN, lambda: lab.sh(PROVIDER_ROUTER, "conntrack -F"))
    assert out.split()[-1:] == ["reset"], out + err


PROVIDER_ROUTER, NODE = "router:provider-vpc", "nlb:provider-nlb:us-east-1a"


def conntrack(lab, ns: str, filters: str) -> list[str]:
    out = lab.sh(ns, f"conntrack -L -p tcp {filters} 2>/dev/null", check=False).stdout
    return [line for line in out.splitlines() if line.startswith("tcp")]


def test_the_provider_router_dispatches_each_endpoints_connections_itself_in_a_zone_of_its_own(up):
    # one forwarding pass less: the node sees none of them, the router holds them, translated to the
    # node's IP, each endpoint link's with its own mark and conntrack zone, though the tuples are the same
    lab = up(TWINS, "plfast")
    wait_for(lambda: "Hello" in lab.curl("left", "http://10.20.0.50/"), 30, "the service through an endpoint")
    assert "Hello from the provider" in lab.curl("right", "http://10.20.0.50/")
    rows = conntrack(lab, PROVIDER_ROUTER, "--orig-src 10.20.0.10 --orig-dst 10.20.0.50 --dport 80")
    assert {m for row in rows for m in re.findall(r"zone-orig=(\d+) .* mark=(\d+) ", row)} == \
        {("1", str(0x70000)), ("2", str(0x70001))}, rows
    node = lab.status()["load_balancers"][0]["nodes"][0]["private_ip"]
    assert all(f"dst={node} " in row.split("src=10.11.0.")[1] for row in rows), rows  # the target sees the node
    assert conntrack(lab, NODE, "--orig-src 10.20.0.10") == []


def test_a_connection_the_router_dispatched_lives_on_when_its_listener_moves_to_the_node(up):
    # Proxy Protocol v2 on, live: the router no longer dispatches port 80 (the node's relay writes the
    # header), yet the open connection keeps its entry in the router, and a new one goes to the relay
    lab = up(TWINS, "plmove")
    wait_for(lambda: "Hello" in lab.curl("left", "http://10.20.0.50/"), 30, "the service through an endpoint")
    out, err = held_connection(lab, "left", FORGOTTEN, lambda: lab.vpclab(
        "modify", "--lab", lab.name, "web", "proxy_protocol_v2.enabled=true"))
    assert out.startswith("answer b'HTTP/1.1 200"), out + err
    body = wait_for(lambda: lab.curl("left", "http://10.20.0.50/"), 15, "an answer through the relay")
    assert "proxy-protocol-hex: " in body
