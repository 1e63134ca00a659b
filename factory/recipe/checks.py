"""Checks between the parts of a loaded recipe that the schema alone cannot express.

Task names unique and `from` naming an earlier task, models and tasks that exist wherever they are
referenced (tasks, documents, mixture, validators' `tasks`, `ray.models`), a cache folder that can be
created. Each check adds a Problem and goes on, so one run lists every mistake; checks that need
other packages (templates, backends, validator settings) are in `engine.plan.build_plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmsynth.factory.errors import Loc, Problem, choice_hint, locate, problem_at
from mmsynth.factory.recipe.schema import Recipe


def check_references(recipe: Recipe) -> list[Problem]:
    """Every problem of `recipe` on its own: those the loader kept (duplicate keys), then references."""
    root = recipe.source_nodes

    def at(loc: Loc, message: str, hint: str | None = None, *, key: bool = False) -> Problem:
        return problem_at(recipe.shown_path, root, loc, message, hint, key=key)

    problems = [*recipe.load_problems]
    problems += _tasks(recipe, at)
    problems += _documents(recipe, at)
    problems += _mixture(recipe, at)
    problems += _validator_tasks(recipe, at)
    problems += _cache(recipe, at)
    for name in recipe.ray.models:
        if name not in recipe.models:
            problems.append(
                at(
                    ("ray", "models", name),
                    f"unknown model '{name}'",
                    choice_hint(name, recipe.models, "models defined under `models`"),
                    key=True,
                )
            )
    return problems


def bad_sources(recipe: Recipe) -> set[str]:
    """Names of tasks whose `from` does not name an earlier task (the planner skips their field checks)."""
    seen: set[str] = set()
    bad = set()
    for task in recipe.tasks:
        if task.from_ is not None and (task.from_ not in seen or task.from_ == task.name):
            bad.add(task.name)
        seen.add(task.name)
    return bad


_At = Callable[..., Problem]


def _tasks(recipe: Recipe, at: _At) -> list[Problem]:
    problems = []
    first: dict[str, int] = {}
    for i, task in enumerate(recipe.tasks):
        if task.name in first:
            j = first[task.name]
            mark = locate(recipe.source_nodes, ("tasks", j, "name")).mark
            line = f"line {mark.line + 1}" if mark else "an earlier task"
            problems.append(
                at(
                    ("tasks", i, "name"),
                    f"duplicate task name '{task.name}'",
                    f"First used by tasks[{j}] at {line}; task names become dataset config names.",
                )
            )
        else:
            first[task.name] = i
        if task.from_ is not None and task.from_ == task.name:
            problems.append(
                at(
                    ("tasks", i, "from"),
                    f"task '{task.name}' reads from itself",
                    "`from` names an earlier task whose accepted records this task runs on.",
                )
            )
        elif task.from_ is not None and task.from_ not in first:
            earlier = [t.name for t in recipe.tasks[:i]]
            problems.append(
                at(
                    ("tasks", i, "from"),
                    f"`from` names '{task.from_}', which is not an earlier task",
                    choice_hint(task.from_, earlier, "earlier tasks")
                    if earlier
                    else "The first task runs on the seeds; list the task it reads from before it.",
                )
            )
        if task.model not in recipe.models:
            problems.append(
                at(
                    ("tasks", i, "model"),
                    f"unknown model '{task.model}'",
                    choice_hint(task.model, recipe.models, "models defined under `models`"),
                )
            )
    return problems


def _documents(recipe: Recipe, at: _At) -> list[Problem]:
    problems = []
    names = [t.name for t in recipe.tasks]
    for i, doc in enumerate(recipe.documents):
        for key in ("plan", "images", "captions"):
            ref = getattr(doc, key)
            if ref is not None and ref not in names:
                problems.append(
                    at(("documents", i, key), f"unknown task '{ref}'", choice_hint(ref, names, "tasks"))
                )
        if doc.name in names:
            problems.append(
                at(
                    ("documents", i, "name"),
                    f"'{doc.name}' is already a task name",
                    "Documents are their own subset; give them a name no task uses.",
                )
            )
    return problems


def _mixture(recipe: Recipe, at: _At) -> list[Problem]:
    problems = []
    roots = [t.name for t in recipe.tasks if t.from_ is None]
    for key, weight in (recipe.mixture or {}).items():
        if key not in roots:
            problems.append(
                at(
                    ("mixture", key),
                    f"'{key}' is not a task that reads the seeds",
                    choice_hint(key, roots, "tasks without `from`"),
                    key=True,
                )
            )
        elif weight <= 0:
            problems.append(at(("mixture", key), f"a share must be positive, got {weight}"))
    return problems


def _validator_tasks(recipe: Recipe, at: _At) -> list[Problem]:
    """A validator scoped to a task that does not exist would silently check nothing."""
    problems = []
    names = [t.name for t in recipe.tasks] + [d.name for d in recipe.documents]  # documents are validated too
    for i, spec in enumerate(recipe.validators):
        scope: Any = spec.get("tasks")
        if not isinstance(scope, list):
            continue  # null (every task) or a wrong type, which the validator's own settings check reports
        for j, name in enumerate(scope):
            if isinstance(name, str) and name not in names:
                problems.append(
                    at(
                        ("validators", i, "tasks", j),
                        f"unknown task '{name}'",
                        choice_hint(name, names, "tasks and documents"),
                    )
                )
    return problems


def _cache(recipe: Recipe, at: _At) -> list[Problem]:
    """The cache folder is created on first use: a file in its place would fail only after the run started."""
    if recipe.cache.path is None:
        return []
    path = Path(recipe.cache.path)
    for p in (path, *path.parents):
        if p.exists():
            if p.is_dir():
                return []
            what = "is a file" if p == path else f"is inside {p}, which is a file"
            return [
                at(("cache", "path"), f"the cache folder {path} {what}", "Name a folder, new or existing.")
            ]
    return []
