"""The GWLB node core behaves as reference §2 says AWS's does."""
from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, strategies as st

from vpclab.engines.io.geneve import ETH_P_IPV6, GwlbHeader, decode, encode, vpce_id_to_int
from vpclab.engines.gwlb import Decap, Drop, Encap, GwlbConfig, GwlbNode, Reset, flow_key
from vpclab.engines.gwlb.core import RESET_LINGER, PeakRate

AZ = "us-east-1a"
EP = vpce_id_to_int("vpce-0123456789abcdef0")
CLIENT, SERVER = "10.0.1.10", "198.51.100.7"
SYN, ACK, RST = 0x02, 0x10, 0x04


def ip_packet(proto: int, src: str, dst: str, l4: bytes) -> bytes:
    s, d = ip_address(src).packed, ip_address(dst).packed
    if len(s) == 4:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0, s, d) + l4
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, s, d) + l4


def tcp(src=CLIENT, dst=SERVER, sport=40000, dport=443, flags=ACK, payload=b"") -> bytes:
    return ip_packet(6, src, dst, struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 0x50, flags, 8192, 0, 0)
                     + payload)


def udp(src=CLIENT, dst=SERVER, sport=40000, dport=53, payload=b"q") -> bytes:
    return ip_packet(17, src, dst, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def icmp(src=CLIENT, dst=SERVER) -> bytes:
    return ip_packet(1, src, dst, bytes([8, 0, 0, 0, 0, 1, 0, 1]))


def make_node(targets: int = 2, healthy: bool = True, **config) -> GwlbNode:
    node = GwlbNode(GwlbConfig(availability_zone=AZ, **config), endpoints=[EP])
    for i in range(targets):
        node.register(f"i-{i}", f"10.9.0.{10 + i}")
        if healthy:
            node.set_target_health(f"i-{i}", True, now=0)
    return node


def send(node: GwlbNode, packet: bytes, now: float = 0.0) -> Encap:
    result = node.from_endpoint(packet, EP, now)
    assert isinstance(result, Encap), result
    return result


def cookie_of(result: Encap) -> int:
    return decode(result.datagram)[0].flow_cookie


def target_of(node: GwlbNode, result: Encap) -> str:
    return next(t.id for t in node.targets() if t.ip == result.target_ip)


# --- encapsulation ---------------------------------------------------------------

def test_new_flow_is_encapsulated_with_the_endpoint_id_and_a_cookie():
    node = make_node()
    packet = tcp(flags=SYN)
    result = send(node, packet)
    header, offset = decode(result.datagram)
    assert header.endpoint_id == EP and header.attachment_id == 0 and header.protocol == 0x0800
    assert result.datagram[offset:] == packet and offset == 40
    assert result.target_ip in ("10.9.0.10", "10.9.0.11")
    assert 49152 <= result.src_port <= 65535


def test_ipv6_inner_packets_use_protocol_86dd():
    node = make_node()
    result = send(node, tcp(src="2001:db8::1", dst="2001:db8:1::2", flags=SYN))
    assert decode(result.datagram)[0].protocol == ETH_P_IPV6


def test_link_layer_padding_is_trimmed_from_the_inner_packet():
    node = make_node()
    packet = tcp()
    result = send(node, packet + bytes(6))
    assert result.datagram[40:] == packet


# --- flow stickiness ---------------------------------------------------------------

def test_reply_direction_hashes_to_same_target():
    node = make_node(targets=8)
    out = send(node, tcp(flags=SYN))
    back = send(node, tcp(src=SERVER, dst=CLIENT, sport=443, dport=40000, flags=SYN | ACK))
    assert (back.target_ip, back.src_port, cookie_of(back)) == (out.target_ip, out.src_port, cookie_of(out))
    assert node.snapshot()["NewFlowCount"] == 1


def test_retransmitted_syn_reuses_cookie_and_source_port():
    node = make_node(targets=4)
    first, again = send(node, tcp(flags=SYN), 0), send(node, tcp(flags=SYN), 3)
    assert first == again


def test_flows_spread_over_healthy_targets():
    node = make_node(targets=4)
    used = {send(node, tcp(sport=port, flags=SYN)).target_ip for port in range(30000, 30200)}
    assert len(used) == 4


def test_each_new_flow_gets_its_own_cookie():
    node = make_node()
    cookies = {cookie_of(send(node, udp(sport=port))) for port in range(1024, 3024)}
    assert len(cookies) == 2000


def test_icmp_flows_key_on_the_three_tuple():
    node = make_node()
    assert cookie_of(send(node, icmp())) == cookie_of(send(node, icmp(src=SERVER, dst=CLIENT)))
    assert node.snapshot()["NewFlowCount"] == 1


def test_three_tuple_stickiness_ignores_ports():
    node = make_node(targets=8, stickiness="source_ip_dest_ip_proto")
    results = {(r.target_ip, cookie_of(r)) for r in (send(node, tcp(sport=p)) for p in range(1000, 1050))}
    assert len(results) == 1
    assert cookie_of(send(node, udp())) != results.pop()[1]


def test_two_tuple_stickiness_ignores_protocol_too():
    node = make_node(targets=8, stickiness="source_ip_dest_ip")
    cookies = {cookie_of(send(node, p)) for p in (tcp(), udp(), icmp(), udp(src=SERVER, dst=CLIENT))}
    assert len(cookies) == 1


def test_stickiness_comes_from_aws_attributes():
    config = GwlbConfig.from_attributes({"stickiness.enabled": "true", "stickiness.type": "source_ip_dest_ip"})
    assert config.stickiness == "source_ip_dest_ip"
    assert GwlbConfig.from_attributes({"stickiness.type": "source_ip_dest_ip"}).stickiness == "5-tuple"


ipv4s = st.builds(lambda n: str(IPv4Address(n)), st.integers(0, 2**32 - 1))
ipv6s = st.builds(lambda n: str(IPv6Address(n)), st.integers(0, 2**128 - 1))


@given(st.sampled_from(["tcp", "udp", "icmp"]), st.one_of(st.tuples(ipv4s, ipv4s), st.tuples(ipv6s, ipv6s)),
       st.integers(0, 65535), st.integers(0, 65535),
       st.sampled_from(["5-tuple", "source_ip_dest_ip_proto", "source_ip_dest_ip"]))
def test_flow_key_is_direction_independent(kind, addresses, sport, dport, stickiness):
    a, b = addresses
    if kind == "icmp":
        forward, reverse = icmp(a, b), icmp(b, a)
    else:
        build = tcp if kind == "tcp" else udp
        forward, reverse = build(a, b, sport, dport), build(b, a, dport, sport)
    assert flow_key(forward, stickiness) == flow_key(reverse, stickiness) is not None


def test_flow_key_distinguishes_ports_only_in_five_tuple_mode():
    assert flow_key(udp(sport=1)) != flow_key(udp(sport=2))
    assert flow_key(udp(sport=1), "source_ip_dest_ip_proto") == flow_key(udp(sport=2), "source_ip_dest_ip_proto")


# --- idle timeouts and cookies -----------------------------------------------------

def test_reused_five_tuple_after_idle_gets_new_cookie():
    node = make_node()
    first = cookie_of(send(node, tcp(flags=SYN), 0))
    assert cookie_of(send(node, tcp(), 349)) == first  # activity restarts the idle clock
    assert cookie_of(send(node, tcp(), 349 + 349)) == first
    assert cookie_of(send(node, tcp(flags=SYN), 698 + 350)) != first
    assert node.snapshot()["NewFlowCount"] == 2


def test_udp_and_other_flows_idle_out_after_120_seconds():
    node = make_node()
    for packet in (udp(), icmp()):
        first = cookie_of(send(node, packet, 0))
        assert cookie_of(send(node, packet, 119)) == first
        assert cookie_of(send(node, packet, 239)) != first


def test_tcp_idle_timeout_follows_the_listener_attribute():
    node = make_node(**{"tcp_idle_timeout": GwlbConfig.from_attributes(
        {"tcp.idle_timeout.seconds": "60"}).tcp_idle_timeout})
    first = cookie_of(send(node, tcp(), 0))
    assert cookie_of(send(node, tcp(), 60)) != first


def test_reset_ends_the_flow_and_the_next_syn_gets_a_new_cookie():
    node = make_node()
    first = cookie_of(send(node, tcp(flags=SYN), 0))
    rst = send(node, tcp(src=SERVER, dst=CLIENT, sport=443, dport=40000, flags=RST | ACK), 1)
    assert cookie_of(rst) == first
    assert node.from_appliance(rst.datagram, rst.target_ip, 1.5).endpoint_id == EP  # its return matches
    second = cookie_of(send(node, tcp(flags=SYN), 2))
    assert second != first
    assert cookie_of(send(node, tcp(flags=RST), 3)) == second
    assert node.expire(3 + RESET_LINGER) == 1


def test_expire_removes_idle_flows_from_active_flow_count():
    node = make_node()
    send(node, tcp(), 0)
    send(node, udp(), 0)
    assert node.snapshot()["ActiveFlowCount"] == 2
    assert node.expire(120) == 1
    assert node.snapshot()["ActiveFlowCount"] == 1
    assert node.expire(350) == 1
    assert node.snapshot()["ActiveFlowCount"] == 0


def test_non_syn_without_a_flow_can_be_dropped():
    node = make_node(new_flow_on_non_syn=False)
    assert node.from_endpoint(tcp(flags=ACK), EP, 0) == Drop("non_syn_without_flow")
    assert isinstance(node.from_endpoint(tcp(flags=SYN), EP, 0), Encap)
    assert isinstance(node.from_endpoint(tcp(flags=ACK), EP, 0), Encap)


# --- TCP resets (listener send_tcp_reset.on_idle_timeout.enabled) --------------------

FIN = 0x01


def segment(src=CLIENT, dst=SERVER, sport=40000, dport=443, seq=0, ack=0, flags=ACK, payload=b"") -> bytes:
    return ip_packet(6, src, dst, struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 8192, 0, 0)
                     + payload)


def rst_fields(reset: Reset) -> tuple:
    """What a host's TCP stack checks in a RST, after checking its checksums."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    packet = (IP if reset.packet[0] >> 4 == 4 else IPv6)(reset.packet)
    tcp_layer = packet[TCP]
    received = (packet.chksum if packet.version == 4 else None, tcp_layer.chksum)
    if packet.version == 4:
        del packet.chksum
    del tcp_layer.chksum
    rebuilt = packet.__class__(bytes(packet))
    assert received == (rebuilt.chksum if packet.version == 4 else None, rebuilt[TCP].chksum)
    return reset.endpoint_id, packet.src, packet.dst, tcp_layer.sport, tcp_layer.dport, str(tcp_layer.flags), \
        tcp_layer.seq, tcp_layer.ack


def handshake(node: GwlbNode, now: float = 0.0) -> None:
    """SYN, SYN-ACK, ACK, 5 bytes from the client, the server's ACK of them."""
    send(node, segment(seq=1000, flags=SYN), now)
    send(node, segment(SERVER, CLIENT, 443, 40000, seq=7000, ack=1001, flags=SYN | ACK), now)
    send(node, segment(seq=1001, ack=7001), now)
    send(node, segment(seq=1001, ack=7001, payload=b"hello"), now)
    send(node, segment(SERVER, CLIENT, 443, 40000, seq=7001, ack=1006), now)


def test_tcp_reset_answers_a_non_syn_packet_without_a_flow_with_a_rst_to_its_sender():
    node = make_node(send_tcp_reset=True)
    reset = node.from_endpoint(segment(seq=1000, ack=5000, payload=b"data"), EP, 0)
    assert isinstance(reset, Reset)
    assert rst_fields(reset) == (EP, SERVER, CLIENT, 443, 40000, "R", 5000, 0)
    snap = node.snapshot()
    assert snap["ActiveFlowCount"] == 0 and snap["tcp_resets_sent"] == 1
    assert snap["drops"] == {"non_syn_without_flow": 1}


def test_tcp_reset_to_a_segment_without_ack_acknowledges_what_it_carried():
    node = make_node(send_tcp_reset=True)
    reset = node.from_endpoint(segment(seq=1000, flags=FIN, payload=b"abc"), EP, 0)
    assert rst_fields(reset) == (EP, SERVER, CLIENT, 443, 40000, "RA", 0, 1004)  # 3 bytes and the FIN


def test_tcp_reset_over_ipv6():
    node = make_node(send_tcp_reset=True)
    reset = node.from_endpoint(segment("2001:db8::1", "2001:db8:1::2", seq=1, ack=77), EP, 0)
    assert rst_fields(reset) == (EP, "2001:db8:1::2", "2001:db8::1", 443, 40000, "R", 77, 0)


def test_a_rst_without_a_flow_is_never_answered():
    node = make_node(send_tcp_reset=True)
    assert node.from_endpoint(segment(seq=5, flags=RST), EP, 0) == Drop("non_syn_without_flow")
    assert node.snapshot()["tcp_resets_sent"] == 0


def test_a_syn_without_a_flow_starts_one_as_usual():
    node = make_node(send_tcp_reset=True)
    assert isinstance(node.from_endpoint(segment(seq=5, flags=SYN), EP, 0), Encap)


def test_an_idle_tcp_flow_is_reset_at_both_ends_exactly_where_each_expects_the_next_byte():
    node = make_node(send_tcp_reset=True, tcp_idle_timeout=60)
    handshake(node)
    assert node.expire(59) == 0 and node.take_resets() == []
    assert node.expire(60) == 1
    resets = sorted(rst_fields(r) for r in node.take_resets())
    assert resets == [
        (EP, CLIENT, SERVER, 40000, 443, "R", 1006, 0),  # to the server: the ACK it sent last
        (EP, SERVER, CLIENT, 443, 40000, "R", 7001, 0),  # to the client
    ]
    assert node.take_resets() == []
    assert node.snapshot()["tcp_resets_sent"] == 2


def test_without_tcp_reset_an_idle_flow_ends_silently():
    node = make_node(tcp_idle_timeout=60)
    handshake(node)
    assert node.expire(60) == 1 and node.take_resets() == []


def test_a_packet_on_an_idle_flow_not_yet_expired_is_treated_as_flowless():
    node = make_node(send_tcp_reset=True, tcp_idle_timeout=60)
    handshake(node)
    late = node.from_endpoint(segment(seq=1006, ack=7001, payload=b"late"), EP, 61)
    assert rst_fields(late) == (EP, SERVER, CLIENT, 443, 40000, "R", 7001, 0)
    assert len(node.take_resets()) == 2  # the idle flow's own RSTs
    assert node.snapshot()["ActiveFlowCount"] == 0


def test_a_flow_ended_by_a_rst_gets_no_reset_when_it_idles_out():
    node = make_node(send_tcp_reset=True)
    handshake(node)
    send(node, segment(seq=1006, ack=7001, flags=RST | ACK), 1)
    assert node.expire(1 + RESET_LINGER) == 1 and node.take_resets() == []


def test_udp_flows_idle_out_without_resets():
    node = make_node(send_tcp_reset=True)
    send(node, udp(), 0)
    assert node.expire(120) == 1 and node.take_resets() == []


def test_a_three_tuple_flow_resets_each_connection_it_carried():
    node = make_node(send_tcp_reset=True, stickiness="source_ip_dest_ip_proto", tcp_idle_timeout=60)
    for port in (40000, 40001):
        send(node, segment(sport=port, seq=10, flags=SYN))
        send(node, segment(SERVER, CLIENT, 443, port, seq=20, ack=11, flags=SYN | ACK))
        send(node, segment(sport=port, seq=11, ack=21))
    assert node.expire(60) == 1
    resets = sorted(rst_fields(r)[1:5] for r in node.take_resets())
    assert resets == [(CLIENT, SERVER, 40000, 443), (CLIENT, SERVER, 40001, 443),
                      (SERVER, CLIENT, 443, 40000), (SERVER, CLIENT, 443, 40001)]


def test_tcp_reset_can_be_switched_on_live():
    node = make_node(tcp_idle_timeout=60)
    assert isinstance(node.from_endpoint(segment(seq=1, ack=2), EP, 0), Encap)  # a flow, as before
    node.reconfigure(GwlbConfig.from_attributes(
        {"send_tcp_reset.on_idle_timeout.enabled": "true", "tcp.idle_timeout.seconds": "60"},
        availability_zone=AZ))
    assert isinstance(node.from_endpoint(segment(sport=40001, seq=1, ack=2), EP, 1), Reset)


def test_send_tcp_reset_attribute_must_be_a_boolean():
    with pytest.raises(ValueError, match="send_tcp_reset.on_idle_timeout.enabled"):
        GwlbConfig.from_attributes({"send_tcp_reset.on_idle_timeout.enabled": "yes"})


# --- PeakBytesPerSecond and PeakPacketsPerSecond --------------------------------------

def test_peak_rates_are_the_highest_ten_second_average_in_the_last_minute():
    node = make_node()
    packet = udp(payload=bytes(72))  # 100 bytes
    node.expire(0)
    for second in range(30):  # 10 s at 5 packets/s, then 10 s at 20/s, then 10 s at 1/s
        rate = 5 if second < 10 else 20 if second < 20 else 1
        for _ in range(rate):
            send(node, packet, second + 0.5)
        node.expire(second + 1)
    snap = node.snapshot()
    assert (snap["PeakPacketsPerSecond"], snap["PeakBytesPerSecond"]) == (20, 2000)
    for second in range(31, 92):  # a quiet minute later, the busy windows have left the period
        node.expire(second)
    assert node.snapshot()["PeakPacketsPerSecond"] == 0


def test_peak_rate_windows_close_at_the_first_sample_ten_seconds_on():
    peak = PeakRate()
    peak.sample(0.0, 0, 0)
    peak.sample(9.9, 990, 9)
    assert peak.peak() == (0.0, 0.0)  # no window closed yet
    peak.sample(12.5, 1250, 25)
    assert peak.peak() == (100.0, 2.0)


# --- what a fast path needs from the core ---------------------------------------------

def test_a_fast_path_keeps_its_flows_alive_and_counted():
    node = make_node()
    header = send(node, udp(), 0).datagram[:40]
    assert node.flow_seen(header, last_seen=100.0, packets=3, size=300)
    assert node.expire(150) == 0  # idle since 100, not 0
    snap = node.snapshot()
    assert snap["ProcessedBytes"] == len(udp()) + 300
    assert node.has_flow(header) and node.expire(220) == 1
    assert not node.has_flow(header)
    assert not node.flow_seen(header, 230.0, 1, 100)  # gone: the fast path must forget it


def test_an_older_fast_path_sighting_never_rewinds_a_flow():
    node = make_node()
    header = send(node, udp(), 50).datagram[:40]
    node.flow_seen(header, last_seen=10.0, packets=0, size=0)
    assert node.expire(169) == 0


def test_target_changes_change_the_generation_a_fast_path_watches():
    node = make_node()
    generation = node.generation
    node.set_target_health("i-0", True, now=1)  # no change
    assert node.generation == generation
    node.set_target_health("i-0", False, now=2)
    assert node.generation != generation


def test_tcp_stays_off_a_fast_path_while_resets_are_on():
    assert make_node().may_offload(6) and make_node(send_tcp_reset=True).may_offload(17)
    assert not make_node(send_tcp_reset=True).may_offload(6)


# --- health and failover -----------------------------------------------------------

def test_new_flows_avoid_unhealthy_targets():
    node = make_node(targets=3)
    node.set_target_health("i-1", False, now=5)
    used = {target_of(node, send(node, udp(sport=p), 5)) for p in range(2000, 2100)}
    assert used == {"i-0", "i-2"}


def test_flow_stays_pinned_through_health_changes_without_rebalance():
    node = make_node(targets=3)
    result = send(node, tcp(flags=SYN))
    target = target_of(node, result)
    node.set_target_health(target, False, now=20)
    again = send(node, tcp(), 21)
    assert (again.target_ip, cookie_of(again)) == (result.target_ip, cookie_of(result))


def test_rebalance_moves_flows_off_a_target_declared_unhealthy():
    node = make_node(targets=3, on_unhealthy="rebalance", on_deregistration="rebalance")
    result = send(node, tcp(flags=SYN))
    target = target_of(node, result)
    assert target_of(node, send(node, tcp(), 10)) == target  # still healthy: stays
    node.set_target_health(target, False, now=20)
    moved = send(node, tcp(), 21)
    assert target_of(node, moved) != target
    assert cookie_of(moved) == cookie_of(result)  # same flow, same cookie
    node.set_target_health(target, True, now=60)
    assert moved.target_ip == send(node, tcp(), 61).target_ip


def test_rebalance_keeps_flows_in_place_when_nothing_is_healthy():
    node = make_node(targets=2, on_unhealthy="rebalance", on_deregistration="rebalance")
    result = send(node, tcp())
    for t in ("i-0", "i-1"):
        node.set_target_health(t, False, now=5)
    assert send(node, tcp(), 6).target_ip == result.target_ip


def test_all_targets_unhealthy_picks_one_and_sticks():
    node = make_node(targets=4)
    for i in range(4):
        node.set_target_health(f"i-{i}", False, now=1)
    first = send(node, tcp(flags=SYN), 2)
    assert all(send(node, tcp(), 2 + s).target_ip == first.target_ip for s in range(10))
    spread = {send(node, udp(sport=p), 3).target_ip for p in range(5000, 5100)}
    assert len(spread) > 1  # each flow is pinned to a random (hash-chosen) target
    healthy = next(t.id for t in node.targets() if t.ip != first.target_ip)
    node.set_target_health(healthy, True, now=30)
    assert send(node, tcp(), 31).target_ip == first.target_ip  # pinned for life
    assert {target_of(node, send(node, udp(sport=p, dport=1), 31)) for p in range(20)} == {healthy}


def test_initial_targets_get_no_new_flows_while_one_is_healthy():
    node = make_node(targets=1)
    node.register("i-new", "10.9.0.99")
    assert {target_of(node, send(node, udp(sport=p))) for p in range(100)} == {"i-0"}


def test_only_initial_targets_fail_open():
    node = make_node(targets=2, healthy=False)
    assert {target_of(node, send(node, udp(sport=p))) for p in range(100)} == {"i-0", "i-1"}


def test_no_registered_targets_drops():
    node = make_node(targets=0)
    assert node.from_endpoint(tcp(), EP, 0) == Drop("no_targets")
    assert node.snapshot()["drops"] == {"no_targets": 1}


# --- deregistration ----------------------------------------------------------------

def test_deregistered_target_gets_no_new_flows_but_keeps_its_flows_until_the_delay_ends():
    node = make_node(targets=2)
    result = send(node, tcp(flags=SYN), 0)
    target = target_of(node, result)
    node.deregister(target, now=10)
    assert [t.state for t in node.targets() if t.id == target] == ["draining"]
    assert {send(node, udp(sport=p), 11).target_ip for p in range(50)} == {
        t.ip for t in node.targets() if t.id != target}
    assert send(node, tcp(), 10 + 299).target_ip == result.target_ip


def test_no_rebalance_keeps_a_busy_flow_on_its_deregistered_target_until_it_idles_out():
    node = make_node(targets=2, deregistration_delay=5)
    result = send(node, udp(), 0)
    target = target_of(node, result)
    node.deregister(target, now=0)
    for now in range(1, 200):  # one packet a second, far past the delay and the 120 s UDP timeout
        node.expire(now)
        assert send(node, udp(), now).target_ip == result.target_ip
        assert isinstance(node.from_appliance(result.datagram, result.target_ip, now), Decap)
    assert target not in {t.id for t in node.targets()}  # the target itself left at 5 s
    assert "target_deregistered" not in node.snapshot()["drops"]
    assert {send(node, udp(sport=p), 200).target_ip for p in range(50)} == {
        t.ip for t in node.targets()}  # new flows never reach it
    node.expire(199 + 120)  # the flow idles out: its target is forgotten
    assert node.from_appliance(result.datagram, result.target_ip, 320) == Drop("unknown_target")
    assert target_of(node, send(node, udp(), 320)) != target  # the same 5-tuple is a new flow


def test_no_rebalance_flow_of_a_deregistered_target_ends_with_the_tcp_idle_timeout():
    node = make_node(targets=1, deregistration_delay=0, tcp_idle_timeout=60)
    result = send(node, tcp(flags=SYN), 0)
    node.deregister("i-0", now=0)
    assert node.targets() == []
    assert send(node, tcp(), 59).target_ip == result.target_ip
    node.expire(59 + 60)
    assert node.snapshot()["ActiveFlowCount"] == 0
    assert node.from_appliance(result.datagram, result.target_ip, 120) == Drop("unknown_target")
    assert node.from_endpoint(tcp(), EP, 120) == Drop("no_targets")


def test_rebalance_moves_a_deregistered_targets_flows_after_the_delay():
    node = make_node(targets=2, on_deregistration="rebalance", on_unhealthy="rebalance",
                     deregistration_delay=30)
    result = send(node, tcp(flags=SYN), 0)
    target = target_of(node, result)
    node.deregister(target, now=0)
    assert send(node, tcp(), 29).target_ip == result.target_ip
    moved = send(node, tcp(), 30)
    assert target_of(node, moved) != target and cookie_of(moved) == cookie_of(result)


def test_deregistration_ends_on_expire_without_traffic():
    node = make_node(targets=2, deregistration_delay=5)
    node.deregister("i-0", now=0)
    node.expire(5)
    assert [t.id for t in node.targets()] == ["i-1"]


def test_zero_deregistration_delay_removes_the_target_at_once():
    node = make_node(targets=2, deregistration_delay=0)
    node.deregister("i-0", now=0)
    assert [t.id for t in node.targets()] == ["i-1"]


def test_registering_a_draining_target_again_cancels_draining():
    node = make_node(targets=1)
    node.deregister("i-0", now=0)
    node.register("i-0", "10.9.0.10", now=1)
    assert node.targets()[0].state == "initial"
    node.expire(400)
    assert [t.id for t in node.targets()] == ["i-0"]


def test_late_health_results_do_not_revive_a_draining_target():
    node = make_node(targets=1)
    node.deregister("i-0", now=0)
    assert node.set_target_health("i-0", True, now=1) is False
    assert node.set_target_health("i-unknown", True, now=1) is False
    assert node.targets()[0].state == "draining"


# --- zones ----------------------------------------------------------------------------

def test_cross_zone_off_uses_only_targets_in_the_nodes_zone():
    node = make_node(targets=1)
    node.register("i-b", "10.9.1.10", az="us-east-1b")
    node.set_target_health("i-b", True, now=0)
    assert {target_of(node, send(node, udp(sport=p))) for p in range(100)} == {"i-0"}
    node.set_target_health("i-0", False, now=1)
    assert {target_of(node, send(node, udp(sport=p, dport=9))) for p in range(100)} == {"i-0"}  # fails open in-zone
    assert node.snapshot()["HealthyHostCount"] == 0


def test_cross_zone_on_uses_targets_in_every_zone():
    node = make_node(targets=1, cross_zone=True)
    node.register("i-b", "10.9.1.10", az="us-east-1b")
    node.set_target_health("i-b", True, now=0)
    assert {target_of(node, send(node, udp(sport=p))) for p in range(100)} == {"i-0", "i-b"}
    assert node.snapshot()["HealthyHostCount"] == 2


# --- the return path --------------------------------------------------------------------

def test_returned_packet_is_decapsulated_to_its_endpoint():
    node = make_node()
    packet = tcp(flags=SYN, payload=b"hello")
    result = send(node, packet)
    back = node.from_appliance(result.datagram, result.target_ip, 1)
    assert isinstance(back, Decap) and back.endpoint_id == EP and back.inner == packet


def test_return_with_a_stale_cookie_is_dropped():
    node = make_node()
    old = send(node, tcp(flags=SYN), 0)
    send(node, tcp(flags=SYN), 400)  # the old flow idled out; a new one took the 5-tuple
    assert node.from_appliance(old.datagram, old.target_ip, 400) == Drop("stale_cookie")
    assert node.snapshot()["drops"] == {"stale_cookie": 1}


def test_stale_cookie_is_forwarded_when_the_check_is_off():
    node = make_node(drop_stale_cookie=False)
    packet = udp()
    forged = encode(GwlbHeader(protocol=0x0800, endpoint_id=EP, flow_cookie=12345), packet)
    back = node.from_appliance(forged, "10.9.0.10", 0)
    assert isinstance(back, Decap) and back.inner == packet and node.snapshot()["unmatched_forwarded"] == 1
    stranger = encode(GwlbHeader(protocol=0x0800, endpoint_id=EP + 1, flow_cookie=12345), packet)
    assert node.from_appliance(stranger, "10.9.0.10", 0) == Drop("unknown_endpoint")


def test_return_with_extra_noncritical_options_matches_by_cookie():
    node = make_node()
    packet = udp()
    result = send(node, packet)
    header = result.datagram[:40]
    extra = struct.pack("!HBB", 0x0101, 5, 1) + b"abcd"
    datagram = bytes([header[0] + 2]) + header[1:] + extra + packet
    back = node.from_appliance(datagram, result.target_ip, 1)
    assert isinstance(back, Decap) and back.inner == packet


def test_return_from_a_host_that_is_no_target_is_dropped():
    node = make_node()
    result = send(node, udp())
    assert node.from_appliance(result.datagram, "10.66.0.1", 0) == Drop("unknown_target")


def test_return_is_accepted_from_the_old_target_after_a_rebalance():
    node = make_node(targets=2, on_unhealthy="rebalance", on_deregistration="rebalance")
    result = send(node, udp())
    node.set_target_health(target_of(node, result), False, now=1)
    assert send(node, udp(), 2).target_ip != result.target_ip
    assert isinstance(node.from_appliance(result.datagram, result.target_ip, 2), Decap)


def test_malformed_geneve_from_an_appliance_is_counted_by_reason():
    node = make_node()
    result = send(node, udp())
    assert node.from_appliance(result.datagram[:20], result.target_ip, 0) == Drop("truncated")
    bad = bytearray(result.datagram)
    bad[1] = 0x80
    assert node.from_appliance(bytes(bad), result.target_ip, 0) == Drop("control_packet")
    assert node.snapshot()["drops"] == {"control_packet": 1, "truncated": 1}


# --- sizes and garbage ---------------------------------------------------------------------

def test_inner_packets_over_8500_bytes_are_dropped_without_fragmenting():
    node = make_node()
    fits = udp(payload=bytes(8500 - 28))
    result = send(node, fits)
    assert len(result.datagram) == 8540
    assert node.from_endpoint(udp(payload=bytes(8501 - 28)), EP, 0) == Drop("oversize")
    too_big = result.datagram + b"x"
    assert node.from_appliance(too_big, result.target_ip, 0) == Drop("oversize")
    assert node.snapshot()["drops"] == {"oversize": 2}


def test_malformed_inner_packets_are_counted_not_raised():
    node = make_node()
    for junk in (b"", b"\x45", bytes(40), tcp()[:30]):
        assert node.from_endpoint(junk, EP, 0) == Drop("malformed_inner")
    assert node.snapshot()["drops"] == {"malformed_inner": 4}


def test_traffic_from_an_unattached_endpoint_is_dropped():
    node = make_node()
    assert node.from_endpoint(tcp(), EP + 1, 0) == Drop("unknown_endpoint")
    node.attach_endpoint(EP + 1)
    assert isinstance(node.from_endpoint(tcp(), EP + 1, 0), Encap)


def test_detaching_an_endpoint_ends_its_flows():
    node = make_node()
    result = send(node, tcp())
    node.detach_endpoint("vpce-0123456789abcdef0")
    assert node.snapshot()["ActiveFlowCount"] == 0
    assert node.from_appliance(result.datagram, result.target_ip, 0) == Drop("stale_cookie")


@given(st.binary(max_size=120), st.sampled_from([0, 1, 0x45, 0x46, 0x60]))
def test_core_never_raises_on_arbitrary_bytes(data, first):
    node = make_node()
    for packet in (data, bytes([first]) + data):
        assert isinstance(node.from_endpoint(packet, EP, 0), (Encap, Drop))
        assert isinstance(node.from_appliance(packet, "10.9.0.10", 0), (Decap, Drop))
    encapsulated = encode(GwlbHeader(protocol=0x0800, endpoint_id=EP, flow_cookie=1), data)
    assert isinstance(node.from_appliance(encapsulated, "10.9.0.10", 0), (Decap, Drop))


@given(st.data())
def test_garbled_returns_never_raise(data):
    node = make_node()
    result = send(node, udp())
    datagram = bytearray(result.datagram)
    for _ in range(data.draw(st.integers(1, 6))):
        datagram[data.draw(st.integers(0, len(datagram) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(datagram)))
    assert isinstance(node.from_appliance(bytes(datagram[:cut]), result.target_ip, 1), (Decap, Drop))


# --- metrics and configuration ----------------------------------------------------------------

def test_snapshot_uses_aws_metric_names():
    node = make_node(targets=3)
    node.set_target_health("i-2", False, now=0)
    packet = tcp(payload=b"x" * 60)
    send(node, packet)
    send(node, packet)
    snap = node.snapshot()
    assert {k: snap[k] for k in ("ActiveFlowCount", "NewFlowCount", "ProcessedBytes",
                                 "HealthyHostCount", "UnHealthyHostCount")} == {
        "ActiveFlowCount": 1, "NewFlowCount": 1, "ProcessedBytes": 2 * len(packet),
        "HealthyHostCount": 2, "UnHealthyHostCount": 1}
    assert snap["endpoints"] == ["vpce-0123456789abcdef0"]
    assert [t["state"] for t in snap["targets"]] == ["healthy", "healthy", "unhealthy"]


def test_config_from_aws_attributes():
    config = GwlbConfig.from_attributes({
        "tcp.idle_timeout.seconds": "600",
        "target_failover.on_deregistration": "rebalance",
        "target_failover.on_unhealthy": "rebalance",
        "deregistration_delay.timeout_seconds": 0,
        "load_balancing.cross_zone.enabled": "true",
    }, availability_zone=AZ)
    assert (config.tcp_idle_timeout, config.on_deregistration, config.on_unhealthy,
            config.deregistration_delay, config.cross_zone, config.availability_zone) == (
        600, "rebalance", "rebalance", 0, True, AZ)
    defaults = GwlbConfig()
    assert (defaults.tcp_idle_timeout, defaults.non_tcp_idle_timeout, defaults.deregistration_delay,
            defaults.stickiness, defaults.on_unhealthy, defaults.cross_zone, defaults.max_packet) == (
        350, 120, 300, "5-tuple", "no_rebalance", False, 8500)


@pytest.mark.parametrize("attributes", [
    {"tcp.idle_timeout.seconds": "59"},
    {"tcp.idle_timeout.seconds": "6001"},
    {"deregistration_delay.timeout_seconds": "3601"},
    {"target_failover.on_unhealthy": "rebalance"},  # AWS requires both failover values equal
    {"target_failover.on_deregistration": "sometimes", "target_failover.on_unhealthy": "sometimes"},
    {"stickiness.enabled": "true", "stickiness.type": "5-tuple"},
    {"stickiness.enabled": "yes"},
    {"load_balancing.cross_zone.enabled": 1},
    {"idle_timeout.timeout_seconds": "60"},
])
def test_invalid_attributes_are_rejected(attributes):
    with pytest.raises(ValueError):
        GwlbConfig.from_attributes(attributes)
