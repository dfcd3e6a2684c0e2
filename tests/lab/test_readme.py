"""The README, as a new user meets it: every command of its ```sh blocks, in order, against real labs.

The rules (stated in the README's last section too):
- `vpclab` is this checkout's (`python3 -m vpclab`), with its labs under a temporary VPCLAB_HOME,
  run from a temporary directory that holds the repo's `examples/`;
- a line that runs `./install.sh` or `pytest` is about installing and testing the checkout, and is
  not run (this test runs after install.sh, under pytest);
- a `vpclab capture` without `-c` or `--seconds` runs until Ctrl-C, so it is given `--seconds 3`;
- a line commented `# as root` runs only as root; one commented `# not run by the README test: WHY`
  never runs;
- every other command must exit 0, and what the README says it shows (EXPECTED) must hold.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable, Union

import pytest

from conftest import ROOT

pytestmark = pytest.mark.lab

README = ROOT / "README.md"
SKIP_MARK = "# not run by the README test:"
ROOT_MARK = "# as root"


def _no_initial_target_without_its_reason(out: str, _cwd: Path) -> None:
    # `vpclab targets` gives a target in `initial` its reason (Elb.RegistrationInProgress, then
    # Elb.InitialHealthChecking); so must up's table
    targets = [line for line in out.splitlines() if line.startswith("appliances ")]
    assert len(targets) == 2, out
    assert all(re.search(r"\b(initial\s+Elb\.\w+|healthy\s+-)$", line) for line in targets), out


def _wrote_a_pcap(_out: str, cwd: Path) -> None:
    assert (cwd / "web.pcap").stat().st_size >= 24  # at least the pcap file header


def _no_lab_left(_out: str, cwd: Path) -> None:
    labs = cwd / "home" / "labs"
    assert not labs.exists() or not any(labs.iterdir()), list(labs.iterdir())


Check = Union[str, Callable[[str, Path], None]]

# What the README says a command shows, for each time the command appears, in order.
EXPECTED: dict[str, list[list[Check]]] = {
    "vpclab validate examples/basic-vpc.yaml": [["ok (1 VPC, 2 subnets, 2 instances)"]],
    "vpclab up examples/basic-vpc.yaml": [["web-1", "nat-gateway"]],
    "vpclab exec client -- curl -s http://100.64.1.11/": [["web-1 "], ["web-1 "]],  # basic, then GWLB
    "vpclab exec app-1 -- curl -s http://server.internet.test/": [["client: 100.64.1.10:"]],  # NAT's EIP
    "vpclab exec web-1 -- getent hosts ip-10-0-2-4.ec2.internal": [["10.0.2.4"]],
    "vpclab capture web-1 'tcp port 80' -w web.pcap": [[_wrote_a_pcap]],
    "vpclab revoke-security-group-ingress web-sg --protocol tcp --port 80 --cidr 0.0.0.0/0": [["applied"]],
    "vpclab up examples/gwlb-distributed.yaml": [[_no_initial_target_without_its_reason]],
    "vpclab targets appliances": [["REASON"]],
    "vpclab endpoint accept gwlbe-a": [["applied (change"], ["no-op"]],
    "vpclab exec client -- curl -s http://100.64.1.10/": [["web-1 "]],
    "vpclab exec consumer -- curl -s http://provider-nlb.example.local/": [
        ["Subnet 1"], ["Hello from Provider VPC"]],
    "vpclab exec app-1 -- getent hosts web.example.local": [["10.0.1.10"]],
    "vpclab exec app1-a -- curl -s http://server.internet.test/": [["client: 100.64.1."]],  # a NAT's EIP
    "vpclab routes inspected": [["10.2.0.0/16", "propagated"]],
    "vpclab modify-transit-gateway-vpc-attachment security-attach --options ApplianceModeSupport=disable": [
        ["applied (change"]],
    "vpclab down": [["down", _no_lab_left]] * 6,
}


def readme_commands(text: str) -> list[str]:
    """Every line of every ```sh block, in order."""
    blocks = re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def command_of(line: str) -> str:
    """The command without its comment."""
    return line.split(" #", 1)[0].strip()


def is_install(line: str) -> bool:
    words = shlex.split(line, comments=True)
    return "./install.sh" in words or "pytest" in words


def bounded(command: str) -> str:
    words = shlex.split(command)
    if words[:2] == ["vpclab", "capture"] and not {"-c", "--count", "--seconds", "-d", "--duration"} & set(words):
        return command + " --seconds 3"
    return command


def test_readme_commands_are_read_by_the_rules():
    lines = readme_commands(README.read_text())
    assert [line for line in lines if is_install(line)] == ["./install.sh && vpclab demo", "python3 -m pytest"]
    assert bounded("vpclab capture web-1 'tcp port 80'") == "vpclab capture web-1 'tcp port 80' --seconds 3"
    assert bounded("vpclab capture web-1 'tcp port 80' -c 5") == "vpclab capture web-1 'tcp port 80' -c 5"
    # every stated outcome belongs to a command the README still has, as often as it has it
    commands = [command_of(line) for line in lines]
    assert {c: len(v) for c, v in EXPECTED.items()} == {c: commands.count(c) for c in EXPECTED}


def test_every_readme_command_works_as_the_readme_says(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vpclab").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m vpclab "$@"\n')
    (bin_dir / "vpclab").chmod(0o755)
    env = dict(os.environ, VPCLAB_HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    expected = {command: list(checks) for command, checks in EXPECTED.items()}
    try:
        for line in readme_commands(README.read_text()):
            if is_install(line) or SKIP_MARK in line or (ROOT_MARK in line and os.geteuid() != 0):
                continue
            command = command_of(line)
            result = subprocess.run(["sh", "-c", bounded(command)], cwd=tmp_path, env=env, text=True,
                                    capture_output=True, timeout=300)
            out = result.stdout + result.stderr
            assert result.returncode == 0, f"README: `{line}` exited {result.returncode}:\n{out}"
            for check in expected[command].pop(0) if command in expected else []:
                if callable(check):
                    check(out, tmp_path)
                else:
                    assert check in out, f"README: `{line}` does not show {check!r}:\n{out}"
    finally:
        labs = home / "labs"
        for lab in sorted(labs.iterdir()) if labs.is_dir() else []:
            subprocess.run([sys.executable, "-m", "vpclab", "down", "--lab", lab.name], env=env,
                           capture_output=True, timeout=120)
