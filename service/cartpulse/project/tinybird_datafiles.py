"""Tinybird datafiles read: ``.datasource`` (SCHEMA, ENGINE_*) and ``.pipe`` (NODE blocks).

The format is line-based: a keyword at the start of a line, its value after it on the
same line (``ENGINE_SORTING_KEY "a, b"``) or, after ``>``, on the indented lines that
follow (``SCHEMA >``, ``SQL >``, ``DESCRIPTION >``). ``NODE name`` opens a node; the
keywords after it belong to it. Keywords this reader does not know are kept and
refused by the importer by name, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


class DatafileError(ValueError):
    """A datafile the importer cannot take; the message names the file and the construct."""


@dataclass
class Node:
    name: str
    settings: dict[str, str] = field(default_factory=dict)   # SQL, DESCRIPTION, TYPE, DATASOURCE, …

    @property
    def sql(self) -> str:
        return self.settings.get("SQL", "")

    @property
    def type(self) -> str:
        return self.settings.get("TYPE", "").strip().strip('"').lower()


@dataclass
class Datafile:
    path: Path
    settings: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name.split(".")[0]


@dataclass
class SchemaColumn:
    name: str
    type: str
    jsonpath: str | None
    default: str | None


_KEYWORD = re.compile(r"^([A-Z][A-Z_]*)(?:\s+(.*))?$")
_COLUMN = re.compile(r"^`?(\w+)`?\s+(.+?)(?:\s+`json:([^`]*)`)?(?:\s+DEFAULT\s+(.+?))?\s*,?\s*$")


def read(path: Path) -> Datafile:
    """The datafile's settings and nodes (see the module docstring)."""
    out = Datafile(path)
    target = out.settings
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _KEYWORD.match(line.rstrip())
        if match is None or line[0].isspace():
            raise DatafileError(f"{path.name}: line {i}: cannot read {line.strip()[:60]!r}")
        key, value = match.group(1), (match.group(2) or "").strip()
        if key == "NODE":
            out.nodes.append(Node(value))
            target = out.nodes[-1].settings
            continue
        if value == ">":
            block = []
            while i < len(lines) and (not lines[i].strip() or lines[i][0].isspace()):
                block.append(lines[i])
                i += 1
            value = _dedent(block)
        if key in target and key not in ("TOKEN", "INCLUDE"):
            raise DatafileError(f"{path.name}: {key} given twice")
        target[key] = target.get(key, "") + ("\n" if key in target else "") + value
    return out


def _dedent(block: list[str]) -> str:
    lines = [line for line in block if line.strip()]
    indent = min((len(line) - len(line.lstrip()) for line in lines), default=0)
    return "\n".join(line[indent:] for line in block).strip("\n")


def schema(datafile: Datafile) -> list[SchemaColumn]:
    """A ``.datasource``'s SCHEMA, one column per line."""
    columns = []
    for line in datafile.settings.get("SCHEMA", "").splitlines():
        if not line.strip():
            continue
        match = _COLUMN.match(line.strip())
        if match is None:
            raise DatafileError(f"{datafile.path.name}: SCHEMA: cannot read the column {line.strip()[:60]!r}")
        columns.append(SchemaColumn(match.group(1), match.group(2).strip(), match.group(3), match.group(4)))
    if not columns:
        raise DatafileError(f"{datafile.path.name}: no SCHEMA")
    return columns


def unquote(value: str) -> str:
    return value.strip().strip('"').strip("'").strip()
