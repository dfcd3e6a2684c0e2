"""Transit gateways, proven with real traffic in examples/gwlb-centralized-tgw.yaml: egress through
an appliance then a NAT gateway, east-west inspected, appliance mode's symmetry (and its absence),
route tables and live changes, blackholes, the overlap rule, an AZ without an attachment subnet,
MTU 8,500."""
from __future__ import annotations

import json

import pytest

from conftest import ROOT, start_capture, target_states, wait_for

pytestmark = pytest.mark.lab
EXAMPLE = ROOT / "examples" / "gwlb-centralized-tgw.yaml"

# The example, plus: a UDP echo on app2-c (a flow held as long as a test likes), a TCP sink on
# app2-a that answers with the byte count, app1-d in an AZ where app1's attachment has no subnet,
# and app3, whose 10.2.128.0/17 overlaps app2's propagated CIDR (so it is not propagated).
EXTRAS = {
    "  egress: {CidrBlock: 10.20.0.0/16}":
        "  egress: {CidrBlock: 10.20.0.0/16}\n  app3: {CidrBlock: 10.2.128.0/17}",
    "  egress-public-c: {VpcId: egress, AvailabilityZone: c, CidrBlock: 10.20.2.0/24}":
        "  egress-public-c: {VpcId: egress, AvailabilityZone: c, CidrBlock: 10.20.2.0/24}\n"
        "  app3-tgw-a: {VpcId: app3, AvailabilityZone: a, CidrBlock: 10.2.128.0/28}\n"
        "  app3-private-a: {VpcId: app3, AvailabilityZone: a, CidrBlock: 10.2.129.0/24}",
    "  egress-attach: {TransitGatewayId: tgw, VpcId: egress, SubnetIds: [egress-tgw-a, egress-tgw-c]}":
        "  egress-attach: {TransitGatewayId: tgw, VpcId: egress, SubnetIds: [egress-tgw-a, egress-tgw-c]}\n"
        "  app3-attach: {TransitGatewayId: tgw, VpcId: app3, SubnetIds: [app3-tgw-a]}",
    "    Associations: [app1-attach, app2-attach, egress-attach]":
        "    Associations: [app1-attach, app2-attach, egress-attach, app3-attach]",
    "    Propagations: [app1-attach, app2-attach, egress-attach]":
        "    Propagations: [app1-attach, app2-attach, egress-attach, app3-attach]",
    "  sec-tgw-a-rt:\n":
        "  app3-rt:\n    VpcId: app3\n    Main: true\n    Routes:\n"
        "      - {DestinationCidrBlock: 0.0.0.0/0, TransitGatewayId: tgw}\n  sec-tgw-a-rt:\n",
    "  appliance-sg:\n":
        "  app3-sg:\n    VpcId: app3\n    SecurityGroupIngress:\n      - {IpProtocol: -1, CidrIp: 10.0.0.0/8}\n"
        "  appliance-sg:\n",
    "  app1-a: {SubnetId: app1-private-a, SecurityGroupIds: [app1-sg]}":
        "  app1-a: {SubnetId: app1-private-a, SecurityGroupIds: [app1-sg]}\n"
        "  app3-a: {SubnetId: app3-private-a, SecurityGroupIds: [app3-sg]}",
    "  app2-c: {SubnetId: app2-private-c, SecurityGroupIds: [app2-sg]}":
        "  app2-c:\n    SubnetId: app2-private-c\n    SecurityGroupIds: [app2-sg]\n"
        "    Run: [\"socat UDP4-RECVFROM:7,reuseaddr,fork PIPE\"]",
    "  app2-a: {SubnetId: app2-private-a, SecurityGroupIds: [app2-sg]}":
        "  app2-a:\n    SubnetId: app2-private-a\n    SecurityGroupIds: [app2-sg]\n"
        "    Run: [\"socat TCP4-LISTEN:9000,reuseaddr,fork SYSTEM:'wc -c'\"]\n"
        "  app1-d: {SubnetId: app1-private-d, SecurityGroupIds: [app1-sg]}",
    "  app1-private-c: {VpcId: app1, AvailabilityZone: c, CidrBlock: 10.1.2.0/24}":
        "  app1-private-c: {VpcId: app1, AvailabilityZone: c, CidrBlock: 10.1.2.0/24}\n"
        "  app1-private-d: {VpcId: app1, AvailabilityZone: d, CidrBlock: 10.1.3.0/24}",
}

UDP_FLOW = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {sport}))
s.settimeout(1)
ok = 0
for i in range({count}):
    s.sendto(b"ping %d" % i, ("{dst}", 7))
    try:
        ok += s.recv(100) == b"ping %d" % i
    except socket.timeout:
        pass
print(ok)
"""


def lab_text() -> str:
    text = EXAMPLE.read_text()
    for old, new in EXTRAS.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def tgw(request, tmp_path_factory):
    # one lab for the module: bring-up and health take most of a test's time
    from conftest import RunningLab, lab_environment, lab_file_needs, skip_unless_doctor_finds
    home = tmp_path_factory.mktemp("home")
    path = tmp_path_factory.mktemp("lab") / "tgw.yaml"
    path.write_text(lab_text())
    skip_unless_doctor_finds(lab_file_needs(path, "tgw"))
    lab = RunningLab("tgw", lab_environment(home))
    try:
        lab.vpclab("up", str(path), "--name", "tgw", timeout=120)
        wait_for(lambda: set(target_states(lab, "appliances").values()) == {"healthy"}, 40, "appliances healthy")
        yield lab
    finally:
        lab.vpclab("down", "--lab", "tgw", check=False, timeout=60)


def appliance_packets(lab) -> dict[str, int]:
    return {i["name"]: i.get("appliance", {}).get("packets_in", 0)
            for i in lab.status()["instances"] if i["role"] == "appliance"}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in after}


def ip(lab, name: str) -> str:
    return lab.instance(name)["private_ip"]


def udp_exchange(lab, sport: int, count: int = 5) -> int:
    code = UDP_FLOW.format(sport=sport, count=count, dst=ip(lab, "app2-c"))
    return int(lab.sh("app1-a", f"python3 -c '{code}'", timeout=count + 20).stdout.strip() or 0)


def change(lab, *args: str) -> None:
    lab.vpclab(*args, "--lab", lab.name)


def propagation(lab, verb: str, attachment: str) -> None:
    change(lab, f"{verb}-transit-gateway-route-table-propagation", "inspected",
           "--transit-gateway-attachment-id", attachment)


def inspected_routes(lab) -> str:
    return lab.vpclab("routes", "inspected", "--lab", lab.name).stdout


def test_egress_crosses_an_appliance_then_the_nat_gateway_of_its_az(tgw):
    status = tgw.status()
    eips = {n["subnet"][-1]: n["public_ip"] for n in status["nat_gateways"]}  # AZ letter -> EIP
    for _ in range(3):
        before = appliance_packets(tgw)
        page = tgw.curl("app1-a", "http://server.internet.test/")
        used = {name for name, n in delta(before, appliance_packets(tgw)).items() if n}
        assert len(used) == 1, used  # the whole connection, both ways, through one appliance
        # after inspection the flow leaves the security VPC in the appliance's AZ, so by that AZ's NAT gateway
        assert f"client: {eips[used.pop()[-1]]}:" in page, page


def test_east_west_between_the_application_vpcs_is_inspected(tgw):
    before = appliance_packets(tgw)
    page = tgw.curl("app1-a", f"http://{ip(tgw, 'app2-c')}/")
    assert page.startswith("app2-c ") and f"client: {ip(tgw, 'app1-a')}:" in page  # no NAT between VPCs
    assert sum(delta(before, appliance_packets(tgw)).values()) >= 10


def test_appliance_mode_keeps_both_directions_on_one_appliance_and_off_it_splits_them(tgw):
    """app1-a (AZ a) to app2-c (AZ c): without appliance mode the request is inspected in AZ a
    and the reply in AZ c, as on AWS."""
    used = set()
    for sport in range(42101, 42125):  # until both appliances are seen, at most 24 flows
        before = appliance_packets(tgw)
        assert udp_exchange(tgw, sport, 5) == 5
        counts = delta(before, appliance_packets(tgw))
        assert sorted(counts.values()) == [0, 10], sport
        used |= {name for name, n in counts.items() if n}
        if len(used) == 2:
            break
    # the hash, not the ingress AZ, picks: 24 flows all on one appliance has odds of 1 in 8 million
    assert used == {"appliance-a", "appliance-c"}
    change(tgw, "modify-transit-gateway-vpc-attachment", "security-attach", "--options",
           "ApplianceModeSupport=disable")
    try:
        for sport in (42011, 42012):
            before = appliance_packets(tgw)
            assert udp_exchange(tgw, sport, 5) == 5  # it still works: this appliance is stateless
            assert delta(before, appliance_packets(tgw)) == {"appliance-a": 5, "appliance-c": 5}, sport
        attachment = next(a for t in tgw.status()["transit_gateways"] for a in t["attachments"]
                          if a["name"] == "security-attach")
        assert attachment["appliance_mode_support"] == "disable"
    finally:
        change(tgw, "modify-transit-gateway-vpc-attachment", "security-attach", "--options",
               "ApplianceModeSupport=enable")
    before = appliance_packets(tgw)
    assert udp_exchange(tgw, 42021, 5) == 5
    assert sorted(delta(before, appliance_packets(tgw)).values()) == [0, 10]


def test_routes_and_status_show_route_tables_propagations_and_the_endpoint_service_name(tgw):
    out = tgw.vpclab("routes", "inspected", "--lab", tgw.name).stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    status = tgw.status()
    gateway = status["transit_gateways"][0]
    ids = {a["name"]: a["id"] for a in gateway["attachments"]}
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [
        ("0.0.0.0/0", ids["egress-attach"], "static", "active"),
        ("10.1.0.0/16", ids["app1-attach"], "propagated", "active"),
        ("10.2.0.0/16", ids["app2-attach"], "propagated", "active"),
        ("10.20.0.0/16", ids["egress-attach"], "propagated", "active")]
    spoke = next(t for t in gateway["route_tables"] if t["name"] == "spoke")
    assert spoke["id"].startswith("tgw-rtb-0") and spoke["propagations"] == []
    assert spoke["associations"] == [ids["app1-attach"], ids["app2-attach"], ids["egress-attach"],
                                     ids["app3-attach"]]
    assert gateway["id"].startswith("tgw-0") and gateway["default_route_table_association"] == "disable"
    service = status["vpc_endpoint_services"][0]
    assert service["service_name"] == f"com.amazonaws.vpce.ap-northeast-1.{service['id']}"
    assert service["service_name"] in tgw.vpclab("status", "--lab", tgw.name).stdout
    assert "inspected" in tgw.vpclab("status", "--lab", tgw.name).stdout


def test_live_static_blackhole_route_and_propagation_changes(tgw):
    app2c = f"http://{ip(tgw, 'app2-c')}/"
    app2a = f"http://{ip(tgw, 'app2-a')}/"
    app3a = f"http://{ip(tgw, 'app3-a')}/"
    assert tgw.curl("app1-a", app3a, timeout=2) == ""  # app3's CIDR overlaps app2's: not propagated
    change(tgw, "create-transit-gateway-route", "inspected", "--destination-cidr-block", "10.2.2.0/24",
           "--blackhole")
    try:
        assert tgw.curl("app1-a", app2c, timeout=2) == ""  # the more specific blackhole drops
        assert tgw.curl("app1-a", app2a).startswith("app2-a ")
        assert "10.2.2.0/24" in tgw.vpclab("routes", "inspected", "--lab", tgw.name).stdout
    finally:
        change(tgw, "delete-transit-gateway-route", "inspected", "--destination-cidr-block", "10.2.2.0/24")
    assert tgw.curl("app1-a", app2c).startswith("app2-c ")
    propagation(tgw, "disable", "app2-attach")
    try:
        # 10.2.0.0/16 gone: the default route sends it to the egress VPC, whose NAT has no way there
        assert tgw.curl("app1-a", app2a, timeout=2) == ""
        # and app3's overlapping 10.2.128.0/17, held back while app2's CIDR was propagated, now is
        assert "10.2.128.0/17" in inspected_routes(tgw)
        assert tgw.curl("app1-a", app3a).startswith("app3-a ")
    finally:
        propagation(tgw, "enable", "app2-attach")
        # app3's CIDR is the one already propagated now: app2's overlapping one waits
        try:
            assert "10.2.128.0/17" in inspected_routes(tgw) and "10.2.0.0/16" not in inspected_routes(tgw)
            assert tgw.curl("app1-a", app2a, timeout=2) == ""
        finally:  # withdrawn and propagated again, app3's comes after app2's
            propagation(tgw, "disable", "app3-attach")
            propagation(tgw, "enable", "app3-attach")
    assert tgw.curl("app1-a", app2a).startswith("app2-a ")
    assert "10.2.128.0/17" not in inspected_routes(tgw)
    assert tgw.curl("app1-a", app3a, timeout=2) == ""  # 10.2.0.0/16 leads to app2 again
    refused = tgw.vpclab("delete-transit-gateway-route", "inspected", "--destination-cidr-block", "10.9.0.0/16",
                         "--lab", tgw.name, check=False)
    assert refused.returncode != 0 and "InvalidRoute.NotFound" in refused.stdout + refused.stderr


def test_live_static_routes_to_attachments_and_static_over_propagated(tgw):
    app2a = f"http://{ip(tgw, 'app2-a')}/"
    # spoke: static routes straight to the other application VPC, both ways: east-west skips inspection
    for cidr, attachment in (("10.2.0.0/16", "app2-attach"), ("10.1.0.0/16", "app1-attach")):
        change(tgw, "create-transit-gateway-route", "spoke", "--destination-cidr-block", cidr,
               "--transit-gateway-attachment-id", attachment)
    try:
        before = appliance_packets(tgw)
        assert tgw.curl("app1-a", app2a).startswith("app2-a ")
        assert sum(delta(before, appliance_packets(tgw)).values()) == 0
    finally:
        for cidr in ("10.2.0.0/16", "10.1.0.0/16"):
            change(tgw, "delete-transit-gateway-route", "spoke", "--destination-cidr-block", cidr)
    before = appliance_packets(tgw)
    assert tgw.curl("app1-a", app2a).startswith("app2-a ")
    assert sum(delta(before, appliance_packets(tgw)).values()) >= 10  # inspected again
    # inspected: a blackhole for exactly app2's propagated CIDR replaces the propagated route
    change(tgw, "create-transit-gateway-route", "inspected", "--destination-cidr-block", "10.2.0.0/16",
           "--blackhole")
    try:
        shown = json.loads(tgw.vpclab("routes", "inspected", "--json", "--lab", tgw.name).stdout)
        assert shown["AdditionalRoutesAvailable"] is False
        assert [r for r in shown["Routes"] if r["DestinationCidrBlock"] == "10.2.0.0/16"] == [
            {"DestinationCidrBlock": "10.2.0.0/16", "Type": "static", "State": "blackhole"}]
        assert tgw.curl("app1-a", app2a, timeout=2) == ""
    finally:
        change(tgw, "delete-transit-gateway-route", "inspected", "--destination-cidr-block", "10.2.0.0/16")
    assert tgw.curl("app1-a", app2a).startswith("app2-a ")  # the propagated route is back


def test_an_az_without_an_attachment_subnet_cannot_reach_the_transit_gateway(tgw):
    assert tgw.curl("app1-d", "http://server.internet.test/", timeout=2) == ""
    assert tgw.curl("app1-d", f"http://{ip(tgw, 'app2-a')}/", timeout=2) == ""
    assert tgw.curl("app1-d", f"http://{ip(tgw, 'app1-a')}/").startswith("app1-a ")  # its own VPC still works


def test_mtu_8500_drops_larger_packets_and_tcp_mss_is_clamped(tgw):
    dst = ip(tgw, "app2-a")
    fits = tgw.sh("app1-a", f"ping -c1 -W2 -M do -s 8472 {dst}", check=False)  # 8,500 bytes of IP
    assert fits.returncode == 0, fits.stdout + fits.stderr
    over = tgw.sh("app1-a", f"ping -c1 -W2 -M do -s 8473 {dst}", check=False)
    assert over.returncode != 0 and "frag needed" not in over.stdout  # dropped silently, no ICMP
    capture = start_capture(tgw, "app2-a", "tcp[tcpflags] & tcp-syn != 0 and dst port 9000", "-c", "1")
    sent = tgw.sh("app1-a", f"head -c 300000 /dev/zero | socat -t 5 - TCP4:{dst}:9000", timeout=40)
    assert sent.stdout.split() == ["300000"]  # 9001-byte segments would not have crossed
    syn, _ = capture.communicate(timeout=30)
    assert "mss 8460" in syn, syn  # the client offered 8961; the gateway clamped it
