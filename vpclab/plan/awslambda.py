"""Compile Lambda: each scheduled function is a job the daemon runs (daemon/ipsync.py), in the
router namespace of its ALB's VPC, where it asks the VPC resolver for the ALB's name."""
from __future__ import annotations

from vpclab.model.resources import Lab
from vpclab.plan.common import router_ns
from vpclab.plan.wiring import Service, Wiring


def functions(lab: Lab) -> Wiring:
    services = []
    for fn in lab.lambda_functions.values():
        vpc = lab.vpcs[lab.load_balancers[fn.load_balancer].vpc]
        services.append(Service(router_ns(vpc.name), "lambda_function", (), (
            ("function", fn.name), ("resolver", str(vpc.resolver_ip)),
            ("environment", tuple(sorted(fn.environment.items()))),
            ("target_group", fn.target_group), ("port", fn.port),
            ("schedule_seconds", fn.schedule_seconds if fn.enabled else 0))))
    return Wiring((), (), tuple(services))
