"""A GWLB node's CONFIG.json (see node.py), validated: ValueError names the bad field."""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from typing import Any, Mapping

from vpclab.engines.gwlb import fastpath
from vpclab.engines.gwlb.config import GwlbConfig
from vpclab.engines.io.geneve import vpce_id_to_int


def parse_mac(text: str) -> bytes:
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {text!r}") from None


def format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass(frozen=True)
class EndpointSpec:
    id: str
    ifname: str
    peer_mac: bytes | None = None

    @classmethod
    def from_dict(cls, where: str, data: Any) -> EndpointSpec:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected an object, got {data!r}")
        _no_unknown(where, data, {"id", "ifname", "peer_mac"})
        endpoint_id = data.get("id")
        try:
            vpce_id_to_int(endpoint_id)
        except (ValueError, TypeError):
            raise ValueError(f"{where}.id: not a GWLB endpoint ID: {endpoint_id!r}") from None
        ifname = data.get("ifname")
        if not isinstance(ifname, str) or not 0 < len(ifname) < 16 or "/" in ifname:
            raise ValueError(f"{where}.ifname: not an interface name: {ifname!r}")
        peer_mac = data.get("peer_mac")
        try:
            mac = None if peer_mac is None else parse_mac(peer_mac)
        except ValueError as error:
            raise ValueError(f"{where}.peer_mac: {error}") from None
        return cls(endpoint_id, ifname, mac)


@dataclass(frozen=True)
class TargetSpec:
    id: str
    ip: str
    az: str | None = None
    healthy: bool | None = None

    @classmethod
    def from_dict(cls, where: str, data: Any) -> TargetSpec:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected an object, got {data!r}")
        _no_unknown(where, data, {"id", "ip", "az", "healthy"})
        target_id = data.get("id")
        if not isinstance(target_id, str) or not target_id:
            raise ValueError(f"{where}.id: expected a target ID, got {target_id!r}")
        az = data.get("az")
        if az is not None and not isinstance(az, str):
            raise ValueError(f"{where}.az: expected a string, got {az!r}")
        healthy = data.get("healthy")
        if healthy is not None and not isinstance(healthy, bool):
            raise ValueError(f"{where}.healthy: expected true, false or null, got {healthy!r}")
        return cls(target_id, _ipv4(f"{where}.ip", data.get("ip")), az, healthy)


@dataclass(frozen=True)
class NodeSpec:
    """The node's CONFIG.json, validated; ValueError names the bad field."""

    availability_zone: str
    node_ip: str
    control_socket: str
    attributes: Mapping[str, Any]
    endpoints: tuple[EndpointSpec, ...] = ()
    targets: tuple[TargetSpec, ...] = ()
    uplink: str = "eth0"
    fast_path: fastpath.FastPathFds | None = None
    hash_seed: int = 0  # the load balancer's: its nodes, and a node restarted, pick alike

    @classmethod
    def from_dict(cls, data: Any) -> NodeSpec:
        if not isinstance(data, Mapping):
            raise ValueError("config: expected a JSON object")
        _no_unknown("config", data, {"availability_zone", "attributes", "node_ip", "endpoints",
                                     "targets", "control_socket", "uplink", "fast_path", "hash_seed"})
        az = data.get("availability_zone", "")
        if not isinstance(az, str):
            raise ValueError(f"config.availability_zone: expected a string, got {az!r}")
        control = data.get("control_socket")
        if not isinstance(control, str) or not control:
            raise ValueError("config.control_socket: a path is required")
        attributes = data.get("attributes") or {}
        if not isinstance(attributes, Mapping):
            raise ValueError("config.attributes: expected an object")
        uplink = data.get("uplink", "eth0")
        if not isinstance(uplink, str) or not 0 < len(uplink) < 16:
            raise ValueError(f"config.uplink: not an interface name: {uplink!r}")
        endpoints = tuple(EndpointSpec.from_dict(f"config.endpoints[{i}]", e)
                          for i, e in enumerate(_list("config.endpoints", data.get("endpoints"))))
        targets = tuple(TargetSpec.from_dict(f"config.targets[{i}]", t)
                        for i, t in enumerate(_list("config.targets", data.get("targets"))))
        for name, items in (("endpoints", [e.id for e in endpoints]), ("targets", [t.id for t in targets])):
            duplicates = sorted({i for i in items if items.count(i) > 1})
            if duplicates:
                raise ValueError(f"config.{name}: duplicate id(s) {', '.join(duplicates)}")
        hash_seed = data.get("hash_seed", 0)
        if type(hash_seed) is not int or not 0 <= hash_seed < 1 << 63:
            raise ValueError(f"config.hash_seed: expected a non-negative integer, got {hash_seed!r}")
        fast_path = None
        if data.get("fast_path") is not None:
            try:
                fast_path = fastpath.FastPathFds.from_dict(data["fast_path"])
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"config.fast_path: expected the fds of a loaded instance ({error})") from None
        spec = cls(availability_zone=az, node_ip=_ipv4("config.node_ip", data.get("node_ip")),
                   control_socket=control, attributes=dict(attributes), endpoints=endpoints,
                   targets=targets, uplink=uplink, fast_path=fast_path, hash_seed=hash_seed)
        try:
            spec.gwlb_config()
        except (ValueError, TypeError) as error:
            raise ValueError(f"config.attributes: {error}") from None
        return spec

    def gwlb_config(self, attributes: Mapping[str, Any] | None = None) -> GwlbConfig:
        return GwlbConfig.from_attributes(self.attributes if attributes is None else attributes,
                                          availability_zone=self.availability_zone, hash_seed=self.hash_seed)


def _no_unknown(where: str, data: Mapping, known: set[str]) -> None:
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _list(where: str, value: Any) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list")
    return value


def _ipv4(where: str, value: Any) -> str:
    try:
        address = ip_address(value)
    except (ValueError, TypeError):
        raise ValueError(f"{where}: not an IP address: {value!r}") from None
    if not isinstance(address, IPv4Address):
        raise ValueError(f"{where}: GENEVE to appliances is IPv4 only, got {value!r}")
    return str(address)
