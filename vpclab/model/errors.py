"""Errors of the model layer: a refused lab file, and a refused live change."""
from __future__ import annotations

import unicodedata

UNPRINTABLE = ("Cc", "Cf", "Cs", "Zl", "Zp")  # control, format, lone surrogates (undecodable bytes), line breaks


def printable(text: str, keep: str = "") -> str:
    """`text` with every control or format character (NUL, ESC, a bidi override...) escaped
    as Python writes it (`\\x00`, `\\x1b`, `\\u202e`): user-given names and paths reach error
    messages, and a terminal must not act on them. Characters in `keep` stay as they are."""
    if text.isprintable():
        return text
    return "".join(
        c if c in keep or unicodedata.category(c) not in UNPRINTABLE else repr(c)[1:-1] for c in text
    )


class LabFileError(Exception):
    """A lab file that cannot be loaded, pinned to the key that is wrong.

    `key_path` is dotted with list indexes (`route_tables.public.Routes[0].GatewayId`);
    it is empty when the whole file is at fault (unreadable, bad YAML). The message,
    `reason` included, is one line with control characters escaped.
    """

    def __init__(self, source: str, key_path: str, reason: str):
        self.source = source
        self.key_path = key_path
        self.reason = printable(" ".join(reason.split()))  # always one line
        parts = (printable(source), printable(key_path), self.reason)
        super().__init__(": ".join(part for part in parts if part))


class ChangeError(Exception):
    """A refused live change, with AWS's error code (`InvalidPermission.Duplicate`)."""

    def __init__(self, code: str, message: str):
        self.code = code
        self.message = printable(message)
        super().__init__(f"{code}: {self.message}")
