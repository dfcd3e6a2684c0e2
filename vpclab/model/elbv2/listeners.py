"""ELBv2 listeners in the lab file: a GWLB's one listener, an NLB's by protocol and port, and
the target group each forwards to (pass 2)."""
from __future__ import annotations

from ..reader import TEXT, _fields, _Invalid, _list_of, _Spec
from ..resources import Listener, LoadBalancer, TargetGroup
from .application import ApplicationBuilder
from .attributes import resolve_listener_attributes
from .protocols import LISTENER_GROUP_PROTOCOLS, LISTENER_PROTOCOLS, _protocol_problem, listener_arn

_ACTION = {"Type": TEXT, "TargetGroupArn": TEXT}  # a GWLB's or NLB's one default action


class Elbv2ListenerBuilder(ApplicationBuilder):
    """Listeners; the load balancers' and target groups' builder (Elbv2Builder) is the rest."""

    def _listeners(self) -> None:
        taken: dict[str, dict[int, list[tuple[str, str]]]] = {}  # load balancer -> port -> (protocol, listener)
        for spec in self.doc.specs["listeners"]:
            lb: LoadBalancer = self._ref("load_balancers", spec.props["LoadBalancerArn"], spec.at("LoadBalancerArn"))
            if lb.type == "application":
                ports = taken.setdefault(lb.name, {})
                listener = self._application_listener(spec, lb, {p: n[0][1] for p, n in ports.items()})
                ports[listener.port] = [(listener.protocol, listener.name)]
                self.listener_of.setdefault(lb.name, spec.name)
                self._add("listeners", listener)
                continue
            if "Certificates" in spec.props:
                raise _Invalid(spec.at("Certificates"), "only an Application Load Balancer's HTTPS listeners take "
                               "certificates here (TLS listeners are not supported yet)")
            if lb.type == "gateway":
                self._gateway_listener(spec, lb)
                protocol, port = None, None
            else:
                protocol, port = self._network_listener(spec, lb, taken.setdefault(lb.name, {}))
            group = self._forward_target(spec, lb, protocol)
            attributes = self._attributes(
                spec, "ListenerAttributes",
                lambda changes: resolve_listener_attributes(lb.type, protocol, None, changes),
            )  # fmt: skip
            self.listener_of.setdefault(lb.name, spec.name)
            self.listener_of_group.setdefault(group.name, spec.name)
            arn = listener_arn(self.region, lb.arn, lb.type, spec.name)
            self._add("listeners", Listener(spec.name, arn, lb.name, group.name, protocol, port, attributes))
        for spec in self.doc.specs["load_balancers"]:
            if spec.props["Type"] == "gateway" and spec.name not in self.listener_of:
                raise _Invalid(
                    spec.path,
                    f"a Gateway Load Balancer needs exactly one listener, and {spec.name} has none: "
                    f"add one under listeners with LoadBalancerArn: {spec.name}",
                )

    def _gateway_listener(self, spec: _Spec, lb: LoadBalancer) -> None:
        """A GWLB has exactly one listener, which takes every IP packet."""
        if lb.name in self.listener_of:
            raise _Invalid(
                spec.at("LoadBalancerArn"),
                f"load balancer {lb.name} already has listener {self.listener_of[lb.name]}; "
                "a Gateway Load Balancer has exactly one",
            )
        for key in ("Protocol", "Port"):
            if key in spec.props:
                raise _Invalid(
                    spec.at(key), "a Gateway Load Balancer listener takes every IP packet: no Protocol or Port"
                )

    def _network_listener(
        self, spec: _Spec, lb: LoadBalancer, taken: dict[int, list[tuple[str, str]]]
    ) -> tuple[str, int]:
        """An NLB listener's protocol and port, not colliding with its other listeners':
        TCP and UDP may share a port, TCP_UDP takes it for both."""
        for key in ("Protocol", "Port"):
            if key not in spec.props:
                raise _Invalid(spec.at(key), f"required key is missing: a Network Load Balancer listener has a {key}")
        protocol, port = spec.props["Protocol"], spec.props["Port"]
        if protocol not in LISTENER_PROTOCOLS:
            raise _Invalid(spec.at("Protocol"), _protocol_problem(protocol, LISTENER_PROTOCOLS, "listeners"))
        for other_protocol, other in taken.get(port, ()):
            if other_protocol == protocol or "TCP_UDP" in (protocol, other_protocol):
                raise _Invalid(
                    spec.at("Port"),
                    f"load balancer {lb.name} already has listener {other} on {other_protocol} port {port}; "
                    "two listeners can share a port only as TCP and UDP (TCP_UDP takes both)",
                )
        taken.setdefault(port, []).append((protocol, spec.name))
        return protocol, port

    def _forward_target(self, spec: _Spec, lb: LoadBalancer, protocol: str | None) -> TargetGroup:
        """The target group of a listener's one default action, a forward, in the load balancer's VPC."""
        kind = "a Gateway Load Balancer listener" if lb.type == "gateway" else "a Network Load Balancer listener"
        actions = _list_of(lambda value, path: _fields(value, path, _ACTION, ("Type",)))(
            spec.props["DefaultActions"], spec.at("DefaultActions"))
        if len(actions) != 1:
            raise _Invalid(
                spec.at("DefaultActions"),
                f"{kind} has exactly one default action, "
                f"{{Type: forward, TargetGroupArn: <target group>}}; got {len(actions)}",
            )
        action, action_path = actions[0], f"{spec.at('DefaultActions')}[0]"
        if action["Type"].lower() != "forward":
            raise _Invalid(f"{action_path}.Type", f"{kind} can only forward, got '{action['Type']}'")
        if "TargetGroupArn" not in action:
            raise _Invalid(f"{action_path}.TargetGroupArn", "required key is missing")
        group_path = f"{action_path}.TargetGroupArn"
        group: TargetGroup = self._ref("target_groups", action["TargetGroupArn"], group_path)
        if lb.type == "gateway" and group.protocol != "GENEVE":
            raise _Invalid(
                group_path, f"target group {group.name} is {group.protocol}; a Gateway Load Balancer forwards to GENEVE"
            )
        if protocol is not None and group.protocol not in LISTENER_GROUP_PROTOCOLS[protocol]:
            allowed = " or ".join(LISTENER_GROUP_PROTOCOLS[protocol])
            raise _Invalid(
                group_path,
                f"target group {group.name} is {group.protocol}, and a {protocol} listener forwards to a {allowed} "
                "target group",
            )
        first = self.listener_of_group.get(group.name)
        if first is not None and self.built["listeners"][first].load_balancer != lb.name:
            raise _Invalid(
                group_path,
                f"target group {group.name} is already used by listener {first}; "
                "vpclab lets a target group serve one load balancer",
            )
        if group.vpc != lb.vpc:
            raise _Invalid(
                group_path,
                f"target group {group.name} is in VPC {group.vpc}, but load balancer {lb.name} is in VPC {lb.vpc}",
            )
        return group

