"""GWLB target choice is rendezvous hashing: a function of the flow and the target set only,
so a restarted node (or the next node of the load balancer) sends a flow where it went."""
from __future__ import annotations

from collections import Counter

from hypothesis import given, strategies as st

from test_gwlb_core import AZ, EP, send, target_of, tcp, udp
from vpclab.engines.gwlb import Drop, GwlbConfig, GwlbNode
from vpclab.engines.gwlb.rendezvous import pick, score, target_key

SEED = 0x5EED
IDS = [f"i-{n:017x}" for n in range(8)]


def choose(flow_hash: int, ids: list[str], salt: int = 7) -> str:
    return pick(flow_hash, ids, [target_key(i, salt) for i in ids])


@given(st.integers(0, 2**32 - 1), st.permutations(IDS[:5]))
def test_choice_depends_on_the_flow_and_the_set_not_the_order(flow_hash, shuffled):
    assert choose(flow_hash, shuffled) == choose(flow_hash, sorted(shuffled))


def test_choice_spreads_flows_evenly_over_targets():
    counts = Counter(choose(h * 2654435761 & 0xFFFFFFFF, IDS[:4]) for h in range(20_000))
    assert set(counts) == set(IDS[:4])
    assert all(4_500 <= n <= 5_500 for n in counts.values()), counts  # 5,000 each ± 10 %


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=50), st.sampled_from(IDS[:5]))
def test_a_target_leaving_moves_only_its_own_flows(flows, leaving):
    rest = [i for i in IDS[:5] if i != leaving]
    for h in flows:
        before = choose(h, IDS[:5])
        if before != leaving:
            assert choose(h, rest) == before


def test_a_target_joining_takes_about_its_share_and_only_from_others():
    flows = [h * 2654435761 & 0xFFFFFFFF for h in range(10_000)]
    moved = [h for h in flows if choose(h, IDS[:4]) != choose(h, IDS[:5])]
    assert all(choose(h, IDS[:5]) == IDS[4] for h in moved)  # every moved flow went to the newcomer
    assert 1_700 <= len(moved) <= 2_300  # a fifth of 10,000


@given(st.integers(0, 2**32 - 1), st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=8, unique=True))
def test_pick_takes_the_highest_score(flow_hash, keys):
    chosen = pick(flow_hash, list(range(len(keys))), keys)
    assert score(flow_hash, keys[chosen]) == max(score(flow_hash, k) for k in keys)


def test_the_salt_changes_the_mapping():
    flows = range(0, 2**32, 2**22)
    assert [choose(h, IDS[:4], salt=1) for h in flows] != [choose(h, IDS[:4], salt=2) for h in flows]
    assert score(1, 2) != score(2, 1)


def node(ids: list[str], healthy: bool = True, first_cookie: int = 0) -> GwlbNode:
    n = GwlbNode(GwlbConfig(availability_zone=AZ, hash_seed=SEED), endpoints=[EP], first_cookie=first_cookie)
    for i in ids:
        n.register(i, f"10.9.0.{10 + IDS.index(i)}")
        if healthy:
            n.set_target_health(i, True, now=0)
    return n


FLOWS = [udp(sport=20000 + i) for i in range(150)] + [tcp(sport=30000 + i) for i in range(150)]


def test_a_restarted_node_sends_every_flow_to_the_target_it_had():
    before, after = node(IDS[:4]), node(list(reversed(IDS[:4])), first_cookie=12345)
    for packet in FLOWS:
        old, new = send(before, packet), send(after, packet)
        assert target_of(before, old) == target_of(after, new)
        assert old.src_port == new.src_port  # the appliance sees the same outer 5-tuple too


def test_a_restarted_node_keeps_flows_whose_target_still_stands_when_one_has_left():
    before, after = node(IDS[:4]), node([IDS[0], IDS[1], IDS[3]])
    kept = 0
    for packet in FLOWS:
        old = target_of(before, send(before, packet))
        new = target_of(after, send(after, packet))
        if old != IDS[2]:
            assert new == old
            kept += 1
    assert 150 < kept < 300  # the leaver had flows too


def test_a_restarted_node_gives_flows_fresh_cookies():
    """An appliance keys its verdicts on endpoint and cookie (reference §1.3): a dead node's
    cookies must not come back on other flows."""
    before, after = node(IDS[:2]), node(IDS[:2], first_cookie=0x9ABCDEF0)
    old = {before.from_endpoint(p, EP, 0).datagram[:40] for p in FLOWS[:50]}
    new = {after.from_endpoint(p, EP, 0).datagram[:40] for p in FLOWS[:50]}
    assert not old & new


def test_all_targets_unhealthy_still_pins_each_flow_to_one_target_by_its_hash():
    a, b = node(IDS[:3], healthy=False), node(IDS[:3], healthy=False)
    for i in IDS[:3]:
        a.set_target_health(i, False, now=0)
        b.set_target_health(i, False, now=0)
    chosen = {target_of(a, send(a, p)) for p in FLOWS}
    assert len(chosen) > 1  # spread, fail-open
    assert all(target_of(a, send(a, p)) == target_of(b, send(b, p)) for p in FLOWS)


def test_new_flows_go_only_to_healthy_targets():
    n = node(IDS[:3])
    n.set_target_health(IDS[1], False, now=1)
    assert all(target_of(n, send(n, p)) != IDS[1] for p in FLOWS)
    n.set_target_health(IDS[0], False, now=1)
    n.set_target_health(IDS[2], False, now=1)
    assert not isinstance(n.from_endpoint(udp(sport=9), EP, 2), Drop)
