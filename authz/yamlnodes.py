"""Reading YAML while keeping every value's position, so config errors point at the line.

``yaml.compose`` keeps the marks that ``yaml.safe_load`` throws away. :class:`Node` wraps one
composed node and offers typed accessors that raise :class:`ConfigError` with
``file:line:column`` and, for unknown keys, the keys that would have been valid.
"""

from __future__ import annotations

import builtins
import difflib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import yaml

from authz.errors import ConfigError

__all__ = ["Mapping", "Node", "load_documents"]

_N = TypeVar("_N", int, float)


class Node:
    """One YAML node plus the file it came from."""

    __slots__ = ("file", "raw")

    def __init__(self, raw: yaml.Node, file: builtins.str):
        self.raw = raw
        self.file = file

    # -- errors ---------------------------------------------------------------
    def error(self, message: builtins.str) -> ConfigError:
        mark = self.raw.start_mark
        return ConfigError(message, file=self.file, line=mark.line + 1, column=mark.column + 1)

    @property
    def line(self) -> builtins.int:
        return builtins.int(self.raw.start_mark.line) + 1

    @property
    def where(self) -> builtins.str:
        return f"{self.file}:{self.line}"

    # -- scalars --------------------------------------------------------------
    def _scalar(self, what: builtins.str) -> builtins.str:
        if not isinstance(self.raw, yaml.ScalarNode):
            raise self.error(f"expected {what}, got a {_kind(self.raw)}")
        return builtins.str(self.raw.value)

    def is_null(self) -> builtins.bool:
        return isinstance(self.raw, yaml.ScalarNode) and self.raw.tag.endswith(":null")

    def str(self) -> builtins.str:
        if self.is_null():
            raise self.error("expected a string, got nothing")
        return self._scalar("a string")

    def int(
        self, *, minimum: builtins.int | None = None, maximum: builtins.int | None = None
    ) -> builtins.int:
        text = self._scalar("an integer")
        if not self.raw.tag.endswith(":int"):
            raise self.error(f"expected an integer, got {text!r}")
        try:
            value = builtins.int(text.replace("_", ""), 0)
        except ValueError:
            # YAML 1.1 spellings Python does not read (017, 1:30): say what is expected.
            raise self.error(f"expected a decimal integer, got {text!r}") from None
        return self._in_range(value, minimum, maximum)

    def float(
        self, *, minimum: builtins.float | None = None, maximum: builtins.float | None = None
    ) -> builtins.float:
        text = self._scalar("a number")
        if not (self.raw.tag.endswith(":int") or self.raw.tag.endswith(":float")):
            raise self.error(f"expected a number, got {text!r}")
        try:
            value = builtins.float(text.replace("_", ""))
        except ValueError:
            # .inf, .nan and 1:30.5 are YAML floats that Python does not read.
            raise self.error(f"expected a finite decimal number, got {text!r}") from None
        if not math.isfinite(value):
            raise self.error(f"expected a finite decimal number, got {text!r}")
        return self._in_range(value, minimum, maximum)

    def bool(self) -> builtins.bool:
        text = self._scalar("true or false")
        if not self.raw.tag.endswith(":bool"):
            raise self.error(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "yes", "on")

    def choice(self, choices: tuple[builtins.str, ...]) -> builtins.str:
        value = self.str()
        if value not in choices:
            raise self.error(f"{value!r} is not one of: {', '.join(choices)}")
        return value

    def _in_range(self, value: _N, minimum: _N | None, maximum: _N | None) -> _N:
        if minimum is not None and value < minimum:
            raise self.error(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(f"must be at most {maximum}, got {value}")
        return value

    # -- collections ----------------------------------------------------------
    def items(self) -> list[Node]:
        if not isinstance(self.raw, yaml.SequenceNode):
            raise self.error(f"expected a list, got a {_kind(self.raw)}")
        return [Node(child, self.file) for child in self.raw.value]

    def str_list(self) -> tuple[builtins.str, ...]:
        if isinstance(self.raw, yaml.ScalarNode) and not self.is_null():
            return (self.str(),)
        return tuple(item.str() for item in self.items())

    def entries(self, expected: builtins.str) -> list[tuple[Node, Node]]:
        """This node as a mapping of names the caller judges (domains, versions, claims): its
        key and value nodes in file order. A key given twice is an error, as in a
        :meth:`mapping`; ``expected`` describes the mapping for a node that is not one."""
        if not isinstance(self.raw, yaml.MappingNode):
            raise self.error(f"expected a mapping of {expected}")
        pairs: list[tuple[Node, Node]] = []
        first: dict[builtins.str, Node] = {}
        for key_raw, value_raw in self.raw.value:
            key = Node(key_raw, self.file)
            name = key.str()
            if name in first:
                raise key.error(f"duplicate key {name!r} (first at line {first[name].line})")
            first[name] = key
            pairs.append((key, Node(value_raw, self.file)))
        return pairs

    def mapping(self, allowed: tuple[builtins.str, ...]) -> Mapping:
        """This node as a mapping whose keys must be among ``allowed``."""
        if not isinstance(self.raw, yaml.MappingNode):
            raise self.error(f"expected a mapping, got a {_kind(self.raw)}")
        return Mapping(self, allowed)


class Mapping:
    """A YAML mapping with known keys; unknown and duplicate keys are errors."""

    __slots__ = ("_keys", "_values", "node")

    def __init__(self, node: Node, allowed: tuple[str, ...]):
        self.node = node
        self._values: dict[str, Node] = {}
        self._keys: dict[str, Node] = {}
        for key_raw, value_raw in node.raw.value:
            key = Node(key_raw, node.file)
            name = key.str()
            if name not in allowed:
                raise key.error(_unknown_key(name, allowed))
            if name in self._values:
                raise key.error(f"duplicate key {name!r} (first at line {self._keys[name].line})")
            self._keys[name] = key
            self._values[name] = Node(value_raw, node.file)

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def get(self, name: str) -> Node | None:
        """The value node, or None when the key is absent or explicitly null."""
        value = self._values.get(name)
        if value is None or value.is_null():
            return None
        return value

    def require(self, name: str) -> Node:
        value = self.get(name)
        if value is None:
            raise self.node.error(f"missing required key {name!r}")
        return value

    def key(self, name: str) -> Node:
        return self._keys[name]

    def error(self, message: str) -> ConfigError:
        return self.node.error(message)


def _unknown_key(name: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key {name!r}{hint} (known: {', '.join(allowed)})"


def _kind(raw: yaml.Node) -> str:
    if isinstance(raw, yaml.MappingNode):
        return "mapping"
    if isinstance(raw, yaml.SequenceNode):
        return "list"
    return f"scalar {raw.value!r}"


def _place(before: str) -> tuple[int, int]:
    """Line and column (1-based) of the character that follows ``before``."""
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def load_documents(path: Path) -> list[Node]:
    """The YAML files at ``path`` (a file, or every ``*.yaml``/``*.yml`` in a directory, sorted;
    hidden ones left out: editors keep their lock and swap files there, ``.#routes.yaml``)."""
    if path.is_dir():
        named = sorted(
            p
            for p in path.iterdir()
            if p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
        )
        for entry in named:
            # A link whose file is gone would otherwise drop its domains without a word.
            if entry.is_symlink() and not entry.exists():
                raise ConfigError("a symlink to a file that does not exist", file=str(entry))
        files = [p for p in named if p.is_file()]
        if not files:
            raise ConfigError("no *.yaml files in this directory", file=str(path))
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError("no such file or directory", file=str(path))
    documents = []
    for file in files:
        text = ""
        try:
            data = file.read_bytes()
            text = data.decode("utf-8")
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            # PyYAML's problem is often half a sentence ("but found another document"); its
            # context ("expected a single document in the stream") is the other half.
            problem = f"{exc.context} {exc.problem}" if exc.context else str(exc.problem)
            raise ConfigError(problem, file=str(file), line=line, column=column) from exc
        except UnicodeDecodeError as exc:
            line, column = _place(data[: exc.start].decode("utf-8", "replace"))
            raise ConfigError("not UTF-8 text", file=str(file), line=line, column=column) from exc
        except yaml.reader.ReaderError as exc:
            # The reader reports a character index, not a mark: turn it into line and column.
            line, column = _place(text[: exc.position])
            raise ConfigError(
                f"character {chr(exc.character)!r} is not allowed in YAML "
                "(write it as an escape in a double-quoted string)",
                file=str(file),
                line=line,
                column=column,
            ) from exc
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read: {exc}", file=str(file)) from exc
        except RecursionError as exc:
            # PyYAML composes nested collections recursively; no routes file nests this deep.
            raise ConfigError("nested too deeply to be a routes file", file=str(file)) from exc
        if root is not None:
            documents.append(Node(root, str(file)))
    return documents
