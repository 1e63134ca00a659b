"""Recipe checks, all in one run: every mistake is listed with its `file:line:col`, exit 2, nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmsynth.factory.cli.main import main
from mmsynth.factory.engine.plan import build_plan
from mmsynth.factory.errors import RecipeError
from mmsynth.factory.executors.ray import RayOptions, recipe_checks
from mmsynth.factory.recipe import load_recipe, read_recipe

BASE = """\
name: checks
seeds: {type: scenes, count: 2}
models:
  lm: {backend: transformers, model: tiny:vlm}
tasks:
  - name: a
    template: caption.short
    model: lm
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # messages name the recipe as typed: `r.yaml`


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def _where(text: str, needle: str, *, nth: int = 0) -> str:
    """`line:col` (1-based) of the `nth` occurrence of `needle` in `text`."""
    pos = -1
    for _ in range(nth + 1):
        pos = text.index(needle, pos + 1)
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"{line}:{col}"


def _run(path: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    out = tmp_path / "run"
    code = main(["run", str(path), "--out", str(out), "-q", *extra])
    assert not out.exists(), "a refused recipe must not start the run folder"
    return code, capsys.readouterr().err


FIVE = """\
name: five
seeds: {type: scenes, count: 2}
models:
  lm: {backend: transformer, model: tiny:vlm}
  gpu: {backend: transformers, model: tiny:lm, device: cuda}
tasks:
  - {name: a, template: caption.shrt, model: lm}
  - {name: b, template: caption.short, model: gpu, from: b}
validators:
  - {type: heuristics, min_charz: 3}
"""


def test_five_mistakes_give_one_error_listing_all_five_with_positions(tmp_path, capsys):
    path = _write(tmp_path, FIVE)
    expected = [
        (_where(FIVE, "transformer,"), "models.lm.backend: unknown backend 'transformer'"),
        (_where(FIVE, "caption.shrt"), "tasks[0].template: unknown template 'caption.shrt'"),
        (_where(FIVE, "b}"), "tasks[1].from: task 'b' reads from itself"),
        (_where(FIVE, "min_charz"), "validators[0].min_charz: unknown key"),
        (
            _where(FIVE, "cuda"),
            "models.gpu.device: model 'gpu' runs on 'cuda', but its Ray actors reserve no GPU",
        ),
    ]
    with pytest.raises(RecipeError) as e:
        build_plan(read_recipe(path), [recipe_checks(RayOptions())])
    assert len(e.value.problems) == 5, str(e.value)
    for where, text in expected:
        assert f"r.yaml:{where}: {text}" in str(e.value), str(e.value)

    code, err = _run(path, tmp_path, capsys, "--executor", "ray")
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    for where, text in expected:
        assert f"r.yaml:{where}: {text}" in err, err
    code, err = _run(path, tmp_path, capsys)  # a local run has no Ray checks: the other four
    assert code == 2 and "Ray actors" not in err and len(err.strip().splitlines()) == 4, err


def test_a_task_reading_from_itself_is_refused_at_its_from(tmp_path, capsys):
    text = BASE + "  - {name: b, template: caption.short, model: lm, from: b}\n"
    code, err = _run(_write(tmp_path, text), tmp_path, capsys)
    assert code == 2, err
    assert f"r.yaml:{_where(text, 'b}')}: tasks[1].from: task 'b' reads from itself" in err


def test_a_cache_path_that_is_a_file_is_refused_before_the_run_starts(tmp_path, capsys):
    (tmp_path / "taken").write_text("not a folder")
    text = BASE + "cache: {path: taken}\n"
    code, err = _run(_write(tmp_path, text), tmp_path, capsys)
    assert code == 2, err
    assert re.search(
        rf"r\.yaml:{_where(text, 'taken')}: cache\.path: the cache folder .*taken is a file", err
    )

    text = BASE + "cache: {path: taken/cache}\n"  # inside a file: mkdir would fail the same way
    code, err = _run(_write(tmp_path, text), tmp_path, capsys)
    assert code == 2 and "which is a file" in err, err


def test_a_validator_scoped_to_an_unknown_task_is_refused(tmp_path):
    text = BASE + "validators:\n  - {type: heuristics, tasks: [a, captions]}\n"
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, text))
    assert str(e.value) == (
        f"r.yaml:{_where(text, 'captions')}: validators[0].tasks[1]: unknown task 'captions'. "
        "Tasks and documents: a."
    )


def test_a_validator_may_name_a_document_subset(tmp_path):
    text = (
        BASE
        + "  - {name: pics, template: caption.short, model: lm, from: a}\n"
        + "documents: [{name: docs, plan: a, images: pics}]\n"
        + "validators:\n  - {type: structure, tasks: [docs]}\n"
    )
    assert load_recipe(_write(tmp_path, text)).validators[0]["tasks"] == ["docs"]


@pytest.mark.parametrize(
    ("extra", "key", "loc"),
    [
        ("validators:\n  - type: heuristics\n    min_charz: 3\n", "min_charz", "validators[0].min_charz"),
        ("  - {name: b, template: caption.short, model: lm, form: a}\n", "form:", "tasks[1].form"),
    ],
)
def test_an_unknown_key_is_pointed_at_the_key_not_its_value(tmp_path, extra, key, loc):
    text = BASE + extra
    with pytest.raises(RecipeError) as e:
        build_plan(read_recipe(_write(tmp_path, text)))
    assert str(e.value).startswith(f"r.yaml:{_where(text, key)}: {loc}: unknown key"), str(e.value)


def test_allowed_keys_name_from_as_written_not_as_the_python_field(tmp_path):
    text = BASE + "  - {name: b, template: caption.short, model: lm, zzz: a}\n"
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, text))
    assert "from," in str(e.value) and "from_" not in str(e.value)


def test_duplicate_keys_are_reported_with_the_reference_checks(tmp_path):
    text = BASE.replace("  - name: a\n", "  - name: a\n    name: a\n") + "mixture: {zz: 1}\n"
    with pytest.raises(RecipeError) as e:
        load_recipe(_write(tmp_path, text))
    assert [p.message for p in e.value.problems] == [
        "duplicate key 'name'",
        "'zz' is not a task that reads the seeds",
    ]


def test_ray_resource_checks_list_every_model_that_cannot_be_placed(tmp_path):
    from mmsynth.factory.executors.ray import check_resources, model_settings

    text = (
        BASE.replace("tasks:", "  lm2: {backend: transformers, model: tiny:lm}\ntasks:")
        + "  - {name: b, template: caption.short, model: lm2}\n"
        + "ray:\n  models:\n    lm: {num_gpus: 2}\n    lm2: {num_cpus: 64}\n"
    )
    plan = build_plan(load_recipe(_write(tmp_path, text)))
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}]
    with pytest.raises(RecipeError) as e:
        check_resources(plan, model_settings(plan, RayOptions()), nodes)
    assert [p.loc for p in e.value.problems] == ["ray.models.lm.num_gpus", "ray.models.lm2.num_cpus"]
    assert "needs 2 GPU" in str(e.value) and "needs 64 CPU" in str(e.value)
