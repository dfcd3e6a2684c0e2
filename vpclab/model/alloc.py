"""Address allocation: subnet addresses, Elastic IPs and internet hosts.

Deterministic by construction: the loader takes every explicit address first,
then hands out the rest lowest first, in file order.
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Mapping

# Both from the shared address space (RFC 6598), not the documentation blocks: appliances
# (and Python's ipaddress) take TEST-NET addresses for private ones and would misclassify
# internet traffic, and no internet router carries 100.64.0.0/10, so nothing here ever
# looks like a real destination.
DEFAULT_INTERNET_CIDR = IPv4Network("100.64.0.0/24")
ELASTIC_IP_POOL = IPv4Network("100.64.1.0/24")
FIRST_ALLOCATED_HOST = 10  # below .10 only explicit addresses


class AddressError(ValueError):
    """An address that cannot be taken; the message says why."""


class AddressPool:
    """The addresses of one network: some reserved, the rest taken once each."""

    def __init__(
        self, network: IPv4Network, first: IPv4Address, reserved: Mapping[IPv4Address, str], label: str = ""
    ):
        self.network = network
        self.label = label or str(network)  # how messages name the pool
        self._first = first  # where allocation starts
        self._reserved = dict(reserved)
        self._owners: dict[IPv4Address, str] = {}

    def take(self, ip: IPv4Address, owner: str) -> None:
        if ip not in self.network:
            raise AddressError(f"{ip} is outside {self.label}")
        if ip in self._reserved:
            raise AddressError(f"{ip} is reserved in {self.label}: {self._reserved[ip]}")
        if ip in self._owners:
            raise AddressError(f"{ip} is already used by {self._owners[ip]}")
        self._owners[ip] = owner

    def allocate(self, owner: str) -> IPv4Address:
        """The lowest free address from the pool's start."""
        ip = self._first
        while ip in self.network:
            if ip not in self._reserved and ip not in self._owners:
                self._owners[ip] = owner
                return ip
            ip += 1
        raise AddressError(f"no free address left in {self.label}")


def subnet_pool(cidr: IPv4Network, label: str = "") -> AddressPool:
    """AWS reserves the first four addresses and the last of every subnet."""
    base = cidr.network_address
    reserved = {
        base: "network address",
        base + 1: "VPC router",
        base + 2: "DNS server",
        base + 3: "future use",
        cidr.broadcast_address: "broadcast address",
    }
    return AddressPool(cidr, base + 4, reserved, label)


def elastic_ip_pool() -> AddressPool:
    base = ELASTIC_IP_POOL.network_address
    reserved = {base: "network address", ELASTIC_IP_POOL.broadcast_address: "broadcast address"}
    return AddressPool(ELASTIC_IP_POOL, base + FIRST_ALLOCATED_HOST, reserved, f"the Elastic IP pool {ELASTIC_IP_POOL}")


def internet_pool(cidr: IPv4Network) -> AddressPool:
    """The simulated internet: .1 is its gateway and .2 its resolver."""
    base = cidr.network_address
    reserved = {
        base: "network address",
        base + 1: "internet router",
        base + 2: "internet resolver",
        cidr.broadcast_address: "broadcast address",
    }
    return AddressPool(cidr, base + FIRST_ALLOCATED_HOST, reserved, f"the internet {cidr}")
