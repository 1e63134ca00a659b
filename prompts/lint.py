"""Lint: every problem in a template file, as issues with lines, without raising."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jinja2 import nodes

from mmsynth.prompts.errors import format_problem
from mmsynth.prompts.template import PromptTemplate, check_source

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class LintIssue:
    path: str
    line: int
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"


def lint_template(path: str | Path, available_vars: set[str] | None = None) -> list[LintIssue]:
    """Issues in one file, sorted by line; errors make it unusable, warnings are likely mistakes.

    `available_vars`: the names the seeds provide; required variables outside it are errors.
    """
    p = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return [LintIssue(p, 1, "error", f"cannot read the file: {e.strerror or e}.")]
    return lint_source(raw, p, available_vars)


def lint_source(source: bytes | str, path: str, available_vars: set[str] | None = None) -> list[LintIssue]:
    """The issues of `lint_template` for template text not (yet) in a file, e.g. an editor's buffer."""
    template, errors = check_source(source, path)
    issues = [LintIssue(path, e.line or 1, "error", format_problem(e.problem, e.hint)) for e in errors]
    if template is not None:
        issues += _check_variables(template, available_vars)
    return sorted(issues, key=lambda i: (i.line, i.severity, i.message))


def _check_variables(t: PromptTemplate, available: set[str] | None) -> list[LintIssue]:
    issues: list[LintIssue] = []

    def add(line: int | None, severity: Severity, message: str) -> None:
        issues.append(LintIssue(t.path, line or t.body_line, severity, message))

    used = t.variables()
    for name in sorted(used - set(t.inputs)):
        add(
            t.first_use(name),
            "error",
            f"variable '{name}' is not declared in `inputs`. Declare it with its type.",
        )
    for name in sorted(set(t.inputs) - used):
        add(
            t.inputs[name].line, "warning", f"input '{name}' is declared but never used. Use it or remove it."
        )
    in_user = {
        n.name
        for block in t.ast.find_all(nodes.Block)
        if block.name == "user"
        for n in block.find_all(nodes.Name)
        if n.ctx == "load"
    }
    for name, spec in sorted(t.inputs.items()):
        if spec.type == "image" and name in used and name not in in_user:
            add(
                t.first_use(name),
                "warning",
                f"image input '{name}' is not placed in the user block. "
                "Most chat models take images only in user messages.",
            )
    if t.exemplars and "exemplars" not in _read_names(t):
        add(
            t.body_line,
            "warning",
            "exemplars are given but the body never uses `exemplars`. Loop over them or remove them.",
        )
    if available is not None:
        for name in sorted(t.required_variables() - set(available)):
            known = ", ".join(sorted(available)) or "none"
            add(
                t.first_use(name),
                "error",
                f"variable '{name}' is not provided by the seeds. Available: {known}.",
            )
    return issues


def _read_names(t: PromptTemplate) -> set[str]:
    """Every name the body reads, `exemplars` included."""
    return {n.name for n in t.ast.find_all(nodes.Name) if n.ctx == "load"}
