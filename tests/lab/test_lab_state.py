"""A lab's state on the host is its owner's alone, one up or down acts on a lab at a time, and
`up` after a crash brings back the lab that crashed (its own file, what was in flight) or refuses."""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import LABS, ROOT, RunningLab, lab_daemons, lab_environment, target_states, wait_for
from test_sandbox import SYSTEM_PYTHON

import pytest

pytestmark = pytest.mark.lab
BASIC = ROOT / "examples" / "basic-vpc.yaml"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def crash(home: Path, name: str) -> None:
    """SIGKILL the lab's daemon, as a crash would: its state stays behind."""
    os.kill(json.loads((home / "labs" / name / "pids.json").read_text())["daemon"], signal.SIGKILL)
    wait_for(lambda: not lab_daemons(home / "labs" / name), 30, "the daemon to die", interval=0.1)


def test_a_running_labs_state_is_its_owners_alone(up, vpclab_home):
    up(BASIC, "private")
    lab = vpclab_home / "labs" / "private"
    for directory in (vpclab_home / "labs", vpclab_home / "locks", lab):
        assert mode(directory) == 0o700, directory
    for name in ("daemon.log", "state.sqlite", "pids.json", "namespaces.json", "api.sock"):
        assert mode(lab / name) & 0o077 == 0, name
    assert mode(vpclab_home / "locks" / "private.lock") == 0o600
    for directory, dirs, files in os.walk(lab):
        for entry in dirs + [f for f in files if Path(directory).parent != lab / "etc"]:
            assert mode(Path(directory) / entry) & 0o077 == 0, Path(directory) / entry
    assert mode(lab / "etc" / "web-1" / "resolv.conf") == 0o644  # an instance's, as on EC2


def test_two_ups_of_one_lab_at_once_bring_up_one(lab_env, vpclab_home):
    ups = [subprocess.Popen([sys.executable, "-m", "vpclab", "up", str(BASIC), "--name", "twin"], env=lab_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        results = [(p.wait(timeout=120), p.stderr.read()) for p in ups]
    finally:
        down = subprocess.run([sys.executable, "-m", "vpclab", "down", "--lab", "twin"], env=lab_env,
                              capture_output=True, text=True, timeout=60)
    assert sorted(code for code, _ in results) == [0, 1], results
    refused = next(err for code, err in results if code == 1)
    assert "lab twin is busy" in refused or "lab twin is already up" in refused, refused
    assert down.returncode == 0, down.stderr
    wait_for(lambda: not lab_daemons(vpclab_home), 30, "no lab daemon left")


@pytest.mark.skipif(os.geteuid() != 0, reason="a second user's view needs root to switch users")
def test_another_users_lab_is_refused_at_once_and_left_alone():
    home = Path(tempfile.mkdtemp(prefix="vpclab-root-"))
    os.chmod(home, 0o755)  # other users may look, as in /var/lib
    lab = RunningLab("roots", lab_environment(home))
    try:
        lab.vpclab("up", str(BASIC), "--name", "roots", timeout=120)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent", "VPCLAB_HOME": str(home),
               "PYTHONPATH": str(ROOT)}
        for command in (["down", "--lab", "roots"], ["status", "--lab", "roots"]):
            started = time.monotonic()
            result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                                     SYSTEM_PYTHON, "-m", "vpclab", *command], env=env, capture_output=True,
                                    text=True, timeout=60, cwd="/")
            assert time.monotonic() - started < 5  # said at once, not after a 10 s wait
            assert result.returncode == 1
            assert result.stderr == "error: lab roots belongs to another user (root); run vpclab as that user\n"
        assert lab.status()["lab"]["name"] == "roots"  # untouched
    finally:
        lab.vpclab("down", "--lab", "roots", check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_up_of_another_file_after_a_crash_refuses_and_names_down(up, vpclab_home):
    lab = up(BASIC, "crashed")
    crash(vpclab_home, "crashed")
    other = lab.vpclab("up", str(LABS / "nlb.yaml"), "--name", "crashed", check=False)
    assert other.returncode == 1
    assert "`vpclab down --lab crashed`" in other.stderr and str(BASIC) in other.stderr
    assert not lab_daemons(vpclab_home)  # nothing was brought up
    again = lab.vpclab("up", str(BASIC), "--name", "crashed", timeout=120)  # its own file: restored
    assert "bringing it back from its state store" in again.stderr
    assert lab.curl("client", "http://100.64.1.11/").startswith("web-1 ")


def test_a_target_draining_at_the_crash_finishes_its_drain_after_restore(up, vpclab_home, tmp_path):
    lab = up((LABS / "nlb.yaml").read_text().replace(
        "    Targets: [web-a, web-b]\n  web-ips:",
        "    TargetGroupAttributes: {deregistration_delay.timeout_seconds: 30}\n"
        "    Targets: [web-a, web-b]\n  web-ips:"), "drain")
    wait_for(lambda: target_states(lab, "web-instances") == {"web-a": "healthy", "web-b": "healthy"}, 60, "healthy")
    lab.vpclab("deregister", "--lab", lab.name, "web-instances", "web-a")
    assert target_states(lab, "web-instances")["web-a"] == "draining"
    crash(vpclab_home, "drain")
    lab.vpclab("up", str(tmp_path / "drain.yaml"), "--name", "drain", timeout=120)
    assert target_states(lab, "web-instances").get("web-a") == "draining"  # still, not vanished
    wait_for(lambda: target_states(lab, "web-instances").get("web-a") != "draining", 90, "the drain to end")
