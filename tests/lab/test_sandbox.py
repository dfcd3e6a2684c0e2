"""A failed bring-up rolls back completely; labs run rootless too."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, doctor_rows, lab_daemons, lab_file_needs, skip_unless_doctor_finds

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
    kept = vpclab_home / "failed" / "broken.daemon.log"  # the rollback keeps what the daemon said
    assert f"the last lines of {kept}:" in result.stderr
    assert "FabricError: injected fault after links" in kept.read_text()


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


@pytest.fixture
def as_nobody():
    """Run `python3 -m vpclab ARGS` as a user would: a HOME of their own and no VPCLAB_HOME.
    The user is nobody with Debian's python3 when the tests run as root, else the user running
    them. Skips only where doctor, run as that user, reports a feature missing that the lab
    needs. Labs down after. `.home` is that HOME, `.uid` that user."""
    home = Path(tempfile.mkdtemp(prefix="vpclab-rootless-"))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "PYTHONPATH": str(ROOT)}
    if os.geteuid() == 0:
        assert _system_python_has_deps(), "install.sh installs python3-yaml and python3-dnslib for this test"
        os.chown(home, 65534, 65534)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                   SYSTEM_PYTHON, "-m", "vpclab"]
    else:
        command = [sys.executable, "-m", "vpclab"]
    labs = []

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        if args[:1] == ("up",):
            skip_unless_doctor_finds(lab_file_needs(Path(args[1]), "rootless"), report)
            labs.append(args[args.index("--name") + 1])
        return subprocess.run(command + list(args), env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=str(home))

    doctor = run("doctor", "--json", timeout=300)
    report = doctor_rows(doctor.stdout)
    run.uid = 65534 if os.geteuid() == 0 else os.getuid()
    run.home = home
    yield run
    for name in labs:
        run("down", "--lab", name)
    shutil.rmtree(home, ignore_errors=True)


def test_lab_runs_as_an_unprivileged_user(as_nobody):
    run = as_nobody
    up = run("up", str(BASIC), "--name", "rootless", timeout=120)
    assert up.returncode == 0, up.stderr
    page = run("exec", "client", "--", "curl", "-s", "--max-time", "3", "http://100.64.1.11/")
    assert page.stdout.startswith("web-1 "), page.stderr
    nat = run("exec", "app-1", "--", "curl", "-s", "--max-time", "3", "http://server.internet.test/")
    assert "client: 100.64.1.10:" in nat.stdout, nat.stderr
    # sysfs mounts from inside the instance's netns, which the unprivileged sandbox owns
    assert run("exec", "app-1", "--", "ls", "/sys/class/net").stdout.split() == ["eth0", "lo"]
    daemon_owner = subprocess.run(["ps", "-o", "uid=", "-C", "vpclab-daemon"], capture_output=True,
                                  text=True).stdout.split()
    assert str(run.uid) in daemon_owner


def test_a_gwlb_lab_runs_unprivileged_on_its_python_data_path(as_nobody):
    up = as_nobody("up", str(ROOT / "examples" / "gwlb-distributed.yaml"), "--name", "gwlb-rootless",
                   timeout=120)
    assert up.returncode == 0, up.stderr
    assert "GWLB fast path off (cannot load BPF programs here" in up.stderr  # said, not hidden
    status = as_nobody("status", "--lab", "gwlb-rootless")
    assert all(line.split()[-1] == "off" for line in status.stdout.splitlines() if line.startswith("gwlb "))
    page = ""
    for _ in range(30):  # until the appliances pass their health checks
        page = as_nobody("exec", "--lab", "gwlb-rootless", "client", "--", "curl", "-s", "--max-time", "2",
                         "http://100.64.1.11/").stdout
        if page.startswith("web-1 "):
            break
    assert page.startswith("web-1 ")


def test_a_user_without_vpclab_home_keeps_labs_in_their_own_state_directory(as_nobody):
    up = as_nobody("up", str(BASIC), "--name", "mine", timeout=120)
    assert up.returncode == 0, up.stderr
    state = as_nobody.home / ".local" / "state" / "vpclab" / "labs" / "mine"
    assert os.stat(state / "state.sqlite").st_uid == as_nobody.uid  # not root's /var/lib/vpclab
    page = as_nobody("exec", "--lab", "mine", "client", "--", "curl", "-s", "--max-time", "3",
                     "http://100.64.1.11/")
    assert page.stdout.startswith("web-1 "), page.stderr
    down = as_nobody("down", "--lab", "mine")
    assert down.returncode == 0, down.stderr
    assert not state.exists()
    assert lab_daemons(as_nobody.home) == []
