"""Config errors that point at the line: `file:line:col: key.path: problem. Hint.`

The recipe loader composes the YAML into a node tree (which keeps line and column marks) and walks
it alongside pydantic's error `loc` tuples. Later checks that need other packages (template
variables against seed fields, validator configs, backend names) reuse `RecipeError.at` with the
tree the loader kept on the Recipe, so every config problem reads the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmsynth.prompts.errors import MmsynthError
from mmsynth.prompts.names import did_you_mean

Loc = tuple[Any, ...]


@dataclass(frozen=True)
class Problem:
    """One config problem: where it is (file, 1-based line and column), the key path, what is wrong, a hint."""

    file: str
    line: int | None
    column: int | None
    loc: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        text = f"{where}: {self.loc}: {self.message}" if self.loc else f"{where}: {self.message}"
        if self.hint:
            text = f"{text.rstrip('.')}. {self.hint}"
        return text


class RecipeError(MmsynthError):
    """A recipe that cannot run. The message lists its problems, one per line, each with file:line:col.

    The CLI prints the message and exits with `exit_code` (2).
    """

    exit_code = 2

    def __init__(self, problems: Problem | Sequence[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem(file="<recipe>", line=None, column=None, loc="", message=problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def at(
        cls,
        path: str | Path,
        node_root: yaml.Node | None,
        loc: Loc,
        message: str,
        hint: str | None = None,
        *,
        key: bool = False,
    ) -> RecipeError:
        """An error for the entry at `loc` of the YAML tree `node_root` read from `path`.

        Points at the value by default and at the key with `key=True` (unknown keys); where `loc`
        goes deeper than the file (a missing field), at the deepest entry that exists.
        """
        return cls(problem_at(path, node_root, loc, message, hint, key=key))

    @classmethod
    def merge(cls, errors: Iterable[RecipeError]) -> RecipeError:
        """One error that lists the problems of several, in order."""
        return cls([p for e in errors for p in e.problems])


@dataclass(frozen=True)
class Located:
    """Where a loc path lands in a node tree.

    `mark` is the YAML mark to report (None without a tree), `loc` the path with pydantic's
    discriminator tags dropped, `complete` whether every part of the path exists in the file.
    """

    mark: yaml.Mark | None
    loc: Loc
    complete: bool
    node: yaml.Node | None = None


def locate(node_root: yaml.Node | None, loc: Loc, *, key: bool = False) -> Located:
    """Walk `loc` (pydantic's error location, or any key path) through a composed YAML tree.

    Mapping parts match keys by their string value, sequence parts are 0-based indices. A part that
    is not a key of a mapping whose `type` value equals it is a pydantic discriminator tag
    (`('seeds', 'jsonl', 'path')` for a tagged union) and is skipped.
    """
    if node_root is None:
        return Located(None, tuple(loc), False)
    node: yaml.Node = node_root
    key_node: yaml.Node | None = None
    clean: list[Any] = []
    parts = list(loc)
    while parts:
        part = parts[0]
        if isinstance(node, yaml.MappingNode):
            found = _mapping_get(node, part)
            if found is not None:
                key_node, node = found
                clean.append(part)
                parts.pop(0)
                continue
            type_entry = _mapping_get(node, "type")
            if (
                isinstance(part, str)
                and type_entry is not None
                and isinstance(type_entry[1], yaml.ScalarNode)
                and type_entry[1].value == part
            ):
                parts.pop(0)
                continue
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            key_node = None
            clean.append(part)
            parts.pop(0)
            continue
        # The rest is not in the file (a missing field): point at the deepest entry that is.
        clean.extend(parts)
        mark = key_node.start_mark if key_node is not None else node.start_mark
        return Located(mark, tuple(clean), False, node)
    mark = key_node.start_mark if key and key_node is not None else node.start_mark
    return Located(mark, tuple(clean), True, node)


def problem_at(
    path: str | Path,
    node_root: yaml.Node | None,
    loc: Loc,
    message: str,
    hint: str | None = None,
    *,
    key: bool = False,
) -> Problem:
    """The Problem for `loc` in `node_root` (see `locate`); line and column are 1-based."""
    where = locate(node_root, loc, key=key)
    line = column = None
    if where.mark is not None:
        line, column = where.mark.line + 1, where.mark.column + 1
    return Problem(display_path(path), line, column, format_loc(where.loc), message, hint)


def format_loc(loc: Loc) -> str:
    """`('tasks', 0, 'sampling', 'top_p')` -> `tasks[0].sampling.top_p`; odd keys are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{str(part)!r}]"
    return out


def choice_hint(word: str, choices: Iterable[str], what: str = "allowed keys") -> str | None:
    """Did-you-mean when a choice is close, else the list of choices (None when there are none)."""
    choices = sorted(str(c) for c in choices)
    if not choices:
        return None
    return did_you_mean(word, choices).lstrip() or f"{what.capitalize()}: {', '.join(choices)}."


def display_path(path: str | Path) -> str:
    """The path as the user would type it: relative to the working folder when under it."""
    p = Path(path)
    if p.is_absolute():
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return str(p)
    return str(p)


def describe_value(value: Any) -> str:
    """A short phrase for what the user wrote: `the string 'abc'`, `the integer 3`, `a mapping`."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _mapping_get(node: yaml.MappingNode, part: Any) -> tuple[yaml.Node, yaml.Node] | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == str(part):
            return k, v
    return None
