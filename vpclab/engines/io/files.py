"""Files an engine writes for another process to read."""
from __future__ import annotations

import os


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Replace `path` with `text` so that a reader sees the old file or the new one, never half."""
    path = os.fspath(path)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, path)
