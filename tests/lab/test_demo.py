"""`vpclab demo`: its own lab, by the name given, and never a lab it did not start."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import RunningLab

pytestmark = pytest.mark.lab


def demo(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vpclab", "demo", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_demo_refuses_to_remove_a_lab_it_did_not_start(up):
    mine = up("vpcs: {v: {CidrBlock: 10.0.0.0/16}}\n", "mine")
    result = demo(mine.env, "--name", "mine")
    assert result.returncode == 1
    assert "`vpclab demo` did not start it" in result.stderr
    assert mine.status()["lab"]["name"] == "mine"  # still up, untouched


def test_demo_runs_under_the_name_given_and_removes_only_its_own_lab(lab_env):
    result = demo(lab_env, "--name", "my-demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "as lab my-demo" in result.stdout and "every step behaved as AWS documents" in result.stdout
    listed = RunningLab("x", lab_env).vpclab("status", check=False)
    assert "my-demo" not in listed.stdout  # torn down
