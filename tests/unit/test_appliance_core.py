"""The reference appliance echoes GWLB's GENEVE byte for byte and applies per-flow rules."""
from __future__ import annotations

import struct
from ipaddress import ip_address

import pytest
from hypothesis import given, strategies as st

from vpclab.engines.appliance.core import Appliance, ApplianceConfig, Drop, Reply, parse_rules
from vpclab.engines.io.geneve import GwlbHeader, encode

EP = 0x0123456789ABCDEF
INSIDE_HOST, OUTSIDE_HOST = "10.0.2.20", "203.0.113.9"


def ip_packet(proto: int, src: str, dst: str, l4: bytes) -> bytes:
    s, d = ip_address(src).packed, ip_address(dst).packed
    if len(s) == 4:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0, s, d) + l4
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, s, d) + l4


def tcp(src: str, dst: str, sport: int, dport: int, flags: int = 0x10) -> bytes:
    return ip_packet(6, src, dst, struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 0x50, flags, 8192, 0, 0))


def udp(src: str, dst: str, sport: int, dport: int) -> bytes:
    return ip_packet(17, src, dst, struct.pack("!HHHH", sport, dport, 8, 0))


def icmp(src: str, dst: str) -> bytes:
    return ip_packet(1, src, dst, bytes([8, 0, 0, 0, 0, 1, 0, 1]))


def wrap(inner: bytes, cookie: int = 1, endpoint: int = EP) -> bytes:
    protocol = 0x0800 if inner[0] >> 4 == 4 else 0x86DD
    return encode(GwlbHeader(protocol=protocol, endpoint_id=endpoint, flow_cookie=cookie), inner)


def appliance(**config) -> Appliance:
    return Appliance(ApplianceConfig.from_dict(config))


def test_reply_is_the_received_datagram_byte_for_byte():
    box = appliance()
    datagram = wrap(tcp(OUTSIDE_HOST, INSIDE_HOST, 40000, 80, flags=0x02), cookie=0x55908770)
    reply = box.handle(datagram, 0)
    assert reply == Reply(datagram) and bytes(reply.datagram) == datagram


def test_extra_options_and_flag_bits_are_echoed_unchanged():
    inner = udp(OUTSIDE_HOST, INSIDE_HOST, 1, 2)
    header = bytearray(wrap(inner)[:40])
    header[0] += 2
    header[1] = 0x01  # a reserved bit, ignored on receipt but echoed
    datagram = bytes(header) + struct.pack("!HBB", 0x0101, 9, 1) + b"\xaa\xbb\xcc\xdd" + inner
    assert bytes(appliance().handle(datagram, 0).datagram) == datagram


def test_new_cookie_for_a_reused_five_tuple_is_echoed_at_once():
    box = appliance()
    packet = tcp(OUTSIDE_HOST, INSIDE_HOST, 40000, 80, flags=0x02)
    assert box.handle(wrap(packet, cookie=1), 0).datagram[36:40] == (1).to_bytes(4, "big")
    assert box.handle(wrap(packet, cookie=2), 1).datagram[36:40] == (2).to_bytes(4, "big")
    assert box.snapshot()["flows"] == 2


def test_default_allows_everything_and_counts():
    box = appliance()
    for cookie in range(3):
        box.handle(wrap(udp(OUTSIDE_HOST, INSIDE_HOST, 1000 + cookie, 53), cookie), 0)
    snap = box.snapshot()
    assert (snap["flows"], snap["packets_in"], snap["packets_out"], snap["dropped"]) == (3, 3, 3, {})


def test_drop_all_drops_every_packet():
    box = appliance(drop_all=True)
    assert box.handle(wrap(udp(OUTSIDE_HOST, INSIDE_HOST, 1, 2)), 0) == Drop("drop_all")
    assert box.snapshot()["dropped"] == {"drop_all": 1}


def test_deny_inbound_port_22_but_replies_of_outbound_ssh_pass():
    box = appliance(inside=["10.0.0.0/16"], rules=[
        {"action": "deny", "direction": "inbound", "protocol": "tcp", "port": 22}])
    inbound = tcp(OUTSIDE_HOST, INSIDE_HOST, 40000, 22, flags=0x02)
    assert box.handle(wrap(inbound, cookie=1), 0) == Drop("denied")
    outbound = tcp(INSIDE_HOST, OUTSIDE_HOST, 40001, 22, flags=0x02)
    assert isinstance(box.handle(wrap(outbound, cookie=2), 0), Reply)
    reply = tcp(OUTSIDE_HOST, INSIDE_HOST, 22, 40001, flags=0x12)  # from outside, to inside
    assert isinstance(box.handle(wrap(reply, cookie=2), 0), Reply)
    assert box.snapshot()["rule_flows"] == [1]


def test_verdict_sticks_to_the_flow_so_replies_follow_it():
    box = appliance(inside=["10.0.0.0/16"], rules=[{"action": "deny", "direction": "outbound"}])
    assert box.handle(wrap(udp(INSIDE_HOST, OUTSIDE_HOST, 5000, 53), cookie=7), 0) == Drop("denied")
    assert box.handle(wrap(udp(OUTSIDE_HOST, INSIDE_HOST, 53, 5000), cookie=7), 0) == Drop("denied")
    assert box.snapshot()["dropped"] == {"denied": 2}


def test_first_matching_rule_wins():
    box = appliance(rules=[
        {"action": "allow", "protocol": "udp", "port": "50-60"},
        {"action": "deny", "protocol": "udp"},
    ])
    assert isinstance(box.handle(wrap(udp(OUTSIDE_HOST, INSIDE_HOST, 9, 53), 1), 0), Reply)
    assert box.handle(wrap(udp(OUTSIDE_HOST, INSIDE_HOST, 9, 123), 2), 0) == Drop("denied")
    assert isinstance(box.handle(wrap(tcp(OUTSIDE_HOST, INSIDE_HOST, 9, 123), 3), 0), Reply)
    assert box.snapshot()["rule_flows"] == [1, 1]


def test_rules_match_source_and_destination_cidrs():
    box = appliance(rules=[
        {"action": "deny", "source": "203.0.113.0/24", "destination": ["10.0.2.0/24", "10.0.3.0/24"]}])
    assert box.handle(wrap(icmp(OUTSIDE_HOST, INSIDE_HOST), 1), 0) == Drop("denied")
    assert isinstance(box.handle(wrap(icmp(OUTSIDE_HOST, "10.0.4.1"), 2), 0), Reply)
    assert isinstance(box.handle(wrap(icmp("198.51.100.1", INSIDE_HOST), 3), 0), Reply)


def test_ipv4_addresses_never_match_ipv6_cidrs():
    box = appliance(rules=[{"action": "deny", "source": "::/0"}])
    assert isinstance(box.handle(wrap(icmp(OUTSIDE_HOST, INSIDE_HOST), 1), 0), Reply)
    assert box.handle(wrap(udp("2001:db8::1", "2001:db8::2", 1, 2), 2), 0) == Drop("denied")


def test_port_rules_never_match_portless_protocols():
    box = appliance(rules=[{"action": "deny", "port": [1, "2-65535"]}])
    assert isinstance(box.handle(wrap(icmp(OUTSIDE_HOST, INSIDE_HOST), 1), 0), Reply)
    assert box.handle(wrap(udp(OUTSIDE_HOST, INSIDE_HOST, 1, 2), 2), 0) == Drop("denied")


def test_new_rules_apply_to_existing_flows_by_their_initiator():
    box = appliance(inside=["10.0.0.0/16"])
    out = wrap(tcp(INSIDE_HOST, OUTSIDE_HOST, 40000, 443, flags=0x02), cookie=5)
    reply = wrap(tcp(OUTSIDE_HOST, INSIDE_HOST, 443, 40000, flags=0x12), cookie=5)
    assert isinstance(box.handle(out, 0), Reply)
    box.configure(ApplianceConfig.from_dict({"inside": ["10.0.0.0/16"], "rules": [
        {"action": "deny", "direction": "outbound", "port": 443}]}))
    assert box.handle(reply, 1) == Drop("denied")  # judged as the outbound flow it is


def test_idle_flows_expire_and_the_next_packet_starts_a_new_flow():
    box = appliance(flow_idle_timeout=60)
    datagram = wrap(udp(OUTSIDE_HOST, INSIDE_HOST, 1, 2))
    box.handle(datagram, 0)
    assert box.expire(59) == 0 and box.expire(60) == 1
    box.handle(datagram, 61)
    assert box.snapshot()["flows"] == 2


def test_a_flow_idle_past_its_timeout_is_judged_afresh_even_before_expire_runs():
    box = appliance(flow_idle_timeout=60, inside=["10.0.0.0/16"],
                    rules=[{"action": "deny", "direction": "inbound"}])
    outbound = wrap(tcp(INSIDE_HOST, OUTSIDE_HOST, 40000, 443, flags=0x02), cookie=5)
    reply = wrap(tcp(OUTSIDE_HOST, INSIDE_HOST, 443, 40000, flags=0x12), cookie=5)
    assert isinstance(box.handle(outbound, 0), Reply)
    assert isinstance(box.handle(reply, 59), Reply)  # the flow's verdict
    assert box.handle(reply, 200) == Drop("denied")  # idle: a new flow, started from outside
    assert box.snapshot()["flows"] == 2


def test_drop_all_switched_on_live_stops_flows_already_passing_and_off_again_resumes_them():
    box = appliance()
    datagram = wrap(udp(OUTSIDE_HOST, INSIDE_HOST, 1, 2))
    assert isinstance(box.handle(datagram, 0), Reply)
    box.configure(ApplianceConfig.from_dict({"drop_all": True}))
    assert box.handle(datagram, 1) == Drop("drop_all")
    box.configure(ApplianceConfig())
    assert isinstance(box.handle(datagram, 2), Reply)
    assert box.snapshot()["flows"] == 1


def test_malformed_datagrams_are_counted_by_reason():
    box = appliance()
    good = wrap(udp(OUTSIDE_HOST, INSIDE_HOST, 1, 2))
    assert box.handle(good[:12], 0) == Drop("truncated")
    assert box.handle(good[:40] + b"\x45junk", 0) == Drop("malformed_inner")
    snap = box.snapshot()
    assert snap["malformed"] == {"malformed_inner": 1, "truncated": 1}
    assert (snap["packets_in"], snap["packets_out"], snap["flows"]) == (2, 0, 0)


@given(st.binary(max_size=100))
def test_appliance_never_raises_on_arbitrary_bytes(data):
    box = appliance(inside=["10.0.0.0/8"], rules=[{"action": "deny", "direction": "inbound", "port": 22}])
    assert isinstance(box.handle(data, 0), (Reply, Drop))
    assert isinstance(box.handle(wrap(bytes([0x45]) + data), 0), (Reply, Drop))


# --- parsing rules from a lab file ------------------------------------------------------

def test_rules_parse_from_plain_data():
    (rule,) = parse_rules([{"action": "allow", "direction": "any", "protocol": 17,
                            "port": [53, "8000-8100"], "source": "10.0.0.0/8"}])
    assert (rule.action, rule.protocol, rule.ports) == ("allow", 17, ((53, 53), (8000, 8100)))
    assert str(rule.source[0]) == "10.0.0.0/8" and rule.destination == ()
    assert parse_rules([{"action": "deny", "protocol": "any"}])[0].protocol is None


@pytest.mark.parametrize("config,message", [
    ({"rules": [{"action": "permit"}]}, r"rules\[0\]\.action"),
    ({"rules": [{"action": "deny", "direction": "in"}]}, r"rules\[0\]\.direction"),
    ({"rules": [{"action": "deny", "protocol": "tcpp"}]}, r"protocol"),
    ({"rules": [{"action": "deny", "protocol": 256}]}, r"protocol"),
    ({"rules": [{"action": "deny", "port": 0}]}, r"port"),
    ({"rules": [{"action": "deny", "port": "90-80"}]}, r"port"),
    ({"rules": [{"action": "deny", "port": "http"}]}, r"port"),
    ({"rules": [{"action": "deny", "protocol": "icmp", "port": 80}]}, r"port"),
    ({"rules": [{"action": "deny", "source": "10.0.0.1/24"}]}, r"source"),
    ({"rules": [{"action": "deny", "destination": 10}]}, r"destination"),
    ({"rules": [{"action": "deny", "prot": "tcp"}]}, r"unknown key"),
    ({"rules": [{"action": "deny", "direction": "inbound"}]}, r"inside"),
    ({"rules": {"action": "deny"}}, r"list"),
    ({"rules": ["deny"]}, r"mapping"),
    ({"drop_all": "yes"}, r"drop_all"),
    ({"flow_idle_timeout": 0}, r"flow_idle_timeout"),
    ({"insde": []}, r"unknown key"),
])
def test_bad_rules_are_rejected_with_a_clear_message(config, message):
    with pytest.raises(ValueError, match=message):
        ApplianceConfig.from_dict(config)
