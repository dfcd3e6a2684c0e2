"""Reading a lab file: what is refused before its meaning is looked at.

A lab file is a regular file of at most 4 MiB of UTF-8 YAML, whose collections nest
at most 64 deep and which, with its aliases (`*name`) expanded, holds at most a
million values. Its mappings have no duplicate keys. Any of these would otherwise
let a small or endless file (`/dev/zero`, 10,000 nested lists, a chain of aliases)
exhaust memory, time or Python's stack before the loader could name what is wrong.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, NoReturn

import yaml

from .errors import LabFileError

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NESTING = 64  # a lab file needs about 8 (hosted_zones.z.RecordSets[0].AliasTarget.DNSName)
MAX_VALUES = 1_000_000  # scalars, lists and mappings, aliases expanded
_FILE_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket"}  # fmt: skip


def read_lab_file(path: str | Path) -> str:
    """The text of the lab file at `path`, refused (LabFileError) unless it is a regular
    file of at most MAX_FILE_BYTES in UTF-8. Never reads more than that, whatever it is."""
    source = str(path)
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise LabFileError(source, "", f"cannot read the lab file: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise LabFileError(source, "", f"cannot read the lab file: it is {kind}, not a regular file")
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)  # it may grow after fstat: read no more than the limit
    except OSError as e:
        raise LabFileError(source, "", f"cannot read the lab file: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise LabFileError(
            source, "", f"cannot read the lab file: it is larger than {MAX_FILE_BYTES // 2**20} MiB, the most a lab "
            "file may be"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LabFileError(source, "", f"cannot read the lab file: {e}") from None


class _TooBig(yaml.MarkedYAMLError):
    def __init__(self, problem: str, mark: Any, key_path: str):
        super().__init__(problem=problem, problem_mark=mark)
        self.key_path = key_path


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one silently,
    and documents that nest deeper than MAX_NESTING or expand beyond MAX_VALUES."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._path: list[Any] = []  # the keys and indexes down to the node being composed
        self._sizes: dict[int, int] = {}  # id(node) -> its values, aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        # index: an int in a sequence, the key's node for a mapping's value, None for a key itself
        key = index.value if isinstance(index, yaml.ScalarNode) else index if isinstance(index, int) else "?"
        self._path.append(key)
        try:
            if len(self._path) > MAX_NESTING and isinstance(event, yaml.CollectionStartEvent):
                self._refuse(f"lists and mappings nest deeper than the {MAX_NESTING} levels a lab file may have", event)
            node = super().compose_node(parent, index)
            if isinstance(event, yaml.AliasEvent):
                if id(node) not in self._sizes:  # still being composed: it contains its own alias
                    self._refuse(f"the alias *{event.anchor} is inside the list or mapping it names", event)
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else (
                    [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else ())
                self._sizes[id(node)] = 1 + sum(self._sizes[id(child)] for child in children)
            if self._sizes[id(node)] > MAX_VALUES:
                self._refuse(f"more than {MAX_VALUES:,} values with its aliases expanded, the most a lab file may hold",
                             event)  # fmt: skip
            return node
        finally:
            self._path.pop()

    def _refuse(self, problem: str, event: yaml.Event) -> NoReturn:
        raise _TooBig(problem, event.start_mark, self._key_path())

    def _key_path(self) -> str:
        path = ""
        for key in self._path[1:]:  # [0] is the document's own (None)
            path += f"[{key}]" if isinstance(key, int) else f".{key}" if path else str(key)
        return path

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.MarkedYAMLError(problem=f"duplicate key '{key}'", problem_mark=key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> Any:
    """The YAML document in `text`; LabFileError (naming `source`, the line and, for a
    document too deep or too big, the key path) if it is not one a lab file may be."""
    loader = _YamlLoader(text)
    try:
        return loader.get_single_data()
    except _TooBig as e:
        where = f"line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}"
        raise LabFileError(source, e.key_path, f"YAML at {where}: {e.problem}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LabFileError(source, "", f"invalid YAML{where}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise LabFileError(source, "", f"invalid YAML: {e}") from None
    finally:
        loader.dispose()
