"""The VPC router's NLB fast path (engines.nlb router_fastpath_ruleset): the router dispatches an
in-VPC client's connection itself, and security groups still judge it as if it crossed the node."""
from __future__ import annotations

import pytest

from conftest import target_states, wait_for

pytestmark = pytest.mark.lab

# web admits port 80 from the NLB's node only; narrow may send to web itself, not to the NLB; the
# node's subnet lets nothing in from far's; the clients' subnet lets nothing in from web's address
LAB = """
lab: {region: us-east-1, account: "111111111111"}
vpcs:
  app: {CidrBlock: 10.0.0.0/16}
subnets:
  a: {VpcId: app, AvailabilityZone: a, CidrBlock: 10.0.1.0/24}
  clients: {VpcId: app, AvailabilityZone: a, CidrBlock: 10.0.9.0/24}
  far: {VpcId: app, AvailabilityZone: a, CidrBlock: 10.0.8.0/24}
network_acls:
  not-from-far:
    VpcId: app
    SubnetAssociations: [a]
    Entries:
      - {RuleNumber: 100, Protocol: -1, RuleAction: deny, CidrBlock: 10.0.8.0/24}
      - {RuleNumber: 200, Protocol: -1, RuleAction: allow, CidrBlock: 0.0.0.0/0}
      - {RuleNumber: 100, Protocol: -1, RuleAction: allow, Egress: true, CidrBlock: 0.0.0.0/0}
  not-from-web:
    VpcId: app
    SubnetAssociations: [clients]
    Entries:
      - {RuleNumber: 100, Protocol: -1, RuleAction: deny, CidrBlock: 10.0.1.10/32}
      - {RuleNumber: 200, Protocol: -1, RuleAction: allow, CidrBlock: 0.0.0.0/0}
      - {RuleNumber: 100, Protocol: -1, RuleAction: allow, Egress: true, CidrBlock: 0.0.0.0/0}
security_groups:
  from-nlb:
    VpcId: app
    SecurityGroupIngress: [{IpProtocol: tcp, FromPort: 80, ToPort: 80, CidrIp: 10.0.1.5/32}]
  to-web-only:
    VpcId: app
    SecurityGroupEgress: [{IpProtocol: tcp, FromPort: 80, ToPort: 80, CidrIp: 10.0.1.10/32}]
instances:
  web: {SubnetId: a, PrivateIpAddress: 10.0.1.10, SecurityGroupIds: [from-nlb]}
  client: {SubnetId: clients, PrivateIpAddress: 10.0.9.10}
  narrow: {SubnetId: clients, PrivateIpAddress: 10.0.9.20, SecurityGroupIds: [to-web-only]}
  faraway: {SubnetId: far, PrivateIpAddress: 10.0.8.10}
load_balancers:
  web-nlb:
    Type: network
    Scheme: internal
    SubnetMappings: [{SubnetId: a, PrivateIPv4Address: 10.0.1.5}]
target_groups:
  web-ips:
    Protocol: TCP
    Port: 80
    VpcId: app
    TargetType: ip
    HealthCheckIntervalSeconds: 5
    HealthyThresholdCount: 2
    UnhealthyThresholdCount: 2
    Targets: [10.0.1.10]
listeners:
  http: {LoadBalancerArn: web-nlb, Protocol: TCP, Port: 80, DefaultActions: [{Type: forward, TargetGroupArn: web-ips}]}
"""
NODE, ROUTER, NODE_NS = "10.0.1.5", "router:app", "nlb:web-nlb:us-east-1a"


def client_seen_by_web(lab, node: str = "client") -> str:
    """The address web saw the request come from ('' when it never got there)."""
    body = lab.curl(node, f"http://{NODE}/", timeout=2)
    return next((line.split(": ", 1)[1].rsplit(":", 1)[0] for line in body.splitlines()
                 if line.startswith("client: ")), "")


def entries(lab, ns: str, filters: str) -> int:
    out = lab.sh(ns, f"conntrack -L -p tcp {filters} 2>/dev/null", check=False).stdout
    return sum(1 for line in out.splitlines() if line.startswith("tcp"))


def test_router_dispatches_in_vpc_clients_and_security_groups_judge_as_through_the_node(up):
    lab = up(LAB, "nlbfast")
    wait_for(lambda: set(target_states(lab, "web-ips").values()) == {"healthy"}, 40, "web healthy")
    # the target sees the node's IP (preserve_client_ip off), which web's group admits; the replies
    # come from the node's address into the clients' subnet, whose ACL refuses only web's
    assert client_seen_by_web(lab) == NODE
    assert lab.curl("client", "http://10.0.1.10/", timeout=2) == ""  # the group is enforced
    # the router holds the connection, translated (mark 0x30000), and the node never saw it
    mine = "--orig-src 10.0.9.10 --orig-dst 10.0.1.5 --dport 80"
    assert entries(lab, ROUTER, f"{mine} --mark 0x30000") >= 1
    assert entries(lab, NODE_NS, "--orig-src 10.0.9.10") == 0
    # narrow's egress allows web itself but not the NLB: refused, judged by the node's address
    assert client_seen_by_web(lab, "narrow") == ""
    # the node's subnet ACL refuses far's subnet (stateless, per packet): faraway never gets through
    assert client_seen_by_web(lab, "faraway") == ""
    # The target now sees the client's own address, which web's group does not admit...
    lab.vpclab("modify", "--lab", lab.name, "web-ips", "preserve_client_ip.enabled=true")
    assert wait_for(lambda: lab.curl("client", f"http://{NODE}/", timeout=2) == "", 20,
                    "web's group to refuse the client's own address")
    # ...until it does: a live group change reloads the router's ruleset, and the fast path with it
    lab.vpclab("authorize-security-group-ingress", "--lab", lab.name, "from-nlb", "--protocol", "tcp",
               "--port", "80", "--cidr", "10.0.9.10/32")
    assert wait_for(lambda: client_seen_by_web(lab) == "10.0.9.10", 20, "web to see the client's address")
    assert entries(lab, ROUTER, f"{mine} --mark 0x10000") >= 1
    assert entries(lab, NODE_NS, "--orig-src 10.0.9.10") == 0
