"""The CLI answers a bad lab file or a failing lab with one clear `error:` line and an exit
status, never a traceback, and never echoes control characters to the terminal."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from vpclab.cli import main as cli
from vpclab.daemon.client import LabError

ROOT = Path(__file__).resolve().parents[2]
LAB = "vpcs:\n  main: {CidrBlock: 10.0.0.0/16}\n"


def test_validate_dev_zero_is_refused_at_once_without_reading_it():
    def one_gib_at_most():  # if the CLI read /dev/zero whole, it would fail here, not fill the machine
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))

    done = subprocess.run([sys.executable, "-m", "vpclab", "validate", "/dev/zero"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, preexec_fn=one_gib_at_most, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "error: /dev/zero: cannot read the lab file: it is a character device, not a regular file\n"


@pytest.mark.parametrize("command", [["validate"], ["plan"], ["up"]])
def test_every_command_that_reads_a_lab_file_refuses_a_directory(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VPCLAB_HOME", str(tmp_path / "state"))
    assert cli.main(command + [str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: cannot read the lab file: it is a directory, not a regular file\n"
    assert not (tmp_path / "state").exists()  # `up` built nothing


def test_validate_a_deeply_nested_file_says_where_in_one_line(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text(LAB + "subnets: " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: subnets[0][0]") and err.count("\n") == 1
    assert err.endswith("YAML at line 3, column 73: lists and mappings nest deeper than the 64 levels a lab file may have\n")


def test_validate_escapes_control_characters_of_the_file_and_its_names(tmp_path, capsys):
    path = tmp_path / "lab\x1b[2J.yaml"
    path.write_text(LAB + 'subnets:\n  "a\\x00\\x1b]0;title\\x07": {VpcId: main, CidrBlock: 10.0.1.0/24}\n')
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path}/lab\\x1b[2J.yaml: subnets.a\\x00\\x1b]0;title\\x07: resource name "
                   "'a\\x00\\x1b]0;title\\x07' must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or "
                   "digit\n")


def test_validate_escapes_the_file_name_in_its_report(tmp_path, capsys):
    path = tmp_path / "ok\x1b[31m.yaml"
    path.write_text("lab: {name: ok}\n" + LAB)
    assert cli.main(["validate", str(path)]) == 0
    assert capsys.readouterr().out == f"{tmp_path}/ok\\x1b[31m.yaml: ok (1 VPC, 0 subnets, 0 instances)\n"


def test_a_lab_error_keeps_its_lines_and_escapes_control_characters(capsys, monkeypatch):
    def failing(name):
        raise LabError("lab a\x1bb: the daemon exited\nlast log line: \x1b[31mboom\x07\ttab")

    monkeypatch.setattr(cli, "_pick_lab", failing)
    assert cli.main(["status", "--lab", "x"]) == 1
    assert capsys.readouterr().err == "error: lab a\\x1bb: the daemon exited\nlast log line: \\x1b[31mboom\\x07\ttab\n"


def test_a_rule_change_with_actions_that_are_not_json_says_so(capsys):
    assert cli.main(["create-rule", "http", "--priority", "5", "--conditions", "[]", "--actions", "forward web"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --actions must be JSON (the lab file's shape)") and err.count("\n") == 1
