"""Whatever a lab file holds, loading it gives a Lab or one LabFileError, never a crash."""
from __future__ import annotations

import copy
import unicodedata
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vpclab.model import Lab, LabFileError, load_lab_text
from vpclab.model.errors import UNPRINTABLE

EXAMPLE = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "basic-vpc.yaml").read_text())


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into the example, containers included."""
    found = [prefix] if prefix else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found += _paths(child, prefix + (key,))
    return found


PATHS = _paths(EXAMPLE)
PLAUSIBLE = st.sampled_from(
    ["10.0.1.0/24", "10.0.1.5", "10.0.0.0/16", "0.0.0.0/0", "main", "public-a", "igw", "nat-a", "web-sg", "web-1",
     "tcp", "-1", "icmp", "local", "a", "100.64.1.10", "100.64.0.1"]
)  # fmt: skip
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-70000, 70000),
    st.text(max_size=8),
    PLAUSIBLE,
    st.lists(PLAUSIBLE, max_size=2),
    st.dictionaries(st.sampled_from(["CidrBlock", "VpcId", "x", "DestinationCidrBlock"]), PLAUSIBLE, max_size=2),
)


def loads_or_is_refused(original: dict, mutations: list[tuple[tuple, Any]]) -> None:
    """Apply each (key path, value) to a copy of `original`; loading it gives a Lab or one LabFileError."""
    doc = copy.deepcopy(original)
    for path, value in mutations:
        node = doc
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = copy.deepcopy(value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    try:
        lab = load_lab_text(yaml.safe_dump(doc), "fuzz.yaml", name="fuzz")
    except LabFileError as e:
        assert "\n" not in str(e)
        assert not any(unicodedata.category(c) in UNPRINTABLE for c in str(e))  # control characters come out escaped
    else:
        assert isinstance(lab, Lab)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=3))
def test_mutated_example_loads_or_is_refused_with_a_lab_file_error(mutations):
    loads_or_is_refused(EXAMPLE, mutations)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(PATHS), st.integers(65, 10_000), st.sampled_from([("[", "]"), ("{k: ", "}")]))
def test_deep_nesting_anywhere_in_a_lab_is_refused_with_a_lab_file_error(path, depth, brackets):
    """Lists or mappings nested deeper than a lab file may, wherever they are, are refused
    (not a RecursionError); the key path names where the nesting goes too deep."""
    doc = copy.deepcopy(EXAMPLE)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = "NESTED-HERE"
    opening, closing = brackets
    text = yaml.safe_dump(doc, default_flow_style=True, width=2**20).replace(
        "NESTED-HERE", opening * depth + "x" + closing * depth)
    try:
        load_lab_text(text, "deep.yaml", name="deep")
    except LabFileError as e:
        assert "nest deeper than the 64 levels a lab file may have" in e.reason
    else:
        raise AssertionError("a lab nested too deep was loaded")


# The same over a GWLB lab: load balancer, target group, listener, endpoint service, endpoint, routes.
from test_model_gwlb import GWLB, ROUTES  # noqa: E402

GWLB_DOC = yaml.safe_load(GWLB + ROUTES + "    \n")
GWLB_PATHS = _paths(GWLB_DOC)
GWLB_PLAUSIBLE = st.sampled_from(
    ["gwlb", "appliances", "gwlb-listener", "inspection", "gwlbe-a", "sec", "app", "sec-a", "sec-b", "web-a",
     "appliance-1", "web-1", "GENEVE", "6081", 6081, "10.0.21.5", "10.1.11.0/24", "forward", "gateway", "network",
     "GatewayLoadBalancer", "Interface", "*", "arn:aws:iam::222233334444:root", "true", "rebalance",
     "source_ip_dest_ip", "350", {"Id": "10.0.21.20"}, {"SubnetId": "sec-a"}, {"Type": "forward"},
     {"tcp.idle_timeout.seconds": 59}, {"rules": [{"action": "deny"}]}])  # fmt: skip
GWLB_VALUES = st.one_of(VALUES, GWLB_PLAUSIBLE, st.lists(GWLB_PLAUSIBLE, max_size=2))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(GWLB_PATHS), GWLB_VALUES), min_size=1, max_size=3))
def test_mutated_gwlb_lab_loads_or_is_refused_with_a_lab_file_error(mutations):
    loads_or_is_refused(GWLB_DOC, mutations)


# The same over an NLB and PrivateLink lab: listeners, protocol-dependent attributes,
# interface endpoints, security groups, subnet configurations, aliases by lab name.
from test_model_privatelink import PRIVATELINK, zone  # noqa: E402

PRIVATELINK_DOC = yaml.safe_load(zone("vpce", PRIVATELINK))
PRIVATELINK_PATHS = _paths(PRIVATELINK_DOC)
PRIVATELINK_PLAUSIBLE = st.sampled_from(
    ["nlb", "svc", "vpce", "web", "http", "consumer", "provider", "consumer-a", "consumer-c", "endpoint-sg",
     "provider-sg", "TCP", "UDP", "TCP_UDP", "TLS", "Interface", "GatewayLoadBalancer", "internet-facing", "network",
     "10.0.1.50", "100.64.1.9", 80, "*", "false", {"SubnetId": "consumer-a", "Ipv4": "10.0.1.60"},
     {"preserve_client_ip.enabled": False}, {"tcp.idle_timeout.seconds": 60}, {"Id": "web-1", "Port": 8080},
     [{"SubnetId": "provider-a"}]])  # fmt: skip
PRIVATELINK_VALUES = st.one_of(VALUES, PRIVATELINK_PLAUSIBLE, st.lists(PRIVATELINK_PLAUSIBLE, max_size=2))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PRIVATELINK_PATHS), PRIVATELINK_VALUES), min_size=1, max_size=3))
def test_mutated_privatelink_lab_loads_or_is_refused_with_a_lab_file_error(mutations):
    loads_or_is_refused(PRIVATELINK_DOC, mutations)
