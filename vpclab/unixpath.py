"""Unix socket paths of any length.

AF_UNIX paths stop at 108 bytes, and a lab's state directory can be deeper than
that. A longer path is reached through an open descriptor of its directory.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

LIMIT = 100


@contextlib.contextmanager
def usable(path: str | Path) -> Iterator[str]:
    """A path to bind or connect to that names the same socket as `path`."""
    text = str(path)
    if len(text.encode()) < LIMIT:
        yield text
        return
    directory = os.open(os.path.dirname(text) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{directory}/{os.path.basename(text)}"
    finally:
        os.close(directory)
