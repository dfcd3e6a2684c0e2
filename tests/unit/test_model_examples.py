"""Every lab file shipped in examples/ and every lab in docs/lab-file.md loads."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from vpclab.model import load_lab, load_lab_text

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").rglob("*.yaml"))
DOC = (REPO / "docs" / "lab-file.md").read_text()
# A complete lab in the docs starts with `lab:`; fragments of one section do not.
DOC_LABS = [block for block in re.findall(r"```yaml\n(.*?)```", DOC, re.S) if block.startswith("lab:")]


def test_there_are_examples_and_doc_labs():
    assert any(path.name == "basic-vpc.yaml" for path in EXAMPLES)
    assert len(DOC_LABS) >= 3  # the two-tier lab, the GWLB lab and the NLB and PrivateLink lab


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_loads(path):
    lab = load_lab(path)
    assert lab.vpcs
    for endpoint in lab.vpc_endpoints.values():  # what the fabric will rely on: a node in each ENI's AZ
        for eni in endpoint.enis:
            lb = lab.load_balancer_of_endpoint(endpoint.name, eni.az)
            assert lb.type == {"GatewayLoadBalancer": "gateway", "Interface": "network"}[endpoint.type]
    for group in lab.target_groups.values():
        group.health_check_config()


@pytest.mark.parametrize("text", DOC_LABS, ids=[f"doc-lab-{i}" for i in range(len(DOC_LABS))])
def test_doc_lab_loads(text):
    assert load_lab_text(text, "docs/lab-file.md").vpcs


def test_gwlb_examples_when_present():
    for name in ("gwlb-distributed.yaml", "gwlb-two-vpc.yaml"):
        path = REPO / "examples" / name
        if path.exists():
            lab = load_lab(path)
            assert lab.load_balancers and lab.vpc_endpoints
            assert any(r.target_kind == "vpce" for t in lab.route_tables.values() for r in t.routes)


def test_privatelink_example_when_present():
    path = REPO / "examples" / "privatelink-cross-zone.yaml"
    if path.exists():
        lab = load_lab(path)
        assert any(lb.type == "network" for lb in lab.load_balancers.values())
        assert any(e.type == "Interface" and e.dns_entries for e in lab.vpc_endpoints.values())


def test_every_default_gwlb_attribute_is_accepted_by_the_gwlb_engine():
    """The plan merges load balancer, target group and listener attributes for the node; the
    engine refuses keys it does not know, so the model must not invent any."""
    from vpclab.engines.gwlb.config import GwlbConfig
    from vpclab.model.elbv2.attributes import LISTENER_ATTRIBUTES, LOAD_BALANCER_ATTRIBUTES, TARGET_GROUP_ATTRIBUTES, default_attributes

    merged = {
        **default_attributes(LOAD_BALANCER_ATTRIBUTES["gateway"]),
        **default_attributes(TARGET_GROUP_ATTRIBUTES["gateway"]),
        **default_attributes(LISTENER_ATTRIBUTES["gateway"]),
    }
    config = GwlbConfig.from_attributes(merged)
    assert (config.tcp_idle_timeout, config.deregistration_delay, config.cross_zone) == (350, 300, False)
