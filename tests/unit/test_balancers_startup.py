"""The daemon's load balancer runtime at `vpclab up`: health checks start over a complete set
of target groups, so a change reported during bring-up never meets a half-registered state."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from vpclab.daemon.balancers import Balancers, NlbNode, _node_config
from vpclab.model import load_lab

LAB = Path(__file__).resolve().parents[1] / "lab" / "labs" / "nlb.yaml"


def test_registering_targets_of_the_first_group_does_not_refresh_over_groups_not_added_yet(tmp_path, caplog):
    lab = load_lab(LAB)
    rulesets: list[str] = []
    refreshed: list[bool] = []
    balancers = Balancers(tmp_path, enter=None, run_in=lambda ns, argv, text: rulesets.append(text))
    for az in ("us-east-1a", "us-east-1b"):  # the node config the plan makes for each AZ
        balancers.nlb_nodes.append(NlbNode("web-nlb", az, f"nlb-{az}", _node_config(lab, "web-nlb", az)))
    balancers.lab = lab
    balancers.on_routing_change = lambda: refreshed.append(balancers.zone_in_service("web-nlb", "us-east-1a"))
    assert len({li.target_group for li in balancers.nlb_nodes[0].config.listeners}) == 5

    async def bring_up() -> None:
        task = balancers.start_health_checks(lab)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.ERROR):
        asyncio.run(bring_up())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    # every registration (2 targets in each of 5 groups) refreshed DNS and the rulesets, over all 5 groups
    assert len(refreshed) == 10 and len(rulesets) >= 1
