"""A failed bring-up rolls back completely; labs run rootless too."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.lab
BASIC = ROOT / "examples" / "basic-vpc.yaml"


def _lab_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line]


def test_failed_up_rolls_back_and_says_why(lab_env, vpclab_home):
    env = dict(lab_env, VPCLAB_INJECT_FAULT="links")
    result = subprocess.run([sys.executable, "-m", "vpclab", "up", str(BASIC), "--name", "broken"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "injected fault after links" in result.stderr
    assert "rolled back" in result.stderr
    assert not (vpclab_home / "labs" / "broken").exists()
    assert _lab_processes(str(vpclab_home)) == []


def test_bad_lab_file_is_refused_before_anything_is_built(lab_env, vpclab_home, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASIC.read_text().replace("CidrBlock: 10.0.2.0/24", "CidrBlock: 10.1.2.0/24"))
    result = subprocess.run([sys.executable, "-m", "vpclab", "up", str(bad)], env=lab_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {bad}: subnets.private-a.CidrBlock: ")
    assert not (vpclab_home / "labs").exists()


SYSTEM_PYTHON = "/usr/bin/python3"


def _system_python_has_deps() -> bool:
    return os.path.exists(SYSTEM_PYTHON) and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import yaml, dnslib"], capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or not _system_python_has_deps(),
                    reason="needs root to switch to an unprivileged user, and Debian's python3-yaml/dnslib")
def test_lab_runs_as_an_unprivileged_user():
    home = Path(tempfile.mkdtemp(prefix="vpclab-rootless-"))
    os.chmod(home, 0o777)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "VPCLAB_HOME": str(home / "state"),
           "PYTHONPATH": str(ROOT)}
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                 SYSTEM_PYTHON, "-m", "vpclab"]

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(as_nobody + list(args), env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=str(home))

    try:
        up = run("up", str(BASIC), "--name", "rootless", timeout=120)
        assert up.returncode == 0, up.stderr
        page = run("exec", "client", "--", "curl", "-s", "--max-time", "3", "http://203.0.113.11/")
        assert page.stdout.startswith("web-1 "), page.stderr
        nat = run("exec", "app-1", "--", "curl", "-s", "--max-time", "3", "http://server.internet.test/")
        assert "client: 203.0.113.10:" in nat.stdout, nat.stderr
        daemon_owner = subprocess.run(["ps", "-o", "uid=", "-C", "vpclab-daemon"], capture_output=True,
                                      text=True).stdout.split()
        assert "65534" in daemon_owner
    finally:
        run("down", "--lab", "rootless")
        shutil.rmtree(home, ignore_errors=True)
