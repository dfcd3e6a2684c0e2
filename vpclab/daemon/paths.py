"""Where labs keep their state on the host, and who may touch it.

A lab's directory is `<state root>/labs/<name>`, resolved on the host before any
sandbox exists (inside one the process is uid 0 and would pick root's root), and
never anywhere else: names are checked by the one lab name rule, and a directory
that resolves outside the root (a symlink) is refused.
"""
from __future__ import annotations

import os
import pwd
from pathlib import Path

from vpclab.model.labname import lab_name_problem

API_SOCKET = "api.sock"
NAMESPACES_FILE = "namespaces.json"
DAEMON_COMM = "vpclab-daemon"  # the name the daemon gives itself (sandbox._become_daemon)
PRIVATE_DIR = 0o700  # lab state shows security groups, targets and logs: the owner's alone
PRIVATE_FILE = 0o600


class LabError(Exception):
    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def home() -> Path:
    """VPCLAB_HOME, else /var/lib/vpclab for root, else the user's state directory."""
    if os.environ.get("VPCLAB_HOME"):
        return Path(os.environ["VPCLAB_HOME"])
    if os.geteuid() == 0:
        return Path("/var/lib/vpclab")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "vpclab"


def labs_root() -> Path:
    return home() / "labs"


def lab_dir(name: str) -> Path:
    """The lab's directory; LabError for a name that is not a lab name, a lab of another
    user, or a directory that is not under the state root (a symlink planted there)."""
    problem = lab_name_problem(name) or _owner_problem(name)
    if problem is not None:
        raise LabError(problem)
    root = labs_root()
    path = root / name
    if path.is_symlink() or (path.exists() and path.resolve().parent != root.resolve()):
        raise LabError(f"lab {name}: {path} is not a directory of the state root {root}; refusing to use it")
    return path


def lock_file(name: str) -> Path:
    """Where `up`, `down` and restore lock a lab: beside its directory, which `down` removes."""
    return home() / "locks" / f"{name}.lock"


def failed_log(name: str) -> Path:
    """Where a failed bring-up's daemon.log is kept once its lab is rolled back."""
    return home() / "failed" / f"{name}.daemon.log"


def make_private_dir(path: Path) -> Path:
    """`path` and the parents vpclab creates, each 0700 (an existing parent is left alone)."""
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            p.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue
        os.chmod(p, PRIVATE_DIR)  # mkdir's mode passes through the umask
    return path


def _owner_problem(name: str) -> str | None:
    """Why this user may not act on lab `name`: its state belongs to another user."""
    me = os.geteuid()
    for path in (labs_root(), labs_root() / name):
        try:
            owner = os.lstat(path).st_uid
        except FileNotFoundError:
            return None
        except PermissionError:
            return f"lab {name} belongs to another user ({path.parent} is not yours to read)"
        if owner != me:
            return f"lab {name} belongs to another user ({_user(owner)}); run vpclab as that user"
    return None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def lab_names() -> list[str]:
    root = labs_root()
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return []
    except PermissionError:
        raise LabError(f"the labs under {root} belong to another user") from None
    return sorted(p.name for p in entries
                  if lab_name_problem(p.name) is None and not p.is_symlink() and (p / "state.sqlite").exists())
