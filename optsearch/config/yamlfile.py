"""YAML job files as plain data with the line of every field, and errors that name file and line.

Safe loading only (no Python objects), one document per file, and guards against alias bombs and
recursive aliases, so any text either reads as data or fails with one clean ``ConfigError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from optsearch.core.errors import OptsearchError

Path_ = tuple[str | int, ...]
"""Where a value sits in a YAML document: keys and list indices from the root."""

#: Most YAML nodes read from one file, aliases counted each time they are used (alias bombs).
MAX_NODES = 100_000
MAX_DEPTH = 64
#: Most problems listed in one error.
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (file:line), which field, what is wrong and what is valid."""

    where: str
    field: str
    message: str

    def __str__(self) -> str:
        return ": ".join(part for part in (self.where, self.field, self.message) if part)


class ConfigError(OptsearchError):
    """A job file or setting that does not fit the schema; the CLI shows every problem and exits 2."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        unique = list(dict.fromkeys(problems))
        self.problems = tuple(unique)
        shown = [str(p) for p in unique[:MAX_PROBLEMS]]
        if len(unique) > MAX_PROBLEMS:
            shown.append(f"... and {len(unique) - MAX_PROBLEMS} more problems")
        super().__init__("\n".join(shown))


@dataclass(frozen=True)
class Document:
    """A YAML file as plain Python data, with the line of every mapping key and list item."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def where(self, path: Path_) -> str:
        """``file:line`` for ``path``."""
        line = self.line(path)
        return f"{self.file}:{line}" if line is not None else self.file


_FLOAT_WITHOUT_DOT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")
_STANDARD_TAGS = {
    "tag:yaml.org,2002:map": "map",
    "tag:yaml.org,2002:seq": "seq",
}


def read_yaml(path: str | Path) -> Document:
    """A YAML file read with line numbers; a ``ConfigError`` naming the file for anything unreadable."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(name, "", "file not found; check the path")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem(name, "", "is a folder; give the path of a YAML file")]) from None
    except UnicodeDecodeError as err:
        raise ConfigError([Problem(name, "", f"is not UTF-8 text ({err.reason})")]) from None
    except OSError as err:
        raise ConfigError([Problem(name, "", f"cannot be read ({err.strerror})")]) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str = "<config>") -> Document:
    """YAML text as plain data with line numbers (safe: no Python objects, one document)."""
    lines: dict[Path_, int] = {}
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters already
        node = loader.get_single_node()
        data = None if node is None else _Reader(loader, lines, name).read(node, (), 0)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError([Problem(where, "", f"is not valid YAML: {what}")]) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as err:  # odd scalars, deep nesting
        raise ConfigError(
            [Problem(name, "", f"cannot be read as YAML: {type(err).__name__}: {err}")]
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    return Document(name, data, lines)


class _Reader:
    """Turns composed YAML nodes into plain data and records the line of every key and list item."""

    def __init__(self, loader: Any, lines: dict[Path_, int], name: str) -> None:
        self.loader = loader
        self.lines = lines
        self.name = name
        self.nodes = 0

    def _fail(self, node: Any, message: str) -> ConfigError:
        return ConfigError([Problem(f"{self.name}:{node.start_mark.line + 1}", "", message)])

    def read(self, node: Any, path: Path_, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self._fail(node, f"has more than {MAX_NODES} values (aliases counted); is it a job file?")
        if depth > MAX_DEPTH:
            raise self._fail(node, f"nests deeper than {MAX_DEPTH} levels (a recursive alias?)")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            value = self.loader.construct_object(node, deep=True)
            if isinstance(value, str) and node.style is None and _FLOAT_WITHOUT_DOT.fullmatch(value):
                return float(value)  # YAML 1.1 reads 1e-3 as text; everyone means a number
            return value
        kind = _STANDARD_TAGS.get(node.tag)
        if isinstance(node, yaml.SequenceNode) and kind == "seq":
            items = []
            for i, child in enumerate(node.value):
                self.lines.setdefault((*path, i), child.start_mark.line + 1)
                items.append(self.read(child, (*path, i), depth + 1))
            return items
        if isinstance(node, yaml.MappingNode) and kind == "map":
            self.loader.flatten_mapping(node)  # YAML merge keys (<<: *defaults)
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.read(key_node, (*path, "<key>"), depth + 1)
                if not isinstance(key, str):
                    raise self._fail(key_node, f"field names are text; got {show(key)}")
                if key in out:
                    first = self.lines.get((*path, key))
                    raise self._fail(key_node, f"field {key!r} is given twice (also on line {first})")
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = self.read(value_node, (*path, key), depth + 1)
            return out
        raise self._fail(node, f"uses the YAML tag {node.tag!r}, which job files do not support")


def show(value: object) -> str:
    """A value as the user wrote it (YAML-ish), cut short."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    if isinstance(value, str):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
