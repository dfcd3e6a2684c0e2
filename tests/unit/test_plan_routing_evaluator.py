"""The policy-routing evaluator the plan tests trust (plan_routing.py), on hand-written tables."""
from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from plan_routing import Decision, PolicyRouter

# The shape plan/ec2.py gives a VPC router: one rule per ingress interface, AWS tables
# with the local route as a throw, a table of per-ENI /32 routes, then a blackhole rule.
ROUTER = """
link set lo up
addr add 10.0.0.2/32 dev lo
addr add 10.0.1.1/32 dev e-a
addr add 10.0.5.1/32 dev e-b
addr add 169.254.0.1/30 dev igw
ntable change name arp_cache dev e-a proxy_delay 0
rule add pref 1000 iif e-a lookup 1000
rule add pref 1001 iif igw lookup 1001
route add throw 10.0.0.0/16 table 1000
route add 10.0.0.0/8 via 10.0.3.10 dev e-m onlink table 1000
route add 10.0.5.0/24 via 10.0.3.10 dev e-m onlink table 1000
route add default via 169.254.0.2 dev igw onlink table 1000
route add blackhole 198.51.100.0/24 table 1000
route add throw 10.0.0.0/16 table 1001
route add 10.0.1.10/32 dev e-a table 200
route add 10.0.5.10/32 dev e-b table 200
rule add pref 2000 lookup 200
rule add pref 2001 blackhole
"""


def router(text: str = ROUTER) -> PolicyRouter:
    return PolicyRouter.from_batch(line for line in text.strip().splitlines() if line.strip())


def test_owned_addresses_are_local_whatever_the_rules():
    r = router()
    for dst in ("10.0.0.2", "10.0.1.1", "10.0.5.1", "169.254.0.1"):
        assert r.route("e-a", dst).action == "local"
        assert r.route("e-zzz", dst).action == "local"


def test_longest_prefix_in_the_table_the_rule_picks():
    r = router()
    assert r.route("e-a", "8.8.8.8") == Decision("forward", "igw", IPv4Address("169.254.0.2"), 1000, 1000)
    assert r.route("e-a", "10.200.0.1") == Decision("forward", "e-m", IPv4Address("10.0.3.10"), 1000, 1000)


def test_a_more_specific_route_beats_the_throw_and_a_later_table_never_beats_an_earlier_one():
    r = router()
    # 10.0.5.0/24 (table 1000) is longer than the throw 10.0.0.0/16, and table 200's /32
    # is never consulted: rules, not prefix lengths, order the tables.
    assert r.route("e-a", "10.0.5.10") == Decision("forward", "e-m", IPv4Address("10.0.3.10"), 1000, 1000)


def test_throw_goes_on_with_the_next_rule_not_to_a_shorter_prefix_of_the_same_table():
    r = router()
    # 10.0.1.10 hits the throw 10.0.0.0/16 in table 1000; 10.0.0.0/8 must not catch it.
    assert r.route("e-a", "10.0.1.10") == Decision("forward", "e-a", None, 2000, 200)
    assert r.route("igw", "10.0.5.10") == Decision("forward", "e-b", None, 2000, 200)


def test_rules_match_only_their_ingress_interface():
    r = router()
    assert r.route("e-b", "10.0.5.10") == Decision("forward", "e-b", None, 2000, 200)
    assert r.route("e-b", "8.8.8.8") == Decision("drop", pref=2001)


def test_blackhole_route_and_blackhole_rule_drop():
    r = router()
    assert r.route("e-a", "198.51.100.7") == Decision("drop", pref=1000, table=1000)
    assert r.route("e-a", "10.0.9.9") == Decision("drop", pref=2001)  # throw, no /32, blackhole rule


def test_without_a_blackhole_rule_the_kernel_main_table_and_then_unreachable_follow():
    r = router(ROUTER.replace("rule add pref 2001 blackhole\n", ""))
    assert r.route("e-b", "169.254.0.2") == Decision("forward", "igw", None, 32766, 254)  # the /30's prefix route
    assert r.route("e-b", "8.8.8.8") == Decision("unreachable")


def test_equal_preferences_keep_the_order_they_were_added():
    r = router("""
rule add pref 5 lookup 10
rule add pref 5 lookup 11
route add 1.0.0.0/8 dev x table 11
route add 1.0.0.0/8 dev y table 10
""")
    assert r.route("any", "1.2.3.4").dev == "y"


@pytest.mark.parametrize("line", [
    "route add 10.0.0.0/16 table 5",  # unicast without a device
    "route add throw 10.0.0.0/16 dev x table 5",
    "route add 10.0.0.1/16 dev x",  # host bits set: ip refuses it
    "route add unreachable 10.0.0.0/16 table 5",
    "route add 10.0.0.0/16 dev x metric 5",
    "rule add pref 5 tos 1 lookup 5",
    "rule add lookup 5",
    "rule add pref 5",
    "addr add 10.0.0.1/24",
    "neigh add 10.0.0.1 dev x",
])
def test_lines_it_does_not_understand_are_errors(line):
    with pytest.raises(ValueError):
        router(line)


@pytest.mark.parametrize("lines", [
    "route add 10.0.0.0/16 dev x table 5\nroute add throw 10.0.0.0/16 table 5",
    "rule add pref 5 iif a lookup 5\nrule add pref 5 iif a lookup 5",
])
def test_adding_the_same_route_or_rule_twice_fails_as_ip_batch_would(lines):
    with pytest.raises(ValueError, match="File exists"):
        router(lines)


def test_fwmark_rule_applies_only_to_marked_packets():
    router = PolicyRouter.from_batch([
        "route add 10.0.1.5/32 dev a table 200", "route add default via 10.0.1.5 dev a onlink table 400",
        "rule add pref 100 fwmark 0x100 lookup 400", "rule add pref 2000 lookup 200",
        "route add 10.0.9.10/32 dev c table 200",
    ])
    assert router.route("b", "10.0.9.10").dev == "c"
    assert router.route("b", "10.0.9.10", mark=0x100).dev == "a"
