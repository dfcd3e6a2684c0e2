"""Lab tests: each brings up a real lab in its sandbox and tears it down, even on failure."""
from __future__ import annotations

import functools
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LABS = Path(__file__).parent / "labs"
sys.path.insert(0, str(ROOT))

from vpclab.doctor import features  # noqa: E402

# A lab test skips only when `vpclab doctor` reports missing a feature it needs, and says
# which; any other failure to bring a lab up fails it. Every lab test needs a sandbox
# (EVERY_LAB); `up` adds what its lab file uses; `@pytest.mark.requires(...)` the rest.


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(*features): skip unless `vpclab doctor` finds these features")


@functools.cache
def doctor_report() -> dict[str, dict]:
    """`vpclab doctor --json`, run once per session: feature name -> its row."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "vpclab", "doctor", "--json"], env=env, capture_output=True,
                            text=True, timeout=300)
    try:
        return doctor_rows(result.stdout)
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"vpclab doctor --json gave no report ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}") from None


def doctor_rows(stdout: str) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(stdout)["features"]}


def skip_unless_doctor_finds(needed, report: dict[str, dict] | None = None) -> None:
    """Skip, naming each feature, if doctor (this session's, or `report`) reports one of
    `needed` missing. Informational features never skip: nothing may depend on them, so a
    lab that does must fail."""
    report = report or doctor_report()
    lacking = [name for name in sorted(needed)
               if features.BY_NAME[name].level != features.INFO and not report[name]["ok"]]
    if lacking:
        pytest.skip("vpclab doctor reports missing: " + "; ".join(
            f"{name} ({report[name]['detail'] or report[name]['state']})" for name in lacking))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    needed = set(features.EVERY_LAB)
    for mark in item.iter_markers("requires"):
        needed |= set(mark.args)
    skip_unless_doctor_finds(needed)


class RunningLab:
    def __init__(self, name: str, env: dict) -> None:
        self.name = name
        self.env = env

    def vpclab(self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None):
        result = subprocess.run([sys.executable, "-m", "vpclab", *args], env=self.env, text=True,
                                capture_output=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"vpclab {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def sh(self, node: str, command: str, check: bool = True, timeout: float = 30):
        """Run a shell command inside a node of the lab."""
        return self.vpclab("exec", "--lab", self.name, node, "--", "sh", "-c", command,
                           check=check, timeout=timeout)

    def curl(self, node: str, url: str, timeout: float = 3) -> str:
        """The body, or '' when the request fails (blocked, refused, timed out)."""
        r = self.sh(node, f"curl -s --max-time {timeout} {url}", check=False, timeout=timeout + 15)
        return r.stdout if r.returncode == 0 else ""

    def status(self) -> dict:
        return json.loads(self.vpclab("status", "--lab", self.name, "--json").stdout)

    def instance(self, name: str) -> dict:
        return next(i for i in self.status()["instances"] if i["name"] == name)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll until `predicate()` is truthy and return its value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def lab_daemons(under: Path) -> list[int]:
    """The PIDs of every lab daemon whose log is under `under` (alive, or a zombie not yet reaped)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "vpclab-daemon" \
                    and os.readlink(entry / "fd" / "1").startswith(str(under)):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def start_capture(lab: RunningLab, node: str, *args: str, timeout: float = 30) -> subprocess.Popen:
    """`vpclab capture NODE ARGS...`, returned once dumpcap has its capture open (it says so)."""
    capture = subprocess.Popen([sys.executable, "-m", "vpclab", "capture", "--lab", lab.name, node, *args],
                               env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as at a terminal
    ready, _, _ = select.select([capture.stderr], [], [], timeout)
    line = capture.stderr.readline() if ready else ""
    if not line.startswith("capturing on "):
        capture.kill()
        raise AssertionError(f"capture did not start within {timeout}s: {line}{capture.stderr.read()}")
    return capture


def target_states(lab: RunningLab, group: str) -> dict[str, str]:
    """Each target's health state in a target group, by instance name (or ID)."""
    tg = next(g for g in lab.status()["target_groups"] if g["name"] == group)
    return {t["name"] or t["id"]: t["state"] for t in tg["targets"]}


def lab_file_needs(path: Path, name: str) -> set[str]:
    """What doctor must find for this lab file; nothing for a file that does not load (its
    test means `up` to refuse it)."""
    from vpclab.doctor.needs import lab_needs
    from vpclab.model import load_lab
    from vpclab.model.errors import LabFileError
    try:
        return lab_needs(load_lab(path, name))
    except LabFileError:
        return set()


@pytest.fixture
def vpclab_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return home


def lab_environment(home: Path) -> dict:
    """The environment that runs this checkout's vpclab with its labs under `home`."""
    env = dict(os.environ, VPCLAB_HOME=str(home))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture
def lab_env(vpclab_home):
    return lab_environment(vpclab_home)


@pytest.fixture
def up(lab_env, tmp_path):
    """up(file_or_text, name) -> RunningLab; every lab started is torn down at the end."""
    started: list[RunningLab] = []

    def bring_up(source: str | Path, name: str = "t", extra_env: dict | None = None) -> RunningLab:
        path = Path(source) if not isinstance(source, str) or "\n" not in source else None
        if path is None:
            path = tmp_path / f"{name}.yaml"
            path.write_text(source)
        env = dict(lab_env, **(extra_env or {}))
        skip_unless_doctor_finds(lab_file_needs(path, name))
        lab = RunningLab(name, env)
        started.append(lab)
        lab.vpclab("up", str(path), "--name", name, timeout=120)
        return lab

    yield bring_up
    for lab in started:
        lab.vpclab("down", "--lab", lab.name, check=False, timeout=60)
