"""What the CLI says: counts that agree with their nouns, and live changes that say what they did."""
from __future__ import annotations

from pathlib import Path

from vpclab.cli.main import change_outcome, main
from vpclab.model import load_lab_text
from vpclab.model.changes import accept_vpc_endpoint_connections
from vpclab.wording import counted

REPO = Path(__file__).resolve().parents[2]


def test_a_count_of_one_takes_the_singular():
    assert [counted(n, "VPC") for n in (0, 1, 2)] == ["0 VPCs", "1 VPC", "2 VPCs"]
    assert counted(1, "address", "addresses") == "1 address" and counted(3, "address", "addresses") == "3 addresses"


def test_validate_says_1_vpc_not_1_vpcs(capsys):
    assert main(["validate", str(REPO / "examples" / "basic-vpc.yaml")]) == 0
    assert "ok (1 VPC, 2 subnets, 2 instances)" in capsys.readouterr().out


def test_a_change_that_changes_nothing_reports_a_no_op_not_applied():
    assert change_outcome("accept-vpc-endpoint-connections", {"seq": 4}) == \
        "accept-vpc-endpoint-connections: applied (change 4)"
    said = change_outcome("accept-vpc-endpoint-connections", {"seq": None, "no_op": True})
    assert "no-op" in said and "applied" not in said


def test_accepting_an_available_endpoint_leaves_the_lab_as_it_was():
    # The daemon reports a no-op when a change returns an equal lab (AWS accepts it, and nothing moves).
    lab = load_lab_text((REPO / "examples" / "gwlb-two-vpc.yaml").read_text(), "lab.yaml")
    accepted = accept_vpc_endpoint_connections(lab, "gwlbe-a")
    assert accepted != lab
    assert accept_vpc_endpoint_connections(accepted, "gwlbe-a") == accepted
