"""The compiled form of a lab: plain data that says what Linux must look like.

The fabric makes Linux match a `Wiring`; `vpclab plan` prints one. Nothing here
does I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Namespace:
    """One network namespace, held by a process of the lab.

    `kind` is router, instance, igw, nat, internet, host, gwlb, nlb (an NLB
    node; its ruleset is the daemon's, as it follows target health, and the ENIs
    of interface endpoints in its AZ end in it) or alb (an ALB node: HAProxy). Instances and hosts also get
    their own mount and UTS namespaces (hostname, resolv.conf).
    """

    name: str
    kind: str
    hostname: str | None = None
    resolv_conf: str | None = None
    etc_hosts: str | None = None
    sysctls: tuple[tuple[str, str], ...] = ()  # paths under /proc/sys/net
    ip_batch: tuple[str, ...] = ()  # `ip -batch` lines, run inside the namespace
    nft: str = ""  # an nftables ruleset, applied atomically
    # An iptables-nft-restore script, loaded after `nft` (whose flush removes it): what nftables
    # itself may not do in a user namespace (header rewrites), through the kernel's xt targets.
    iptables: str = ""
    tx_offload_off: tuple[str, ...] = ()  # interfaces whose packets an engine relays raw

    @property
    def own_mounts(self) -> bool:
        return self.hostname is not None


@dataclass(frozen=True)
class Link:
    """A veth pair between two namespaces."""

    a_ns: str
    a_ifname: str
    b_ns: str
    b_ifname: str
    mtu: int = 9001


@dataclass(frozen=True)
class Service:
    """Something the daemon runs inside a namespace.

    kind: `test_page` (TCP 80), `banner` (TCP 22), `dns` (UDP and TCP 53 on
    `addresses`), `command` (a shell command run inside the namespace),
    `appliance` (the reference GENEVE appliance), `gwlb_node` (one GWLB node),
    `nlb_node` (one NLB node's ruleset, loaded by the daemon), `alb_node` (one ALB
    node's HAProxy, from plan.elbv2.alb_node_config), `pp2_relay`
    (a Proxy Protocol v2 relay listening on `addresses`) or `lambda_function` (a scheduled
    function the daemon runs itself, daemon/ipsync.py).
    """

    ns: str
    kind: str
    addresses: tuple[str, ...] = ()
    params: tuple[tuple[str, object], ...] = ()

    def param(self, key: str, default=None):
        return dict(self.params).get(key, default)


@dataclass(frozen=True)
class Wiring:
    namespaces: tuple[Namespace, ...]
    links: tuple[Link, ...]
    services: tuple[Service, ...] = field(default=())

    def namespace(self, name: str) -> Namespace:
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        raise KeyError(name)

    @staticmethod
    def join(parts: list[Wiring]) -> Wiring:
        """One wiring of the parts, in their order (what each service compiled)."""
        return Wiring(tuple(ns for p in parts for ns in p.namespaces), tuple(li for p in parts for li in p.links),
                      tuple(svc for p in parts for svc in p.services))

    def render(self) -> str:
        """A readable listing of everything, as `vpclab plan` prints it."""
        out: list[str] = []
        for ns in self.namespaces:
            head = f"namespace {ns.name} ({ns.kind})"
            if ns.hostname:
                head += f" hostname={ns.hostname}"
            out.append(head)
            for key, value in ns.sysctls:
                out.append(f"  sysctl {key}={value}")
            for line in ns.ip_batch:
                out.append(f"  ip {line}")
            for ifname in ns.tx_offload_off:
                out.append(f"  ethtool -K {ifname} tx off")
            if ns.nft:
                out.append("  nft:")
                out.extend("    " + line for line in ns.nft.splitlines())
        for link in self.links:
            out.append(
                f"link {link.a_ns}:{link.a_ifname} <-> {link.b_ns}:{link.b_ifname} mtu {link.mtu}"
            )
        for svc in self.services:
            extra = " ".join(f"{k}={v}" for k, v in svc.params if k != "identity")
            out.append(f"service {svc.kind} in {svc.ns} {' '.join(svc.addresses)} {extra}".rstrip())
        return "\n".join(out) + "\n"
