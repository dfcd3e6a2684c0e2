"""Lambda in the lab file: `lambda_functions`, scheduled functions the lab runs itself.

Only AWS's published IP-sync function of the static-IP-for-ALB pattern (reference §5.1) is
known: its handler name, and its environment variables with the names and defaults the
function reads. `ScheduleExpression` is the EventBridge rule's, `rate(1 minute)` by default;
`ScheduleState: DISABLED` leaves the function to `vpclab invoke`.
"""
from __future__ import annotations

import re
from typing import Any

from .common import _BuilderBase
from .reader import TEXT, _attributes, _choice, _fields, _Invalid, _join, _leaf, _Spec, _text
from .resources import LambdaFunction

IP_SYNC_HANDLER = "populate_NLB_TG_with_ALB.lambda_handler"
# the published function's variables; S3_BUCKET is taken and unused (state lives in the state store)
VARIABLES = {
    "ALB_DNS_NAME": None, "ALB_LISTENER": None, "NLB_TG_ARN": None, "S3_BUCKET": "",
    "MAX_LOOKUP_PER_INVOCATION": "50", "INVOCATIONS_BEFORE_DEREGISTRATION": "3", "CW_METRIC_FLAG_IP_COUNT": "True",
}
RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def schedule_seconds(expression: str) -> int:
    """The period of an EventBridge `rate(...)` expression; ValueError(reason) otherwise."""
    match = RATE.fullmatch(expression.strip())
    if not match:
        raise ValueError(f"expected rate(N minutes|hours|days), like rate(1 minute), got '{expression}' "
                         "(cron expressions are not supported yet)")
    value, unit = int(match[1]), match[2]
    if value < 1:
        raise ValueError("a rate is at least 1")
    if (value == 1) != (not unit.endswith("s")):
        raise ValueError(f"EventBridge writes rate({value} {unit.rstrip('s') + ('' if value == 1 else 's')})")
    return value * UNIT_SECONDS[unit.rstrip("s")]


def _handler(value: Any) -> str:
    if _text(value) != IP_SYNC_HANDLER:
        raise ValueError(f"the only function the lab runs is AWS's IP-sync function, {IP_SYNC_HANDLER}; "
                         f"got '{value}'")
    return IP_SYNC_HANDLER


def _environment(value: Any, path: str) -> dict[str, tuple[Any, str]]:
    return _fields(value, path, {"Variables": _attributes})


RESOURCE_SECTIONS = {
    "lambda_functions": (
        {
            "Handler": _leaf(_handler),
            "Environment": _environment,
            "ScheduleExpression": TEXT,  # the EventBridge rule that invokes it
            "ScheduleState": _leaf(_choice("ENABLED", "DISABLED")),
        },
        ("Environment",),
    ),
}
SECTIONS = ("lambda_functions",)
KIND_LABELS = {"lambda_functions": "Lambda function"}


class LambdaBuilder(_BuilderBase):
    def _lambda_functions(self) -> None:
        for spec in self.doc.specs["lambda_functions"]:
            self._add("lambda_functions", self._ip_sync_function(spec))

    def _ip_sync_function(self, spec: _Spec) -> LambdaFunction:
        given = spec.props["Environment"].get("Variables", {})
        where = _join(spec.at("Environment"), "Variables")
        for key, (_value, path) in given.items():
            if key not in VARIABLES:
                raise _Invalid(path, f"the IP-sync function reads no variable {key}; it reads "
                                     f"{', '.join(VARIABLES)}")
        env = {key: str(given[key][0]) if key in given else default for key, default in VARIABLES.items()}
        for key, default in VARIABLES.items():
            if env[key] is None:
                raise _Invalid(_join(where, key), f"required variable is missing: {key}")
        path = lambda key: given[key][1] if key in given else _join(where, key)  # noqa: E731
        for key in ("MAX_LOOKUP_PER_INVOCATION", "INVOCATIONS_BEFORE_DEREGISTRATION"):
            if not env[key].isdigit() or int(env[key]) < 1:
                raise _Invalid(path(key), f"expected a whole number of at least 1, got '{env[key]}'")
        if env["CW_METRIC_FLAG_IP_COUNT"].lower() not in ("true", "false"):
            raise _Invalid(path("CW_METRIC_FLAG_IP_COUNT"),
                           f"expected True or False, got '{env['CW_METRIC_FLAG_IP_COUNT']}'")
        alb = next((lb for lb in self.built["load_balancers"].values()
                    if env["ALB_DNS_NAME"] in (lb.dns_name, lb.name)), None)
        if alb is None or alb.type != "application":
            raise _Invalid(path("ALB_DNS_NAME"), f"'{env['ALB_DNS_NAME']}' is not the DNS name (or name) of an "
                                                 "Application Load Balancer of the lab")
        ports = [li.port for li in self.built["listeners"].values() if li.load_balancer == alb.name]
        if not env["ALB_LISTENER"].isdigit() or int(env["ALB_LISTENER"]) not in ports:
            raise _Invalid(path("ALB_LISTENER"), f"'{env['ALB_LISTENER']}' is not a listener port of "
                                                 f"{alb.name} (it listens on {', '.join(map(str, ports)) or 'none'})")
        group = self._ref("target_groups", env["NLB_TG_ARN"], path("NLB_TG_ARN"))
        if group.target_type != "ip" or group.protocol != "TCP":
            raise _Invalid(path("NLB_TG_ARN"), f"target group {group.name} is {group.protocol} with "
                                               f"{group.target_type} targets; the function registers IPs in a "
                                               "TCP group of type ip")
        if group.vpc != alb.vpc:
            raise _Invalid(path("NLB_TG_ARN"), f"target group {group.name} is in VPC {group.vpc}, "
                                               f"the ALB in {alb.vpc}")
        expression = spec.props.get("ScheduleExpression", "rate(1 minute)")
        try:
            period = schedule_seconds(expression)
        except ValueError as e:
            raise _Invalid(spec.at("ScheduleExpression"), str(e)) from None
        env["ALB_DNS_NAME"], env["NLB_TG_ARN"] = alb.dns_name, group.arn
        return LambdaFunction(
            name=spec.name, arn=f"arn:aws:lambda:{self.region}:{self.account}:function:{spec.name}",
            handler=IP_SYNC_HANDLER, environment=env, load_balancer=alb.name, target_group=group.name,
            port=int(env["ALB_LISTENER"]), schedule_expression=expression, schedule_seconds=period,
            enabled=spec.props.get("ScheduleState", "ENABLED") == "ENABLED")


BUILDER = LambdaBuilder
CLAIMS = None  # a function outside a VPC takes no address
STEPS = {"routes": ("_lambda_functions",)}  # loader.PHASES: after target groups and listeners
