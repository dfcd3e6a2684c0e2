"""A lab's state on the host: names, never paths; the owner's alone; only its own daemon is
signalled; a restore finishes what was in flight. Needs no privileges."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from vpclab.daemon import paths
from vpclab.daemon.changes import Draining, replay
from vpclab.daemon.client import Lab, LabError
from vpclab.model import LabFileError, load_lab_text

ROOT = Path(__file__).resolve().parents[2]
NLB = ROOT / "tests" / "lab" / "labs" / "nlb.yaml"


@pytest.fixture
def state_root(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("VPCLAB_HOME", str(home))
    return home


def vpclab(state_root: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ, VPCLAB_HOME=str(state_root),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "vpclab", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_lab_option_is_checked_by_the_same_rule_as_the_lab_name(state_root):
    with pytest.raises(LabFileError) as by_name:
        load_lab_text("vpcs:\n  main: {CidrBlock: 10.0.0.0/16}\n", "lab.yaml", "../x")
    with pytest.raises(LabError) as by_lab:
        Lab("../x")
    assert str(by_lab.value) == by_name.value.reason
    assert "must be 1-31 lowercase letters" in str(by_lab.value)


def test_down_with_a_path_for_a_lab_refuses_and_deletes_nothing(state_root, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "state.sqlite").write_text("")
    (state_root / "labs").mkdir(parents=True)
    result = vpclab(state_root, "down", "--lab", "../../victim")
    assert result.returncode == 1
    assert result.stderr == ("error: lab name '../../victim' (given) must be 1-31 lowercase letters, digits "
                             "or '-', starting with a letter or digit\n")
    assert (victim / "state.sqlite").exists()


def test_a_lab_directory_symlinked_out_of_the_state_root_is_refused(state_root, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "state.sqlite").write_text("")
    (state_root / "labs").mkdir(parents=True)
    (state_root / "labs" / "evil").symlink_to(victim)
    result = vpclab(state_root, "down", "--lab", "evil")
    assert result.returncode == 1 and "is not a directory of the state root" in result.stderr
    assert (victim / "state.sqlite").exists()
    assert paths.lab_names() == []  # nor listed


def test_down_does_not_signal_a_process_a_forged_pids_file_names(state_root):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        lab = state_root / "labs" / "forged"
        lab.mkdir(parents=True)
        (lab / "state.sqlite").write_text("")
        started = Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        (lab / "pids.json").write_text(json.dumps({"daemon": sleeper.pid, "started": int(started)}))
        result = vpclab(state_root, "down", "--lab", "forged")
        assert result.returncode == 0, result.stderr
        assert sleeper.poll() is None  # alive: it is not the lab's daemon
        assert not lab.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_state_directories_vpclab_creates_are_the_owners_alone(state_root):
    state_root.parent.chmod(0o755)
    lab = state_root / "labs" / "a"
    paths.make_private_dir(lab)
    for directory in (state_root, state_root / "labs", lab):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
    assert stat.S_IMODE(os.stat(state_root.parent).st_mode) == 0o755  # not ours to change


def test_the_state_store_and_pids_file_are_the_owners_alone(state_root):
    Lab("a").create("a", "a.yaml", "vpcs: {}\n")
    assert stat.S_IMODE(os.stat(state_root / "labs" / "a" / "state.sqlite").st_mode) == 0o600


def test_lab_directory_is_resolved_when_the_lab_is_named_not_later(state_root, monkeypatch, tmp_path):
    lab = Lab("a")
    monkeypatch.setenv("VPCLAB_HOME", str(tmp_path / "elsewhere"))  # as in the sandbox, where uid is 0
    assert lab.dir == state_root / "labs" / "a"


def test_a_lab_owned_by_another_user_is_refused_at_once(state_root, monkeypatch):
    (state_root / "labs" / "theirs").mkdir(parents=True)
    me = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: me + 1)  # we are now someone else
    with pytest.raises(LabError, match="lab theirs belongs to another user"):
        Lab("theirs")


def test_two_holders_of_one_labs_lock_the_second_is_told_it_is_busy(state_root):
    lab = Lab("a")
    with lab.locked():
        with pytest.raises(LabError, match="lab a is busy"):
            with Lab("a").locked():
                pass
        assert not (state_root / "labs" / "a").exists()  # the lock lives beside the lab, not in it
    with Lab("a").locked():  # released
        pass


# --- restore ------------------------------------------------------------------------


def _nlb_lab():
    return load_lab_text(NLB.read_text(), str(NLB), "t")


def test_a_target_deregistered_before_the_crash_drains_until_its_delay_ends():
    base = _nlb_lab()
    delay = float(base.target_groups["web-instances"].attributes.get("deregistration_delay.timeout_seconds", 300))
    web_a = next(t for t in base.target_groups["web-instances"].targets if t.instance == "web-a")
    lab, draining = replay(base, [(1, 1000.0, "deregister-targets", {"target_group": "web-instances",
                                                                      "targets": ["web-a"]})])
    assert web_a.id not in {t.id for t in lab.target_groups["web-instances"].targets}
    assert draining == [Draining("web-instances", web_a.id, str(web_a.ip), web_a.port, 1000.0 + delay)]


def test_a_target_registered_again_before_the_crash_is_not_draining():
    _lab, draining = replay(_nlb_lab(), [
        (1, 1000.0, "deregister-targets", {"target_group": "web-instances", "targets": ["web-a"]}),
        (2, 1010.0, "register-targets", {"target_group": "web-instances", "targets": ["web-a"]}),
    ])
    assert draining == []


def test_up_restores_only_the_labs_own_file(state_root):
    lab = Lab("a")
    lab.create("a", "/labs/a.yaml", "vpcs:\n  main: {CidrBlock: 10.0.0.0/16}\n")
    assert list(lab.saved_lab("vpcs:\n  main: {CidrBlock: 10.0.0.0/16}\n").vpcs) == ["main"]
    with pytest.raises(LabError) as refused:
        lab.saved_lab("vpcs:\n  other: {CidrBlock: 10.1.0.0/16}\n")
    assert "`vpclab down --lab a`" in str(refused.value) and "/labs/a.yaml" in str(refused.value)


# --- install.sh -----------------------------------------------------------------------


def test_install_sh_keeps_pips_errors_in_a_private_temporary_file(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'pip: no luck' >&2\nexit 1\n")
    fake.chmod(0o755)
    temp = tmp_path / "tmp"
    temp.mkdir()
    fixed = Path("/tmp/vpclab-pip.err")
    before = fixed.stat().st_mtime_ns if fixed.exists() else None
    env = dict(os.environ, PYTHON=str(fake), TMPDIR=str(temp))
    result = subprocess.run(["bash", str(ROOT / "install.sh")], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "pip: no luck" in result.stderr
    assert (fixed.stat().st_mtime_ns if fixed.exists() else None) == before  # never written
    assert list(temp.iterdir()) == []  # the temporary file went with the script
