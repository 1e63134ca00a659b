"""The error base of mmsynth, and errors for templates (each names the file and line, the problem, and
what to do about it).

`MmsynthError` lives here, in the lowest layer, so errors raised in prompts, generators, validators and
the factory can all derive from it without an upward import.
"""

from __future__ import annotations


class MmsynthError(Exception):
    """A problem the user can fix: the CLI prints its message (no traceback) and exits with `exit_code`.

    Exit codes: 2 for wrong input (recipe, template, folder, arguments), 1 for a failure while doing
    the work (a model that cannot load, a backend that fails, the Hub refusing an upload).
    """

    exit_code: int = 1


def format_problem(problem: str, hint: str = "", path: str | None = None, line: int | None = None) -> str:
    """`"<path>:<line>: <problem>. <hint>"`, leaving out what is unknown."""
    where = ""
    if path is not None:
        where = f"{path}:{line}: " if line else f"{path}: "
    text = f"{where}{problem.rstrip('.')}."
    return f"{text} {hint}" if hint else text


class TemplateError(MmsynthError, ValueError):
    """A template (or a reference to one) is wrong; the message says where and how to fix it."""

    exit_code = 2

    def __init__(self, problem: str, hint: str = "", *, path: str | None = None, line: int | None = None):
        self.problem = problem
        self.hint = hint
        self.path = path
        self.line = line
        super().__init__(format_problem(problem, hint, path, line))


class TemplateRenderError(TemplateError):
    """A template could not be rendered with the variables given (missing input, undefined name, sandbox).

    `variable` names the input or variable at fault, when there is one.
    """

    def __init__(
        self,
        problem: str,
        hint: str = "",
        *,
        path: str | None = None,
        line: int | None = None,
        variable: str | None = None,
    ):
        super().__init__(problem, hint, path=path, line=line)
        self.variable = variable
