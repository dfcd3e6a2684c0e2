"""What the ALB lab tests of issue 16 (helper X's) share: a lab brought up once for a module."""
from __future__ import annotations

import contextlib
from typing import Iterator

from conftest import RunningLab, lab_environment, lab_file_needs, skip_unless_doctor_finds


@contextlib.contextmanager
def module_lab(tmp_path_factory, text: str, name: str, timeout: float = 240) -> Iterator[RunningLab]:
    """The lab of `text`, up under a home of its own (`lab.home`), torn down even on failure."""
    path = tmp_path_factory.mktemp("lab") / f"{name}.yaml"
    path.write_text(text)
    skip_unless_doctor_finds(lab_file_needs(path, name))
    home = tmp_path_factory.mktemp("home")
    lab = RunningLab(name, lab_environment(home))
    lab.home = home
    try:
        lab.vpclab("up", str(path), "--name", name, timeout=timeout)
        yield lab
    finally:
        lab.vpclab("down", "--lab", name, check=False, timeout=120)
