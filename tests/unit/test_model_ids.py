"""Stable AWS-shaped IDs and hostnames."""
from __future__ import annotations

import re
from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from vpclab.model.ids import aws_id, hostname_for


@given(st.sampled_from(["vpc", "subnet", "rtb", "igw", "nat", "eipalloc", "sg", "acl", "i", "eni", "vpce"]), st.text())
def test_aws_id_is_prefix_and_17_hex_digits_that_fit_64_bits(prefix, name):
    value = aws_id(prefix, "111122223333", "us-east-1", name)
    assert re.fullmatch(rf"{prefix}-0[0-9a-f]{{16}}", value)
    assert int(value.split("-")[1], 16) < 2**64


def test_aws_id_is_stable_and_depends_on_every_part():
    base = aws_id("vpc", "111122223333", "us-east-1", "main")
    assert base == aws_id("vpc", "111122223333", "us-east-1", "main")
    assert base != aws_id("vpc", "444455556666", "us-east-1", "main")
    assert base != aws_id("vpc", "111122223333", "eu-west-1", "main")
    assert base != aws_id("vpc", "111122223333", "us-east-1", "other")
    assert aws_id("i", "a", "r", "web")[2:] != aws_id("eni", "a", "r", "web")[4:]


def test_hostname_in_us_east_1_is_ec2_internal():
    assert hostname_for(IPv4Address("10.0.1.10"), "us-east-1") == "ip-10-0-1-10.ec2.internal"


def test_hostname_elsewhere_names_the_region():
    assert hostname_for(IPv4Address("10.0.1.10"), "eu-west-1") == "ip-10-0-1-10.eu-west-1.compute.internal"
