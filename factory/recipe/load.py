"""Reading a recipe file: YAML parsed once into a node tree (line and column marks) and plain data.

`read_recipe` stops at what makes a Recipe impossible (unreadable file, YAML syntax, duplicate keys,
schema problems) and lists every such problem; `load_recipe` also runs the checks between fields
(`checks.check_references`). The planner runs every check at once, see `engine.plan.build_plan`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mmsynth.factory.errors import (
    Loc,
    Problem,
    RecipeError,
    describe_value,
    display_path,
    format_loc,
    problem_at,
)
from mmsynth.factory.recipe.checks import check_references
from mmsynth.factory.recipe.messages import problem_from_pydantic
from mmsynth.factory.recipe.schema import Recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read, validate and resolve the recipe at `path`; raise RecipeError listing every problem found."""
    recipe = read_recipe(path)
    problems = check_references(recipe)
    if problems:
        raise RecipeError(problems)
    return recipe


def read_recipe(path: str | Path) -> Recipe:
    """The recipe at `path`, validated against the schema but not cross-checked.

    RecipeError lists the YAML and schema problems. Duplicate keys (kept on the Recipe) and references
    between parts (task names, models, `from`) are left to `check_references`, so a caller can report
    them together with later checks.
    """
    path = Path(path)
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(Problem(shown, None, None, "", "recipe file not found")) from None
    except IsADirectoryError:
        raise RecipeError(Problem(shown, None, None, "", "is a folder, not a recipe file")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(Problem(shown, None, None, "", f"cannot read recipe: {e}")) from None

    root, data = _parse_yaml(text, shown)
    problems = _duplicate_keys(root, path)
    if data is None:
        raise RecipeError([*problems, Problem(shown, 1, 1, "", "the recipe is empty")])
    if not isinstance(data, dict):
        raise RecipeError(
            [
                *problems,
                problem_at(
                    path,
                    root,
                    (),
                    f"a recipe is a mapping of keys, got {describe_value(data)}",
                    "Start with `name:`, `seeds:`, `models:` and `tasks:`.",
                ),
            ]
        )

    base_dir = Path(os.path.abspath(path)).parent
    try:
        recipe = Recipe.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        problems += [
            problem_from_pydantic(err, path, root, base_dir=base_dir) for err in e.errors(include_url=False)
        ]
        raise RecipeError(problems) from None
    recipe._load_problems = problems  # duplicate keys: reported with the checks, see check_references
    recipe._source_path = base_dir / path.name
    recipe._shown_path = shown
    recipe._source_nodes = root
    return recipe


def _parse_yaml(text: str, shown: str) -> tuple[yaml.Node | None, Any]:
    """The node tree and the plain data, from one parse; syntax errors carry the parser's line."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        hint = None
        if e.context and e.context_mark is not None and e.context_mark is not mark:
            hint = f"({e.context} at line {e.context_mark.line + 1})"
        problem = Problem(
            shown,
            mark.line + 1 if mark else None,
            mark.column + 1 if mark else None,
            "",
            f"YAML syntax error: {e.problem or e}",
            hint,
        )
        raise RecipeError(problem) from None
    except yaml.YAMLError as e:
        raise RecipeError(Problem(shown, None, None, "", f"YAML syntax error: {e}")) from None
    finally:
        loader.dispose()
    return root, data


def _duplicate_keys(root: yaml.Node | None, path: Path) -> list[Problem]:
    """YAML keeps the last of two equal keys without a word; a recipe with one is almost surely a mistake."""
    problems: list[Problem] = []
    visited: set[int] = set()  # anchors can make the tree a graph

    def walk(node: yaml.Node, loc: Loc) -> None:
        if id(node) in visited:
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in seen:
                        first = seen[k.value].start_mark.line + 1
                        problems.append(
                            Problem(
                                display_path(path),
                                k.start_mark.line + 1,
                                k.start_mark.column + 1,
                                format_loc((*loc, k.value)),
                                f"duplicate key '{k.value}'",
                                f"First given at line {first}; YAML would keep only the last.",
                            )
                        )
                    seen[k.value] = k
                    walk(v, (*loc, k.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*loc, i))

    if root is not None:
        walk(root, ())
    return problems
