"""Loading `lambda_functions`: AWS's IP-sync function with its environment variables (names and
defaults as the published function reads them) and its schedule, and every refusal."""
from __future__ import annotations

from pathlib import Path

import pytest

from vpclab.model import LabFileError, load_lab_text
from vpclab.model.awslambda import schedule_seconds

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "static-ip-alb.yaml").read_text()
FUNCTION = "lambda_functions.alb-ip-sync"


def load(text: str = EXAMPLE):
    return load_lab_text(text, "lab.yaml", name="t")


def edit(old: str, new: str) -> str:
    assert EXAMPLE.count(old) == 1, old
    return EXAMPLE.replace(old, new)


def refused_at(text: str, key_path: str) -> str:
    with pytest.raises(LabFileError) as info:
        load(text)
    assert info.value.key_path == key_path, (info.value.key_path, info.value.reason)
    return info.value.reason


def test_the_example_function_resolves_its_alb_group_and_defaults():
    lab = load()
    fn = lab.lambda_functions["alb-ip-sync"]
    alb = lab.load_balancers["web-alb"]
    assert fn.load_balancer == "web-alb" and fn.target_group == "alb-ips" and fn.port == 443
    assert fn.environment["ALB_DNS_NAME"] == alb.dns_name
    assert fn.environment["NLB_TG_ARN"] == lab.target_groups["alb-ips"].arn
    assert fn.schedule_seconds == 60 and fn.enabled
    pp2 = lab.lambda_functions["alb-ip-sync-pp2"]  # every variable it leaves out takes AWS's default
    assert pp2.environment["MAX_LOOKUP_PER_INVOCATION"] == "50"
    assert pp2.environment["INVOCATIONS_BEFORE_DEREGISTRATION"] == "3"
    assert pp2.environment["CW_METRIC_FLAG_IP_COUNT"] == "True"


@pytest.mark.parametrize("expression, seconds", [("rate(1 minute)", 60), ("rate(5 minutes)", 300),
                                                 ("rate(1 hour)", 3600), ("rate(2 days)", 172800)])
def test_schedule_rates(expression, seconds):
    assert schedule_seconds(expression) == seconds


@pytest.mark.parametrize("expression", ["rate(1 minutes)", "rate(2 minute)", "rate(0 minutes)",
                                        "cron(0 * * * ? *)", "every minute"])
def test_bad_schedules_are_refused(expression):
    with pytest.raises(ValueError):
        schedule_seconds(expression)


def test_bad_schedule_is_refused_at_its_key():
    text = edit("    ScheduleExpression: rate(1 minute)\n    Environment:\n      Variables:\n        ALB_DNS_NAME",
                "    ScheduleExpression: rate(30 seconds)\n    Environment:\n      Variables:\n        ALB_DNS_NAME")
    assert "rate(" in refused_at(text, f"{FUNCTION}.ScheduleExpression")


@pytest.mark.parametrize("old, new, key, words", [
    ("ALB_DNS_NAME: web-alb\n", "ALB_DNS_NAME: static-nlb\n", "ALB_DNS_NAME", "not the DNS name"),
    ('ALB_LISTENER: "443"\n', 'ALB_LISTENER: "80"\n', "ALB_LISTENER", "listens on 443"),
    ("NLB_TG_ARN: alb-ips\n", "NLB_TG_ARN: web\n", "NLB_TG_ARN", "instance targets"),
    ("NLB_TG_ARN: alb-ips\n", "NLB_TG_ARN: nothing\n", "NLB_TG_ARN", "unknown target group"),
    ('INVOCATIONS_BEFORE_DEREGISTRATION: "3"\n', 'INVOCATIONS_BEFORE_DEREGISTRATION: "0"\n',
     "INVOCATIONS_BEFORE_DEREGISTRATION", "at least 1"),
    ('CW_METRIC_FLAG_IP_COUNT: "True"\n', 'CW_METRIC_FLAG_IP_COUNT: "yes"\n', "CW_METRIC_FLAG_IP_COUNT", "True or False"),
    ('CW_METRIC_FLAG_IP_COUNT: "True"\n', 'CW_METRIC_FLAG_IP_COUNT: "True"\n        ALB_PORT: "1"\n', "ALB_PORT",
     "reads no variable"),
])
def test_bad_variables_are_refused_at_their_key(old, new, key, words):
    assert words in refused_at(edit(old, new), f"{FUNCTION}.Environment.Variables.{key}")


def test_missing_variable_is_named():
    text = edit("        NLB_TG_ARN: alb-ips\n", "")
    assert "NLB_TG_ARN" in refused_at(text, f"{FUNCTION}.Environment.Variables.NLB_TG_ARN")


def test_other_handlers_are_refused():
    text = edit("    Handler: populate_NLB_TG_with_ALB.lambda_handler\n    ScheduleExpression: rate(1 minute)\n    Environment:\n      Variables:\n        ALB_DNS_NAME",
                "    Handler: index.handler\n    ScheduleExpression: rate(1 minute)\n    Environment:\n      Variables:\n        ALB_DNS_NAME")
    assert "IP-sync" in refused_at(text, f"{FUNCTION}.Handler")
