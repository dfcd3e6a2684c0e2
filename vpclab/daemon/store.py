"""The lab's state store: the lab file it was built from and every live change, in order."""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS lab (id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT, source TEXT, text TEXT);
CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL, kind TEXT, params TEXT);
CREATE TABLE IF NOT EXISTS marks (key TEXT PRIMARY KEY, value TEXT);
"""


class Store:
    def __init__(self, path: Path) -> None:
        # The owner's alone (SQLite gives its journal the database file's mode).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.executescript(SCHEMA)

    def save_lab(self, name: str, source: str, text: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO lab (id, name, source, text) VALUES (1, ?, ?, ?)",
                        (name, source, text))

    def lab(self) -> tuple[str, str, str]:
        row = self.db.execute("SELECT name, source, text FROM lab WHERE id = 1").fetchone()
        if row is None:
            raise LookupError("the state store holds no lab")
        return row

    def append_change(self, kind: str, params: dict) -> int:
        cur = self.db.execute("INSERT INTO changes (at, kind, params) VALUES (?, ?, ?)",
                              (time.time(), kind, json.dumps(params, sort_keys=True)))
        return int(cur.lastrowid)

    def changes(self) -> list[tuple[int, float, str, dict]]:
        """Every change as (seq, when (epoch seconds), kind, params), in order."""
        rows = self.db.execute("SELECT seq, at, kind, params FROM changes ORDER BY seq").fetchall()
        return [(seq, at, kind, json.loads(params)) for seq, at, kind, params in rows]

    def set_mark(self, key: str, value: str) -> None:
        """A fact about the lab itself, e.g. who started it (`started_by`)."""
        self.db.execute("INSERT OR REPLACE INTO marks (key, value) VALUES (?, ?)", (key, value))

    def mark(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM marks WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        self.db.close()
