"""Application Load Balancers in the lab file (reference §4): what differs from the other types
(two or more AZs, security groups, DNS name), HTTP and HTTPS listeners with their default
actions and certificates, listener rules, and the certificates section (pass 2).

Rules and actions are read by rules.py, which live changes share.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..common import _BuilderBase
from ..quotas import SGS_PER_ENI
from ..reader import _Invalid, _Spec
from ..resources import Certificate, Listener, ListenerRule, LoadBalancer, TargetGroup, Vpc
from .certificates import certificate_props
from .protocols import APPLICATION_PROTOCOLS, _protocol_problem, certificate_arn, listener_arn, rule_arn
from .rules import Resolve, forwarded_groups, read_actions, read_conditions, read_priority

MIN_ALB_ZONES = 2


def alb_dns_name(name: str, scheme: str, hex_id: str, region: str) -> str:
    """`[internal-]<name>-<number>.<region>.elb.amazonaws.com` (§3.1): AWS's id here is decimal."""
    prefix = "internal-" if scheme == "internal" else ""
    return f"{prefix}{name}-{int(hex_id[:8], 16)}.{region}.elb.amazonaws.com".lower()


def group_user(listeners: dict[str, Listener], rules: dict[str, ListenerRule], group: str) -> tuple[str, str] | None:
    """(load balancer, listener) of the first listener whose default action or rules forward to `group`."""
    for li in listeners.values():
        if group in forwarded_groups(li.default_action) or li.target_group == group:
            return li.load_balancer, li.name
    for rule in rules.values():
        if group in forwarded_groups(rule.action):
            return listeners[rule.listener].load_balancer, rule.listener
    return None


def application_group_problem(group: TargetGroup, lb: LoadBalancer, user: tuple[str, str] | None) -> str | None:
    """Why an Application Load Balancer may not forward to `group`: its protocol, its VPC, or
    another load balancer using it (`user`: see group_user)."""
    if group.protocol not in APPLICATION_PROTOCOLS:
        return (f"target group {group.name} is {group.protocol}; an Application Load Balancer forwards to HTTP or "
                "HTTPS target groups")
    if group.vpc != lb.vpc:
        return f"target group {group.name} is in VPC {group.vpc}, but load balancer {lb.name} is in VPC {lb.vpc}"
    if user is not None and user[0] != lb.name:
        return (f"target group {group.name} is already used by load balancer {user[0]} (listener {user[1]}); "
                "a target group serves one load balancer")
    return None


class ApplicationBuilder(_BuilderBase):
    """The Application Load Balancer's part of the ELBv2 builder."""

    def _certificates(self) -> None:
        lab_dir = Path(getattr(self.doc, "source", ".")).parent
        for spec in self.doc.specs["certificates"]:
            props = certificate_props(spec, lab_dir)
            self._add("certificates", Certificate(spec.name, certificate_arn(self.region, self.account, spec.name),
                                                  **props))

    def _application_load_balancer(self, spec: _Spec, mappings: list[dict[str, Any]], key: str) -> None:
        """What an ALB refuses that other types take: fewer than two AZs (one subnet per AZ is
        checked for every type), chosen addresses."""
        if len(mappings) < MIN_ALB_ZONES:
            raise _Invalid(spec.at(key), f"an Application Load Balancer needs subnets in at least {MIN_ALB_ZONES} "
                           f"AZs, got {len(mappings)}")
        for i, mapping in enumerate(mappings):
            for address in ("PrivateIPv4Address", "PublicIPv4Address"):
                if address in mapping:
                    raise _Invalid(f"{spec.at(key)}[{i}].{address}", "an Application Load Balancer's node addresses "
                                   "are AWS's to choose; only a Network Load Balancer takes them")

    def _load_balancer_groups(self, spec: _Spec, vpc: Vpc) -> tuple[str, ...]:
        """An ALB's security groups (by default its VPC's default group); other types take none."""
        lb_type = spec.props["Type"]
        if lb_type != "application":
            if "SecurityGroups" in spec.props:
                reason = ("a Gateway Load Balancer has no security groups" if lb_type == "gateway" else
                          "security groups on a Network Load Balancer are not supported yet")
                raise _Invalid(spec.at("SecurityGroups"), reason)
            return ()
        groups: list[str] = []
        for i, value in enumerate(spec.props.get("SecurityGroups", [f"{vpc.name}-default"])):
            self._within(SGS_PER_ENI, i + 1, f"{spec.at('SecurityGroups')}[{i}]",
                         lambda n: f"load balancer {spec.name}'s network interfaces have {n} security groups")
            group = self._ref("security_groups", value, f"{spec.at('SecurityGroups')}[{i}]", vpc)
            if group.name in groups:
                raise _Invalid(f"{spec.at('SecurityGroups')}[{i}]", f"security group {group.name} is listed twice")
            groups.append(group.name)
        if not groups:
            raise _Invalid(spec.at("SecurityGroups"), "an Application Load Balancer needs at least one security "
                           f"group; leave SecurityGroups out for {vpc.name}-default")
        return tuple(groups)

    def _application_listener(self, spec: _Spec, lb: LoadBalancer, taken: dict[int, str]) -> Listener:
        """An HTTP or HTTPS listener: a port of its own, a certificate if HTTPS, and its default action."""
        for key in ("Protocol", "Port"):
            if key not in spec.props:
                raise _Invalid(spec.at(key), f"required key is missing: an Application Load Balancer listener has a {key}")
        protocol, port = spec.props["Protocol"], spec.props["Port"]
        if protocol not in APPLICATION_PROTOCOLS:
            raise _Invalid(spec.at("Protocol"), _protocol_problem(protocol, APPLICATION_PROTOCOLS, "listeners"))
        if port in taken:
            raise _Invalid(spec.at("Port"), f"load balancer {lb.name} already has listener {taken[port]} on port {port}")
        taken[port] = spec.name
        certificate = self._listener_certificate(spec, protocol)
        if "ListenerAttributes" in spec.props and spec.props["ListenerAttributes"]:
            key, (_, path) = next(iter(spec.props["ListenerAttributes"].items()))
            raise _Invalid(path, f"unknown listener attribute '{key}'; an Application Load Balancer's listeners "
                           "have none vpclab supports")
        action = read_actions(spec.props["DefaultActions"], spec.at("DefaultActions"), protocol,
                              self._alb_group_resolver(lb))
        groups = forwarded_groups(action)
        return Listener(spec.name, listener_arn(self.region, lb.arn, lb.type, spec.name), lb.name,
                        groups[0] if groups else None, protocol, port, {}, action, certificate)

    def _listener_certificate(self, spec: _Spec, protocol: str) -> str | None:
        given = spec.props.get("Certificates")
        if protocol == "HTTP":
            if given:
                raise _Invalid(spec.at("Certificates"), "an HTTP listener takes no certificates; use Protocol: HTTPS")
            return None
        if not given:
            raise _Invalid(spec.at("Certificates"), "required key is missing: an HTTPS listener needs a certificate "
                           "([{CertificateArn: <certificate>}])")
        if len(given) > 1:
            raise _Invalid(f"{spec.at('Certificates')}[1]", "an HTTPS listener takes one certificate here; more "
                           "(chosen by SNI) are not supported yet")
        certificate = self._ref("certificates", given[0]["CertificateArn"], f"{spec.at('Certificates')}[0].CertificateArn")
        return certificate.name

    def _alb_group_resolver(self, lb: LoadBalancer) -> Resolve:
        """Target groups named in an ALB's actions: HTTP(S), in its VPC, used by no other load balancer."""
        def resolve(value: str, path: str) -> str:
            group: TargetGroup = self._ref("target_groups", value, path)
            user = group_user(self.built["listeners"], self.built["listener_rules"], group.name)
            problem = application_group_problem(group, lb, user)
            if problem:
                raise _Invalid(path, problem)
            return group.name

        return resolve

    def _listener_rules(self) -> None:
        priorities: dict[tuple[str, int], str] = {}  # (listener, priority) -> rule
        for spec in self.doc.specs["listener_rules"]:
            listener: Listener = self._ref("listeners", spec.props["ListenerArn"], spec.at("ListenerArn"))
            lb = self.built["load_balancers"][listener.load_balancer]
            if lb.type != "application":
                raise _Invalid(spec.at("ListenerArn"), f"listener {listener.name} belongs to a {lb.type.capitalize()} "
                               "Load Balancer; only an Application Load Balancer's listeners have rules")
            priority = read_priority(spec.props["Priority"], spec.at("Priority"))
            other = priorities.setdefault((listener.name, priority), spec.name)
            if other != spec.name:
                raise _Invalid(spec.at("Priority"), f"listener {listener.name} already has rule {other} at priority "
                               f"{priority}; each rule of a listener has its own priority")
            conditions = read_conditions(spec.props["Conditions"], spec.at("Conditions"))
            action = read_actions(spec.props["Actions"], spec.at("Actions"), listener.protocol or "HTTP",
                                  self._alb_group_resolver(lb))
            self._add("listener_rules", ListenerRule(spec.name, rule_arn(self.region, listener.arn, spec.name),
                                                     listener.name, priority, conditions, action))

