"""The one rule for a lab's name: the file's `lab.name`, `up --name` and every `--lab`.

A lab's name becomes a directory under the state root, so it is never a path.
"""
from __future__ import annotations

import re

LAB_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")


def lab_name_problem(candidate: object, origin: str = "given") -> str | None:
    """Why `candidate` cannot name a lab, or None when it can."""
    if isinstance(candidate, str) and LAB_NAME.fullmatch(candidate):
        return None
    return (f"lab name {candidate!r} ({origin}) must be 1-31 lowercase letters, digits or '-', "
            "starting with a letter or digit")
