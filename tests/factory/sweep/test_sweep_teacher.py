"""On the proving ground (the trained teacher `tiny:scene-vlm` captioning rendered scenes): the sweep
tells good data from bad with an interval above zero, and the validator ablation runs on the
teacher's real hallucinations.

The student is `tiny:scene-student` (issue 14): the random `tiny:vlm` barely reads images in a short
training, so its per-seed scores vary so much that 3 or even 5 seeds separate the two temperatures
for one sweep seed and not another (measured, docs/sweep.md). The scene-student separated them at
both seeds tried: +0.993 [+0.409, +1.708] (seed 0, this test) and +1.275 [+0.577, +2.201] (seed 1),
about 100 s each under load.

What scene_grounding buys in gain is not asserted: at this budget it was not separated from zero
(scene-student, 3 x 250 steps, all minus without scene_grounding: temperature 2.0, 32 scenes:
+0.179 [-0.383, +0.739]; temperature 1.5, 64 scenes: -0.199 [-1.628, +1.180]; temperature 1.0:
-0.172 [-1.219, +0.710]; on VQA accuracy with the teacher's QA pairs: temperature 0.7, 32 scenes:
+0.052 [-0.031, +0.188]; temperature 1.0, 64 scenes: +0.042 [-0.083, +0.153], at 600 steps
+0.014 [-0.097, +0.118]). Only the ablation's mechanics on real rejections are checked here.
"""

from __future__ import annotations

import pytest
import yaml

from mmsynth.factory.sweep.runner import run_ablation, run_sweep

pytestmark = pytest.mark.slow


def recipe(temperature: float, validators: str) -> str:
    return f"""\
name: proving-ground-small
seed: 0
seeds: {{type: scenes, count: 32, image_size: 64, max_objects: 2, seed: 1}}
models:
  teacher: {{backend: transformers, model: tiny:scene-vlm, batch_size: 32}}
tasks:
  - name: captions
    template: caption.short
    model: teacher
    sampling: {{temperature: {temperature}, max_tokens: 24}}
validators: {validators}
output: {{chunk_size: 32}}
"""


# The measurement both tests share: 8 real scenes + the variant's captions, 16 held-out scenes.
MEASURE = {
    "baseline": {"scenes": {"train": "0:8", "test": "20000:16", "seed": 0, "max_objects": 2, "qa": False}},
    "student": "tiny:scene-student",
    "tasks": ["caption"],
    "synthetic_tasks": ["captions"],
    "rank_by": "caption@0",
    "mode": "add",
    "seeds": 3,
    "steps": 250,
    "batch_size": 4,
    "eval_size": 16,
    "device": "cpu",
}

SWEEP = {
    "recipe": "r.yaml",
    # The bad variant comes first in the sweep's order, so a tie would rank it first.
    "axes": {"tasks.captions.sampling.temperature": {"bad": 2.0, "good": 0.7}},
    **MEASURE,
}


def caption_row(rows: list[dict]) -> dict:
    (row,) = [g for g in rows if g["task"] == "caption" and g["shots"] == 0]
    return row


def test_a_good_temperature_ranks_first_with_the_difference_above_zero(tmp_path, scene_vlm, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "r.yaml").write_text(recipe(0.7, "[]"))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"sweep": SWEEP}))
    report = run_sweep(tmp_path / "s.yaml", tmp_path / "out", log=lambda m: None)
    assert report["best_values"] == {"tasks.captions.sampling.temperature": "good"}
    _, second = report["variants"]
    assert second["values"] == {"tasks.captions.sampling.temperature": "bad"}
    diff = caption_row(second["best_minus_this"])
    assert diff["lo"] > 0, f"best minus the bad variant: {diff}"
    assert "really ahead" in (tmp_path / "out" / "report.md").read_text()


def test_the_validator_ablation_on_the_teacher_says_what_scene_grounding_rejects(
    tmp_path, scene_vlm, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # A noisy teacher (temperature 2.0), so there are hallucinations to reject; a short measurement,
    # since only what the ablation reports is checked, not the gain.
    path = tmp_path / "r.yaml"
    path.write_text(
        recipe(2.0, "[{type: heuristics, min_chars: 8}, {type: scene_grounding, captions: true}]")
    )
    short = {**MEASURE, "seeds": 1, "steps": 20}
    report = run_ablation(path, tmp_path / "out", log=lambda m: None, **short)
    rows = {v["values"]["validators"]: v for v in report["variants"] + report["cut"]}
    assert set(rows) == {"all", "without heuristics", "without scene_grounding"}
    full, without = rows["all"], rows["without scene_grounding"]
    assert full["requests_sent"] == 32 and full["rejects_by_validator"]["scene_grounding"] > 0
    # The variants without a validator read the first one's answers from the cache.
    assert rows["without heuristics"]["requests_sent"] == 0 and without["requests_sent"] == 0
    assert without["accepted"] == full["accepted"] + full["rejects_by_validator"]["scene_grounding"]
    assert "scene_grounding" not in without["rejects_by_validator"]
    # Every variant's gain and the best-versus-each interval are reported on the ranking task.
    for v in report["variants"]:
        assert caption_row(v["gains"])["n_seeds"] == 1
        if v["variant"] != report["best"]:
            caption_row(v["best_minus_this"])
