"""The pure parts of the GWLB node and appliance shells: checksums, frames, config, control."""
from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, strategies as st

from vpclab.engines.appliance.process import ApplianceProcess, load_rules
from vpclab.engines.io.files import write_atomically
from vpclab.engines.gwlb.frames import (
    IP_OFFSET, VNET_HDR_LEN, ethernet_prefixes, finish_partial_checksum, finish_vnet_frame, ip_packet_end,
)
from vpclab.engines.gwlb.node import NodeProcess
from vpclab.engines.gwlb.spec import NodeSpec, format_mac, parse_mac

ENDPOINT = "vpce-0123456789abcdef0"


def ones_sum(data: bytes) -> int:
    """The textbook 16-bit ones' complement sum, as the reference."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def l4_packet(proto: int, payload: bytes, src: bytes = bytes([10, 0, 1, 10]),
              dst: bytes = bytes([10, 0, 2, 10])) -> tuple[bytearray, int, int]:
    """An IPv4 TCP/UDP packet as a CHECKSUM_PARTIAL sender leaves it: the L4 checksum
    field holds the folded pseudo-header sum. Returns (packet, field offset, correct checksum)."""
    if proto == 17:
        l4 = struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0) + payload
        field = 20 + 6
    else:
        l4 = struct.pack("!HHIIBBHHH", 40000, 443, 1, 2, 0x50, 0x18, 8192, 0, 0) + payload
        field = 20 + 16
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0, src, dst)
    pseudo = src + dst + struct.pack("!BBH", 0, proto, len(l4))
    correct = 0xFFFF - ones_sum(pseudo + l4)
    if proto == 17 and correct == 0:
        correct = 0xFFFF
    packet = bytearray(ip + l4)
    struct.pack_into("!H", packet, field, ones_sum(pseudo))
    return packet, field, correct


@given(st.sampled_from([6, 17]), st.binary(max_size=300))
def test_finish_partial_checksum_matches_the_textbook_sum(proto, payload):
    packet, field, correct = l4_packet(proto, payload)
    finish_partial_checksum(packet, 20, field, len(packet))
    assert struct.unpack_from("!H", packet, field)[0] == correct
    if proto == 17:  # and the receiver's check passes: the sum over everything is all ones
        pseudo = bytes(packet[12:20]) + struct.pack("!BBH", 0, 17, len(packet) - 20)
        assert ones_sum(pseudo + bytes(packet[20:])) == 0xFFFF


def test_finish_partial_checksum_agrees_with_scapy():
    scapy = pytest.importorskip("scapy.all")
    for proto, payload in ((6, b"GET / HTTP/1.1\r\n\r\n"), (17, b"odd"), (17, b"")):
        packet, field, _ = l4_packet(proto, payload)
        finish_partial_checksum(packet, 20, field, len(packet))
        layer = scapy.TCP if proto == 6 else scapy.UDP
        reference = scapy.IP(bytes(packet))
        del reference[layer].chksum
        assert bytes(packet)[20:] == bytes(scapy.IP(bytes(reference)))[20:]


def test_udp_checksum_of_zero_is_sent_as_all_ones():
    # Find a payload whose UDP checksum comes out 0, then check the RFC 768 rule.
    for n in range(1 << 16):
        packet, field, correct = l4_packet(17, struct.pack("!H", n))
        if correct == 0xFFFF:
            finish_partial_checksum(packet, 20, field, len(packet))
            assert packet[field:field + 2] == b"\xff\xff"
            return
    pytest.fail("no payload with a zero checksum found")


def vnet_frame(packet: bytes, flags: int = 0, gso_type: int = 0, csum_start: int = 0,
               csum_offset: int = 0, trailer: bytes = b"") -> bytearray:
    vnet = struct.pack("<BBHHHH", flags, gso_type, 0, 0, csum_start, csum_offset)
    eth = bytes.fromhex("020000000001" "020000000002" "0800")
    return bytearray(vnet + eth + packet + trailer)


def test_finish_vnet_frame_completes_a_partial_checksum_up_to_the_ip_length():
    packet, field, correct = l4_packet(6, b"hello")
    frame = vnet_frame(bytes(packet), flags=1, csum_start=14 + 20, csum_offset=16, trailer=b"\xaa" * 6)
    assert finish_vnet_frame(frame, len(frame)) is None
    assert struct.unpack_from("!H", frame, IP_OFFSET + field)[0] == correct  # padding not summed


def test_finish_vnet_frame_rejects_gso_and_bad_offsets():
    packet, _, _ = l4_packet(6, b"x" * 100)
    assert finish_vnet_frame(vnet_frame(bytes(packet), flags=1, gso_type=1, csum_start=34, csum_offset=16),
                             0) == "rx_gso"
    for start, offset in ((10, 16), (34, 500), (34 + 200, 16)):
        frame = vnet_frame(bytes(packet), flags=1, csum_start=start, csum_offset=offset)
        assert finish_vnet_frame(frame, len(frame)) == "rx_bad_offload_header"
    truncated = vnet_frame(bytes(packet), flags=1, csum_start=34, csum_offset=16)[:-10]
    assert finish_vnet_frame(truncated, len(truncated)) == "rx_bad_offload_header"


def test_ip_packet_end():
    v4, _, _ = l4_packet(17, b"abc")
    assert ip_packet_end(v4 + b"pad", 0, len(v4) + 3) == len(v4)
    assert ip_packet_end(v4, 0, len(v4) - 1) == -1
    v6 = struct.pack("!IHBB16s16s", 6 << 28, 8, 17, 64, bytes(16), bytes(16)) + bytes(8)
    assert ip_packet_end(v6, 0, len(v6)) == 48
    assert ip_packet_end(b"\x00" * 40, 0, 40) == -1
    assert ip_packet_end(b"\x45" * 10, 0, 10) == -1


def test_macs_and_ethernet_prefixes():
    assert parse_mac("02:00:5E:10:00:01") == bytes([2, 0, 0x5E, 0x10, 0, 1])
    assert format_mac(bytes([2, 0, 0x5E, 0x10, 0, 1])) == "02:00:5e:10:00:01"
    for bad in ("02:00:5e:10:00", "zz:00:5e:10:00:01", "0200.5e10.0001", 7):
        with pytest.raises(ValueError):
            parse_mac(bad)
    v4, v6 = ethernet_prefixes(b"\x02" * 6, b"\x04" * 6)
    assert v4 == bytes(VNET_HDR_LEN) + b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    assert v6[-2:] == b"\x86\xdd" and len(v6) == IP_OFFSET


def config(**overrides) -> dict:
    data = {"availability_zone": "us-east-1a", "attributes": {"tcp.idle_timeout.seconds": "600"},
            "node_ip": "10.1.0.5", "endpoints": [{"id": ENDPOINT, "ifname": "gwe0"}],
            "targets": [{"id": "i-1", "ip": "10.1.0.10", "az": "us-east-1a", "healthy": True},
                        {"id": "i-2", "ip": "10.1.0.11"}],
            "control_socket": "/tmp/x.sock"}
    data.update(overrides)
    return data


def test_node_spec_parses_the_config():
    spec = NodeSpec.from_dict(config())
    assert spec.node_ip == "10.1.0.5" and spec.uplink == "eth0"
    assert spec.endpoints[0].ifname == "gwe0" and spec.endpoints[0].peer_mac is None
    assert spec.gwlb_config().tcp_idle_timeout == 600
    assert spec.targets[1].healthy is None and spec.targets[1].az is None
    with_mac = NodeSpec.from_dict(config(endpoints=[{"id": ENDPOINT, "ifname": "gwe0",
                                                     "peer_mac": "02:00:00:00:00:01"}]))
    assert with_mac.endpoints[0].peer_mac == b"\x02\0\0\0\0\x01"


@pytest.mark.parametrize("overrides, message", [
    ({"extra": 1}, "config: unknown key"),
    ({"node_ip": "fd00::5"}, "IPv4 only"),
    ({"node_ip": "nope"}, "config.node_ip"),
    ({"control_socket": ""}, "control_socket"),
    ({"endpoints": [{"id": "vpce-123", "ifname": "gwe0"}]}, "endpoints[0].id"),
    ({"endpoints": [{"id": ENDPOINT, "ifname": "a-name-much-too-long"}]}, "endpoints[0].ifname"),
    ({"endpoints": [{"id": ENDPOINT, "ifname": "gwe0"}] * 2}, "duplicate"),
    ({"targets": [{"id": "i-1", "ip": "10.1.0.10", "healthy": "yes"}]}, "targets[0].healthy"),
    ({"targets": {"id": "i-1"}}, "config.targets: expected a list"),
    ({"attributes": {"tcp.idle_timeout.seconds": "5"}}, "config.attributes"),
    ({"attributes": {"no.such": "1"}}, "config.attributes"),
])
def test_node_spec_rejects_bad_configs(overrides, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        NodeSpec.from_dict(config(**overrides))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def node_process() -> NodeProcess:
    return NodeProcess(NodeSpec.from_dict(config(endpoints=[])), clock=Clock())


def test_control_target_ops():
    process = node_process()
    states = lambda: {t["id"]: t["state"] for t in process.control({"op": "snapshot"})["snapshot"]["targets"]}
    assert states() == {"i-1": "healthy", "i-2": "initial"}
    assert process.control({"op": "set_target_health", "target": "i-2", "healthy": True}) == \
        {"ok": True, "applied": True}
    assert process.control({"op": "set_target_state", "target": "i-1", "state": "unused"})["ok"]
    assert process.control({"op": "register", "target": "i-3", "ip": "10.1.0.12", "az": "us-east-1b"})["ok"]
    assert process.control({"op": "deregister", "target": "i-2"})["ok"]
    assert states() == {"i-1": "unused", "i-2": "draining", "i-3": "initial"}
    snapshot = process.control({"op": "snapshot"})["snapshot"]
    assert snapshot["HealthyHostCount"] == 0 and snapshot["io"]["rx_frames"] == 0
    assert snapshot["attributes"] == {"tcp.idle_timeout.seconds": "600"}


def test_control_modify_merges_attributes_and_applies_them():
    process = node_process()
    reply = process.control({"op": "modify", "attributes": {
        "load_balancing.cross_zone.enabled": "true", "stickiness.enabled": "true",
        "stickiness.type": "source_ip_dest_ip"}})
    assert reply["ok"] and reply["attributes"]["tcp.idle_timeout.seconds"] == "600"
    config = process.node.config
    assert config.cross_zone and config.stickiness == "source_ip_dest_ip" and config.tcp_idle_timeout == 600
    assert process.node._key_parts == 2  # the derived state follows the config
    process.control({"op": "register", "target": "i-9", "ip": "10.1.0.19", "az": "us-east-1b"})
    process.control({"op": "set_target_health", "target": "i-9", "healthy": True})
    assert process.control({"op": "snapshot"})["snapshot"]["HealthyHostCount"] == 2  # cross-zone counts it


@pytest.mark.parametrize("request_, error", [
    ({"op": "nope"}, "unknown op"),
    ([1, 2], "JSON object"),
    ({"op": "set_target_health", "target": "i-1", "healthy": "yes"}, "healthy must be"),
    ({"op": "set_target_health", "healthy": True}, "target must be"),
    ({"op": "set_target_state", "target": "i-1", "state": "draining"}, "cannot set"),
    ({"op": "register", "target": "i-3", "ip": "fd00::1"}, "IPv4 only"),
    ({"op": "register", "target": "i-1", "ip": "10.9.9.9"}, "registered with IP"),
    ({"op": "deregister", "target": "i-404"}, "not registered"),
    ({"op": "modify", "attributes": {}}, "non-empty"),
    ({"op": "modify", "attributes": {"target_failover.on_unhealthy": "rebalance"}}, "must be equal"),
    ({"op": "detach_endpoint", "id": ENDPOINT}, "not attached"),
    ({"op": "attach_endpoint", "id": "vpce-1", "ifname": "gwe0"}, "not a GWLB endpoint ID"),
])
def test_control_errors_are_answers_not_exceptions(request_, error):
    reply = node_process().control(request_)
    assert reply["ok"] is False and error in reply["error"], reply


def test_load_rules_yaml_json_and_wrapped(tmp_path):
    (tmp_path / "r.yaml").write_text("inside: [10.0.0.0/16]\nrules:\n  - {action: deny, protocol: tcp, port: 22}\n")
    assert load_rules(tmp_path / "r.yaml").rules[0].ports == ((22, 22),)
    (tmp_path / "r.json").write_text(json.dumps({"appliance": {"drop_all": True}}))
    assert load_rules(tmp_path / "r.json").drop_all
    (tmp_path / "empty.yaml").write_text("")
    assert load_rules(tmp_path / "empty.yaml").rules == ()
    for name, text, message in (("bad.json", "{", "bad.json"), ("list.yaml", "- 1\n", "mapping"),
                                ("key.yaml", "nope: 1\n", "unknown key")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            load_rules(tmp_path / name)
    with pytest.raises(ValueError, match="missing"):
        load_rules(tmp_path / "missing.yaml")


def test_write_atomically_replaces_the_file(tmp_path):
    path = tmp_path / "stats.json"
    write_atomically(path, "one")
    write_atomically(path, "two")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["stats.json"]


def test_appliance_reload_keeps_old_rules_on_error(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("drop_all: true\n")
    process = ApplianceProcess(rules=str(rules), stats=str(tmp_path / "s.json"))
    assert process.appliance.config.drop_all
    rules.write_text("drop_all: maybe\n")
    assert not process.reload() and process.appliance.config.drop_all
    rules.write_text("drop_all: false\n")
    assert process.reload() and not process.appliance.config.drop_all
    process.write_stats()
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["io"]["reloads"] == 1 and stats["io"]["reload_errors"] == 1 and stats["packets_in"] == 0


class FailingFastPath:
    """A fast path whose bpf(2) calls fail, as they should never."""

    def __init__(self) -> None:
        self.closed = False

    def fold_in(self) -> None:
        raise OSError(22, "BPF_MAP_LOOKUP_BATCH(flows): Invalid argument")

    prune = check_generation = fold_in

    def close(self) -> None:
        self.closed = True


def test_a_failing_fast_path_is_dropped_and_the_node_carries_on():
    process = node_process()
    fast = process.fast = FailingFastPath()
    snapshot = process.control({"op": "snapshot"})["snapshot"]
    assert process.fast is None and fast.closed
    assert snapshot["io"]["fast_path"] == {"off": "off after an error: [Errno 22] BPF_MAP_LOOKUP_BATCH(flows): "
                                                  "Invalid argument"}
    assert any("fast path off after an error" in w for w in snapshot["io"]["setup_warnings"])
    assert process.control({"op": "snapshot"})["ok"]


def test_fast_path_fds_in_the_config_are_checked():
    with pytest.raises(ValueError, match="config.fast_path"):
        NodeSpec.from_dict(config(fast_path={"encap": 3}))
    spec = NodeSpec.from_dict(config(fast_path={name: 10 + i for i, name in enumerate(
        ("encap", "decap", "ring_filter", "flows", "returns", "counters", "config"))}))
    assert spec.fast_path is not None and spec.fast_path.flows == 13


def test_appliance_answers_its_counters_on_request_not_only_every_second():
    process = ApplianceProcess(health_port=0)
    process.appliance.packets_in = 7  # as if it had just received seven datagrams
    answer = process.control({"op": "snapshot"})
    assert answer["ok"] and answer["snapshot"]["packets_in"] == 7 and "io" in answer["snapshot"]
    assert not process.control({"op": "register"})["ok"]
