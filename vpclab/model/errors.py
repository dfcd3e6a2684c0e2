"""Errors of the model layer: a refused lab file, and a refused live change."""
from __future__ import annotations


class LabFileError(Exception):
    """A lab file that cannot be loaded, pinned to the key that is wrong.

    `key_path` is dotted with list indexes (`route_tables.public.Routes[0].GatewayId`);
    it is empty when the whole file is at fault (unreadable, bad YAML).
    """

    def __init__(self, source: str, key_path: str, reason: str):
        self.source = source
        self.key_path = key_path
        self.reason = " ".join(reason.split())  # always one line
        super().__init__(": ".join(part for part in (source, key_path, self.reason) if part))


class ChangeError(Exception):
    """A refused live change, with AWS's error code (`InvalidPermission.Duplicate`)."""

    def __init__(self, code: str, message: str):
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")
