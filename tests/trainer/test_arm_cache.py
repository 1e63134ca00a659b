"""Arm scores are cached by everything that decides them: a rerun trains nothing, a changed pool retrains."""

from __future__ import annotations

from trainer_helpers import scene

from mmsynth.trainer.data import caption_example
from mmsynth.trainer.gain import GainConfig, measure_arms, prepare_evaluation
from mmsynth.trainer.pools import Pool
from mmsynth.trainer.student import TrainConfig


def captions(start, n, source="baseline"):
    return [
        caption_example(f"s{i}", *(lambda b, c: (b, [c]))(*scene(i)), source=source)
        for i in range(start, start + n)
    ]


def test_a_rerun_trains_nothing_and_a_changed_pool_retrains(tiny_vlm, tmp_path):
    cfg = GainConfig(
        student=str(tiny_vlm),
        shots=(0,),
        seeds=2,
        eval_size=4,
        train=TrainConfig(steps=2, batch_size=2, progress=False),
        device="cpu",
    )
    real, evals = captions(0, 6), captions(100, 4)
    base, other = Pool("baseline", real), Pool("other", captions(200, 6, "synthetic"))
    first = measure_arms(
        cfg, prepare_evaluation(cfg, real, evals), [base, other], log=lambda m: None, cache_dir=tmp_path
    )
    assert first.trained == 4
    again = measure_arms(
        cfg, prepare_evaluation(cfg, real, evals), [base, other], log=lambda m: None, cache_dir=tmp_path
    )
    assert again.trained == 0
    assert (again.scores["other"]["caption"][0] == first.scores["other"]["caption"][0]).all()
    # The same examples under another name are the same arm; one changed example is a new one.
    renamed = Pool("renamed", list(other.examples))
    changed = Pool("changed", [*other.examples[:-1], captions(300, 1, "synthetic")[0]])
    third = measure_arms(
        cfg, prepare_evaluation(cfg, real, evals), [renamed, changed], log=lambda m: None, cache_dir=tmp_path
    )
    assert third.trained == 2
    assert (third.scores["renamed"]["caption"][0] == first.scores["other"]["caption"][0]).all()
    rows = third.compare(cfg, "changed", "renamed")
    assert [r["task"] for r in rows] == ["caption"] and rows[0]["n_seeds"] == 2
