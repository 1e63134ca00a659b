"""Report files and their verdicts; exemplar draws for in-context evaluation."""

from __future__ import annotations

import json

import pytest

from mmsynth.trainer.data import Example
from mmsynth.trainer.fewshot import draw_exemplars, evaluate
from mmsynth.trainer.report import FILES, markdown, write_report
from mmsynth.trainer.tasks import TASKS, token_f1


def report(gains):
    arm = {
        "size": 4,
        "composition": {"baseline/caption": 4},
        "scores": {"caption": {"0": {"mean": 1.0, "per_seed": [1, 1, 1]}}},
    }
    return {
        "config": {"student": "s", "regime": "pool", "seeds": 3, "steps": 10, "shots": [0], "trials": 1},
        "level": 0.95,
        "tasks": {"caption": {"metric": "cider"}},
        "arms": {"baseline": arm, "replace50": arm},
        "gains": gains,
        "decontamination": {"checked": True, "n": 13, "synthetic": 9, "contaminated": 2, "action": "dropped"},
    }


def row(gain, lo, hi):
    return {
        "arm": "replace50",
        "task": "caption",
        "metric": "cider",
        "shots": 0,
        "baseline": 1.0,
        "treatment": 1.0 + gain,
        "gain": gain,
        "lo": lo,
        "hi": hi,
    }


def test_verdicts_follow_the_interval():
    md = markdown(report([row(0.5, 0.1, 0.9), row(0.1, -0.2, 0.4), row(-0.5, -0.9, -0.1)]))
    verdicts = [line.rsplit("|", 2)[1].strip() for line in md.splitlines() if line.startswith("| caption |")]
    assert verdicts == ["gain", "no clear effect", "loss"]
    assert "2 of 9 contaminated; action: **dropped**" in md


def test_unchecked_decontamination_is_flagged(tmp_path):
    r = report([row(0.5, 0.1, 0.9)])
    del r["decontamination"]
    assert "**not** compared" in markdown(r)
    paths = write_report(tmp_path / "gain", r)
    assert sorted(paths) == sorted(FILES)
    assert json.loads(paths["report.json"].read_text())["gains"][0]["gain"] == 0.5
    assert paths["gain.png"].read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "gain").glob(".*tmp*"))


def ex(i):
    return Example(id=f"e{i}", kind="caption", prompt="p", target=f"t{i}")


def test_exemplar_draws_are_fixed_and_vary_by_trial():
    pool = [ex(i) for i in range(20)]
    a = draw_exemplars(pool, 4, seed=0, task="caption", trial=0, index=3)
    assert a == draw_exemplars(pool, 4, seed=0, task="caption", trial=0, index=3)
    assert a != draw_exemplars(pool, 4, seed=0, task="caption", trial=1, index=3)
    assert draw_exemplars(pool, 0, 0, "caption", 0, 0) == []
    with pytest.raises(ValueError, match="needs 8"):
        draw_exemplars(pool[:5], 8, 0, "caption", 0, 0)


def test_exemplars_must_not_overlap_the_eval_split():
    with pytest.raises(ValueError, match="overlaps"):
        evaluate(None, TASKS["caption"], [ex(1)], [ex(1), ex(2)], shots=1)


def test_token_f1_and_text_task_continuation():
    assert token_f1("two red circles", "two red circles") == 1.0
    assert token_f1("blue", "red") == 0.0
    (task_ex,) = TASKS["text"].select([Example(id="t", kind="text", prompt="", target="one two three four")])
    assert task_ex.prompt.endswith("one two") and task_ex.target == "three four"
