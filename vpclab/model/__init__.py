"""The lab model: AWS resources as AWS names them, loaded from a lab file.

Its names are loaded on first use (PEP 562): commands that only talk to a
running lab then start without the loader, YAML and every resource class.
"""
from __future__ import annotations

import importlib

_MODULES = ("errors", "resources", "loader", "changes")  # where public names live, searched in order


def __getattr__(name: str):
    if not name.startswith("_"):
        for module in _MODULES:
            value = getattr(importlib.import_module(f"{__name__}.{module}"), name, None)
            if value is not None:
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
