"""CIDEr-D against published reference values and its defining properties."""

from __future__ import annotations

import math

import pytest

from mmsynth.trainer.cider import cider_d, cider_d_scores, tokenize_caption

# Reference value from Yale-LILY/SummEval: evaluation/tests/test_cider.py asserts 2.5759014911864084 for
# CANDS/REFS of evaluation/summ_eval/test_util.py with tokenize=False. Its scorer is the pycocoevalcap
# CiderScorer (via nlg-eval), i.e. CIDEr-D: tf-idf 1-4 grams, clipping, gaussian penalty sigma 6, x10;
# tokens are whitespace-split, case and punctuation kept.
SUMMEVAL_CANDS = [
    "28-year-old chef found dead in San Francisco mall",
    "A 28-year-old chef who recently moved to San Francisco was found dead in the staircase of a local shopping center.",
    'The victim\'s brother said he cannot imagine anyone who would want to harm him,"Finally, it went uphill again at him."',
]
SUMMEVAL_REFS = [
    "28-Year-Old Chef Found Dead at San Francisco Mall",
    "A 28-year-old chef who had recently moved to San Francisco was found dead in the stairwell of a local mall this week.",
    "But the victim's brother says he can't think of anyone who would want to hurt him, saying, \"Things were finally going well for him.\"",
]


def test_matches_pycocoevalcap_reference_value():
    scores = cider_d_scores([c.split() for c in SUMMEVAL_CANDS], [[r.split()] for r in SUMMEVAL_REFS])
    assert sum(scores) / len(scores) == pytest.approx(2.5759014911864084, abs=1e-9)


def test_identical_captions_score_ten_and_disjoint_ones_zero():
    refs = [["a red circle at the top left"], ["two blue squares in the centre"]]
    assert cider_d(["a red circle at the top left", "two blue squares in the centre"], refs)[
        0
    ] == pytest.approx(10.0)
    assert cider_d(["green triangles everywhere", "nothing matches here"], refs)[0] == 0.0


def test_wrong_detail_scores_between():
    refs = [["a large red circle at the top left"], ["a small blue square at the bottom right"]]
    _, per = cider_d(
        ["a large red circle at the top right", "a small green square at the bottom right"], refs
    )
    assert all(0 < s < 10 for s in per)


def test_clipping_and_length_penalty():
    refs = [["a red circle"], ["a blue square near the edge"]]
    exact = cider_d_scores([["a", "red", "circle"], ["x"]], [[r.split() for r in rs] for rs in refs])[0]
    repeated = cider_d_scores(
        [["a", "red", "red", "red", "circle"], ["x"]], [[r.split() for r in rs] for rs in refs]
    )[0]
    longer = cider_d_scores(
        [["a", "red", "circle", *["z"] * 8], ["x"]], [[r.split() for r in rs] for rs in refs]
    )[0]
    assert exact > repeated > 0  # repeating a matched word cannot earn more (clipping)
    assert exact > longer > 0
    assert longer < exact * math.exp(-(8**2) / (2 * 6.0**2)) * 1.5  # the gaussian penalty, sigma 6


def test_idf_from_the_evaluated_references():
    # An n-gram every reference contains has idf 0 and earns nothing.
    refs = [["the cat"], ["the dog"], ["the bird"]]
    assert cider_d(["the", "the", "the"], refs)[0] == 0.0


def test_tokenizer_lowercases_and_strips_punctuation():
    assert tokenize_caption("A red, LARGE circle.") == ["a", "red", "large", "circle"]


def test_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        cider_d(["one"], [["a"], ["b"]])
