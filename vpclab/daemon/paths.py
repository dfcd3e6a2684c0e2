"""Where labs keep their state on the host."""
from __future__ import annotations

import os
from pathlib import Path

API_SOCKET = "api.sock"
NAMESPACES_FILE = "namespaces.json"


def home() -> Path:
    """VPCLAB_HOME, else /var/lib/vpclab for root, else the user's state directory."""
    if os.environ.get("VPCLAB_HOME"):
        return Path(os.environ["VPCLAB_HOME"])
    if os.geteuid() == 0:
        return Path("/var/lib/vpclab")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "vpclab"


def lab_dir(name: str) -> Path:
    return home() / "labs" / name


def lab_names() -> list[str]:
    root = home() / "labs"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "state.sqlite").exists())
