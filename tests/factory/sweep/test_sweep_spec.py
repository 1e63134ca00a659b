"""Sweep files: axes expand into variants, every variant is checked before any work, errors at file:line:col."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from mmsynth.factory.errors import RecipeError
from mmsynth.factory.sweep.spec import load_sweep
from mmsynth.factory.sweep.variants import ablations, apply, expand, write_variants

RECIPE = """\
name: base
seed: 0
seeds: {type: scenes, count: 4}
models:
  vlm: {backend: transformers, model: tiny:vlm}
tasks:
  - name: captions
    template: caption.short
    model: vlm
    sampling: {temperature: 0.8, max_tokens: 12}
validators:
  - {type: heuristics, min_chars: 4}
  - {type: exact_dedup}
"""


def write(folder: Path, sweep: str, recipe: str = RECIPE) -> Path:
    (folder / "r.yaml").write_text(recipe)
    path = folder / "s.yaml"
    path.write_text(textwrap.dedent(sweep))
    return path


def test_grid_and_named_values(tmp_path):
    path = write(
        tmp_path,
        """
        sweep:
          recipe: r.yaml
          axes:
            tasks.captions.sampling.temperature: [0.3, 1.5]
            validators: {strict: [{type: heuristics}], none: []}
          baseline: data
        """,
    )
    spec, recipe, root = load_sweep(path)
    variants = expand(spec)
    assert [v.label() for v in variants] == [
        "temperature=0.3, validators=strict",
        "temperature=0.3, validators=none",
        "temperature=1.5, validators=strict",
        "temperature=1.5, validators=none",
    ]
    files = write_variants(path, root, recipe, variants, tmp_path / "v", tmp_path / "cache")
    data = yaml.safe_load(files["v03"].read_text())
    assert data["tasks"][0]["sampling"] == {"temperature": 1.5, "max_tokens": 12}
    assert data["validators"] == [] and data["cache"] == {"path": str(tmp_path / "cache")}
    assert spec.baseline == str(tmp_path / "data")


def test_random_search_is_seeded_and_distinct(tmp_path):
    sweep = """
        sweep:
          recipe: r.yaml
          axes:
            tasks.captions.sampling.temperature: [0.1, 0.3, 0.5, 0.7, 0.9]
            tasks.captions.sampling.max_tokens: [8, 16, 32]
          search: random
          samples: 4
          seed: {seed}
          baseline: data
        """
    a = [v.values for v in expand(load_sweep(write(tmp_path, sweep.replace("{seed}", "1")))[0])]
    b = [v.values for v in expand(load_sweep(write(tmp_path, sweep.replace("{seed}", "1")))[0])]
    c = [v.values for v in expand(load_sweep(write(tmp_path, sweep.replace("{seed}", "2")))[0])]
    assert a == b and a != c and len(a) == 4 and len({str(x) for x in a}) == 4


def test_every_variant_is_checked_and_each_problem_points_at_its_line(tmp_path):
    path = write(
        tmp_path,
        """
        sweep:
          recipe: r.yaml
          axes:
            tasks.captions.sampling.temperature: [0.5, -3]
            tasks.nosuch.template: [caption.dense]
          baseline: data
        """,
    )
    spec, recipe, root = load_sweep(path)
    with pytest.raises(RecipeError) as e:
        write_variants(path, root, recipe, expand(spec), tmp_path / "v", tmp_path / "cache")
    text = str(e.value)
    # The task that does not exist: at the axis in the sweep file, with a did-you-mean.
    assert "s.yaml:6:5: sweep.axes['tasks.nosuch.template']: tasks.nosuch: no entry named 'nosuch'" in text
    assert text.count("nosuch.template") == 1


def test_a_bad_value_is_reported_for_its_variant(tmp_path):
    path = write(
        tmp_path,
        """
        sweep:
          recipe: r.yaml
          axes:
            tasks.captions.sampling.temperature: [0.5, -3]
          baseline: data
        """,
    )
    spec, recipe, root = load_sweep(path)
    with pytest.raises(RecipeError) as e:
        write_variants(path, root, recipe, expand(spec), tmp_path / "v", tmp_path / "cache")
    (problem,) = e.value.problems
    assert problem.file.endswith("v01.yaml") and problem.line is not None
    assert "temperature" in problem.loc and "(variant v01: temperature=-3)" in problem.message


def test_spec_errors_point_into_the_sweep_file(tmp_path):
    path = write(
        tmp_path,
        """
        sweep:
          recipe: missing.yaml
          axes: {}
          baseline: data
          seedz: 3
        """,
    )
    with pytest.raises(RecipeError) as e:
        load_sweep(path)
    text = str(e.value)
    assert "s.yaml:4:" in text and "axes" in text
    assert "s.yaml:6:" in text and "seedz" in text


def test_apply_addresses_tasks_by_name_and_creates_optional_sections():
    data = yaml.safe_load(RECIPE)
    apply(data, "tasks.captions.n", 3)
    apply(data, "mixture.captions", 0.5)
    assert data["tasks"][0]["n"] == 3 and data["mixture"] == {"captions": 0.5}
    with pytest.raises(KeyError, match=r"no entry named 'caption'.*Did you mean 'captions'"):
        apply(data, "tasks.caption.n", 3)


def test_ablation_leaves_each_validator_out_in_turn():
    variants = ablations(yaml.safe_load(RECIPE))
    assert [v.label() for v in variants] == [
        "validators=all",
        "validators=without heuristics",
        "validators=without exact_dedup",
    ]
    assert variants[1].overrides["validators"] == [{"type": "exact_dedup"}]
