"""VQA accuracy and its answer normalisation (the VQA v2 evaluation rules)."""

from __future__ import annotations

import pytest

from mmsynth.trainer.vqa_eval import exact_match, normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Two", "2"),
        ("two.", "2"),
        ("the dog", "dog"),
        ("A red ball.", "red ball"),
        ("dont", "don't"),
        ("1,000", "1000"),
        ("3.5", "3.5"),
        ("yes!", "yes"),
        ("hot-dog", "hot dog"),
        ("  none\n", "0"),
    ],
)
def test_normalisation(raw, norm):
    assert normalize_answer(raw) == norm


def test_accuracy_counts_humans_leave_one_out():
    ten = ["2"] * 3 + ["3"] * 7
    assert vqa_accuracy("two", ten) == pytest.approx(0.9)  # 3 of 10 humans: 0.9, not 1.0
    assert vqa_accuracy("2", ["2"] * 2 + ["4"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("2", ["2"] * 10) == 1.0
    assert vqa_accuracy("3", ["2"] * 10) == 0.0
    assert vqa_accuracy("2", ["2"] + ["4"] * 9) == pytest.approx(0.3)


def test_single_reference_is_exact_match():
    assert vqa_accuracy("The Circle.", ["circle"]) == 1.0
    assert vqa_accuracy("square", ["circle"]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])


def test_exact_match_any_reference():
    assert exact_match("Red", ["blue", "red"]) == 1.0
    assert exact_match("reddish", ["red"]) == 0.0
