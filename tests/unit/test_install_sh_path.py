"""install.sh ends by saying where `vpclab` went and, when PATH does not reach it, how to fix that."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

INSTALL_SH = Path(__file__).resolve().parents[2] / "install.sh"
ENDING = "# Where the `vpclab` command went"


def run_ending(path: str) -> str:
    script = ENDING + INSTALL_SH.read_text().split(ENDING, 1)[1]
    return subprocess.run(["bash", "-c", script], env=dict(os.environ, PY=sys.executable, PATH=path),
                          capture_output=True, text=True, check=True).stdout


def test_without_vpclab_on_path_it_says_how_to_put_it_there():
    out = run_ending("/usr/bin:/bin")
    command = out.split("the vpclab command is ", 1)[1].split(";", 1)[0]
    assert Path(command).name == "vpclab" and Path(command).is_file()  # where pip put it
    assert f'export PATH="{Path(command).parent}:$PATH"' in out


def test_with_vpclab_on_path_it_names_the_one_that_runs(tmp_path):
    (tmp_path / "vpclab").write_text("#!/bin/sh\n")
    (tmp_path / "vpclab").chmod(0o755)
    out = run_ending(f"{tmp_path}:/usr/bin:/bin")
    assert f"on your PATH, vpclab is {tmp_path / 'vpclab'}" in out and "export PATH" not in out
