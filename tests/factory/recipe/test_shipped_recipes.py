"""Every recipe shipped in recipes/ loads and plans against the code it configures (no model is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmsynth.factory.engine.plan import build_plan
from mmsynth.factory.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[3] / "recipes").glob("*.yaml"))


def test_there_are_shipped_recipes():
    assert any(p.name == "quickstart.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_loads_and_plans(path):
    plan = build_plan(load_recipe(path))
    assert plan.tasks, f"{path.name} has no tasks"
    for task in plan.tasks:
        assert task.template.ref and task.model_name in plan.recipe.models


SWEEPS = sorted((Path(__file__).resolve().parents[3] / "recipes" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweep_expands_into_checked_variants(path, tmp_path):
    from mmsynth.factory.sweep.spec import load_sweep
    from mmsynth.factory.sweep.variants import expand, write_variants

    spec, recipe, root = load_sweep(path)
    files = write_variants(path, root, recipe, expand(spec), tmp_path / "variants", tmp_path / "cache")
    assert len(files) >= 2
