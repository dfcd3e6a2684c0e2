"""Address pools: reserved addresses, explicit takes, lowest-first allocation."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from vpclab.model.alloc import DEFAULT_INTERNET_CIDR, ELASTIC_IP_POOL, AddressError, elastic_ip_pool, internet_pool, subnet_pool
from vpclab.model import load_lab_text

SUBNET = IPv4Network("10.0.1.0/24")


def test_subnet_allocation_starts_after_the_four_reserved_addresses():
    pool = subnet_pool(SUBNET)
    assert pool.allocate("a") == IPv4Address("10.0.1.4")
    assert pool.allocate("b") == IPv4Address("10.0.1.5")


def test_allocation_skips_explicitly_taken_addresses():
    pool = subnet_pool(SUBNET)
    pool.take(IPv4Address("10.0.1.4"), "pinned")
    assert pool.allocate("a") == IPv4Address("10.0.1.5")


@pytest.mark.parametrize("host, reason", [(0, "network address"), (1, "VPC router"), (2, "DNS server"), (3, "future use"), (255, "broadcast address")])
def test_subnet_reserved_addresses_say_why(host, reason):
    with pytest.raises(AddressError, match=reason):
        subnet_pool(SUBNET).take(SUBNET.network_address + host, "x")


def test_taking_an_address_twice_names_its_owner():
    pool = subnet_pool(SUBNET)
    pool.take(IPv4Address("10.0.1.9"), "instance a")
    with pytest.raises(AddressError, match="already used by instance a"):
        pool.take(IPv4Address("10.0.1.9"), "instance b")


def test_exhausted_pool_says_so():
    pool = subnet_pool(IPv4Network("10.0.1.0/28"))
    for n in range(11):
        pool.allocate(str(n))
    with pytest.raises(AddressError, match="no free address left"):
        pool.allocate("one more")


def test_elastic_ips_start_at_100_64_1_10():
    assert elastic_ip_pool().allocate("x") == IPv4Address("100.64.1.10")


def test_internet_hosts_start_at_dot_10_and_gateway_and_resolver_are_reserved():
    pool = internet_pool(IPv4Network("100.64.0.0/24"))
    assert pool.allocate("x") == IPv4Address("100.64.0.10")
    for host, reason in ((1, "internet router"), (2, "internet resolver")):
        with pytest.raises(AddressError, match=reason):
            pool.take(IPv4Address(f"100.64.0.{host}"), "y")


@pytest.mark.parametrize("default", [DEFAULT_INTERNET_CIDR, ELASTIC_IP_POOL], ids=["internet", "elastic-ips"])
def test_default_public_ranges_are_shared_address_space_neither_private_nor_routed_on_the_internet(default):
    # Appliances classify by is_private: a documentation block (TEST-NET) would make the
    # internet look inside. 100.64.0.0/10 (RFC 6598) is neither private nor carried by any
    # internet router, so an escaped packet could never reach a real destination.
    assert default.subnet_of(IPv4Network("100.64.0.0/10"))
    assert not default.is_private and not default.is_global
    assert not any(ip.is_private or ip.is_global for ip in (default[0], default[10], default[-1]))


def test_the_internet_defaults_to_shared_address_space_and_a_lab_may_choose_another_range():
    vpc = "vpcs: {v: {CidrBlock: 10.0.0.0/16}}\n"
    assert load_lab_text(vpc, "lab.yaml").internet_cidr == DEFAULT_INTERNET_CIDR
    chosen = load_lab_text(vpc + "internet: {CidrBlock: 198.51.100.0/24, hosts: {h: {}}}\n", "lab.yaml")
    assert chosen.internet_cidr == IPv4Network("198.51.100.0/24")
    assert str(chosen.internet_hosts["h"].ip) == "198.51.100.10"
