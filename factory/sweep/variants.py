"""Axes -> variants -> runnable recipe files, every one checked before any work starts.

An axis is a path into the recipe. Lists of named entries are addressed by name, so
`tasks.captions.sampling.temperature` is the temperature of the task named `captions`; `validators`
replaces the whole stack; `mixture.captions` sets one share. A variant's recipe is the base recipe with
its values applied, written with every relative path made absolute, so it runs from the sweep folder.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmsynth.factory.errors import Problem, RecipeError, problem_at
from mmsynth.factory.recipe import load_recipe
from mmsynth.factory.sweep.spec import SweepSpec
from mmsynth.prompts.names import did_you_mean


@dataclass(frozen=True)
class Variant:
    """One point of the sweep: `values` maps each axis to its label (the value, or its name)."""

    name: str
    values: dict[str, str]
    overrides: dict[str, Any]

    def label(self) -> str:
        return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.values.items()) or "base"


def expand(spec: SweepSpec) -> list[Variant]:
    """The grid of every combination, or `samples` distinct ones drawn with the sweep's seed."""
    axes = []
    for path, values in spec.axes.items():
        named = values.items() if isinstance(values, dict) else [(_label(v), v) for v in values]
        axes.append([(path, label, value) for label, value in named])
    combos = list(itertools.product(*axes))
    if spec.search == "random" and spec.samples is not None and spec.samples < len(combos):
        combos = sorted(random.Random(spec.seed).sample(combos, spec.samples), key=combos.index)
    return [
        Variant(f"v{i:02d}", {p: lab for p, lab, _ in combo}, {p: val for p, _, val in combo})
        for i, combo in enumerate(combos)
    ]


def ablations(recipe_data: dict[str, Any]) -> list[Variant]:
    """The full validator stack, then the stack without each validator in turn."""
    stack = recipe_data.get("validators") or []
    out = [Variant("v00", {"validators": "all"}, {"validators": stack})]
    for i, v in enumerate(stack):
        name = v.get("type", f"#{i}") if isinstance(v, dict) else str(v)
        out.append(
            Variant(
                f"v{i + 1:02d}", {"validators": f"without {name}"}, {"validators": stack[:i] + stack[i + 1 :]}
            )
        )
    return out


def _label(value: Any) -> str:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return str(value)
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:8]


def apply(data: dict[str, Any], path: str, value: Any) -> None:
    """Set `path` in the recipe data; KeyError saying which part of the path does not exist."""
    parts = path.split(".")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: depth + 1]))
    last = parts[-1]
    if isinstance(node, list):
        raise KeyError(f"{path}: {'.'.join(parts[:-1])} is a list; name an entry of it")
    node[last] = copy.deepcopy(value)


def _child(node: Any, part: str, so_far: str) -> Any:
    if isinstance(node, list):
        names = [e.get("name") for e in node if isinstance(e, dict)]
        for e in node:
            if isinstance(e, dict) and e.get("name") == part:
                return e
        raise KeyError(f"{so_far}: no entry named {part!r}.{did_you_mean(part, [n for n in names if n])}")
    if not isinstance(node, dict):
        raise KeyError(f"{so_far}: not a mapping")
    if part not in node:
        # An optional section may be absent from the base recipe: the axis creates it.
        node[part] = {}
    return node[part]


def absolute_paths(value: Any, base: Path) -> Any:
    """Relative strings that name an existing file or folder next to the recipe, made absolute."""
    if isinstance(value, dict):
        return {k: absolute_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [absolute_paths(v, base) for v in value]
    if isinstance(value, str) and value and not Path(value).is_absolute() and "\n" not in value:
        try:
            candidate = base / value
            if candidate.exists():
                return str(candidate.resolve())
        except (OSError, ValueError):
            pass
    return value


def write_variants(
    spec_path: Path,
    spec_root: Any,
    recipe_path: Path,
    variants: list[Variant],
    out: Path,
    cache_dir: Path,
) -> dict[str, Path]:
    """Write each variant's recipe under `out`, and check it; RecipeError lists every problem of every variant."""
    base = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    problems: list[Problem] = []
    paths = {}
    for v in variants:
        data = absolute_paths(copy.deepcopy(base), recipe_path.parent)
        bad = False
        for axis, value in v.overrides.items():
            try:
                apply(data, axis, absolute_paths(value, spec_path.parent))
            except KeyError as e:
                bad = True
                p = problem_at(spec_path, spec_root, ("sweep", "axes", axis), str(e.args[0]), key=True)
                if p not in problems:  # every variant meets the same bad axis: say it once
                    problems.append(p)
        if bad:
            continue
        data["cache"] = {**(data.get("cache") or {}), "path": str(cache_dir)}
        path = out / f"{v.name}.yaml"
        header = f"# Variant {v.name} of sweep {spec_path.name}: {v.label()}\n"
        path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
        try:
            load_recipe(path)
        except RecipeError as e:
            problems += [
                Problem(
                    p.file, p.line, p.column, p.loc, f"{p.message} (variant {v.name}: {v.label()})", p.hint
                )
                for p in e.problems
            ]
        paths[v.name] = path
    if problems:
        raise RecipeError(problems)
    return paths
