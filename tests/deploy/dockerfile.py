"""A small Dockerfile reader: stages, instructions and their exec-form arguments.

Enough of the Dockerfile grammar for our own file: line continuations, comments, ``ARG`` before
``FROM`` with ``${NAME}`` substitution, and the JSON (exec) form of ``ENTRYPOINT``, ``CMD`` and
``HEALTHCHECK CMD``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (``CMD ["a", "b"]``)."""
        words = json.loads(self.value)
        assert isinstance(words, list) and all(isinstance(w, str) for w in words), self
        return words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name or self.base}"
        return found[-1]


def logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(part for part in pending if part)))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


def parse(path: Path) -> list[Stage]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical_lines(path.read_text()):
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "ARG" and not stages:
            name, _, default = value.partition("=")
            args[name] = default
            continue
        if keyword == "FROM":
            value = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)
            words = value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
            continue
        assert stages, f"line {number}: {keyword} before FROM"
        stages[-1].instructions.append(Instruction(keyword, value, number))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    """The stage's ``ENV KEY=VALUE ...`` settings, ``$NAME`` left unexpanded."""
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.value):
            key, sep, value = word.partition("=")
            assert sep, f"line {instruction.line}: use ENV KEY=VALUE"
            env[key] = value
    return env


def healthcheck(stage: Stage) -> tuple[dict[str, str], list[str]]:
    """The ``HEALTHCHECK`` options (``--interval=15s`` → ``{"interval": "15s"}``) and command."""
    value = stage.last("HEALTHCHECK").value
    options: dict[str, str] = {}
    while value.startswith("--"):
        option, _, value = value.partition(" ")
        key, _, setting = option[2:].partition("=")
        options[key] = setting
        value = value.strip()
    keyword, _, command = value.partition(" ")
    assert keyword == "CMD", "HEALTHCHECK must run a command"
    return options, Instruction("CMD", command, 0).exec_form()


def copies_from_context(stage: Stage) -> list[tuple[list[str], str]]:
    """``COPY SRC... DEST`` instructions that read the build context (not ``--from``)."""
    found = []
    for instruction in stage.all("COPY"):
        words = instruction.value.split()
        if any(word.startswith("--from=") for word in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        found.append((words[:-1], words[-1]))
    return found


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context (the last matching rule wins)."""
    excluded = False
    parts = path.strip("/").split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        rule = pattern[1:] if negate else pattern
        rule = rule.strip("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch.fnmatchcase(prefix, rule) or (
                rule.startswith("**/") and fnmatch.fnmatchcase(parts[depth - 1], rule[3:])
            ):
                excluded = not negate
                break
    return excluded


def dockerignore(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
