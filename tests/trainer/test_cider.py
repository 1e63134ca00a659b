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


# Captions with punctuation and their tokens from pycocoevalcap 1.2 itself: `PTBTokenizer().tokenize`
# (which runs the Stanford CoreNLP 3.4.1 jar it ships, on Java 17) and `Cider().compute_score` on
# its output, run once by hand; the numbers are copied here.
PUNCT_CANDS = [
    "A black-and-white dog's toy (a ball) on the grass.",
    "Two men can't open the door... they're \"stuck\"!",
    "A 3-year-old boy, wearing a T-shirt, eats 1/2 of a pizza at 5:30 p.m.",
    "Mr. Smith's cat sits on the U.S. flag; it's grey.",
    "A train -- red, white & blue -- waits at the station [platform 2].",
]
PUNCT_REFS = [
    [
        "A black and white dog plays with a toy ball on the grass.",
        "The dog's toy, a ball, lies in the grass (near a tree).",
        "A black-and-white puppy with its toy on a lawn.",
    ],
    [
        "Two men who can't open a door.",
        "Men are stuck outside; they cannot open the door!",
        "Two guys try to open a stuck door...",
    ],
    [
        "A young boy in a T-shirt eating pizza.",
        "A 3-year-old eats half of a pizza: it's 5:30.",
        "A kid, about 3 years old, eating a slice of pizza.",
    ],
    [
        "A grey cat sitting on an American flag.",
        "Mr. Smith's grey cat is on the U.S. flag.",
        "The cat sits on a flag, it's grey.",
    ],
    [
        "A red, white and blue train at the station.",
        "A train waiting at platform 2.",
        "The train (red & blue) waits at the station.",
    ],
]
PYCOCO_CAND_TOKENS = [
    "a black-and-white dog 's toy -lrb- a ball -rrb- on the grass",
    "two men ca n't open the door they 're stuck",
    "a 3-year-old boy wearing a t-shirt eats 1/2 of a pizza at 5:30 p.m.",
    "mr. smith 's cat sits on the u.s. flag it 's grey",
    "a train red white & blue waits at the station -lsb- platform 2 -rsb-",
]
PYCOCO_REF_TOKENS = [
    [
        "a black and white dog plays with a toy ball on the grass",
        "the dog 's toy a ball lies in the grass -lrb- near a tree -rrb-",
        "a black-and-white puppy with its toy on a lawn",
    ],
    [
        "two men who ca n't open a door",
        "men are stuck outside they can not open the door",
        "two guys try to open a stuck door",
    ],
    [
        "a young boy in a t-shirt eating pizza",
        "a 3-year-old eats half of a pizza it 's 5:30",
        "a kid about 3 years old eating a slice of pizza",
    ],
    [
        "a grey cat sitting on an american flag",
        "mr. smith 's grey cat is on the u.s. flag",
        "the cat sits on a flag it 's grey",
    ],
    [
        "a red white and blue train at the station",
        "a train waiting at platform 2",
        "the train -lrb- red & blue -rrb- waits at the station",
    ],
]
PYCOCO_CIDER = 2.0248798327485806
PYCOCO_PER_IMAGE = [
    1.8593307156030328,
    2.1569398078234725,
    1.056361796313388,
    3.124022177235136,
    1.9277446667678744,
]


def test_tokens_are_pycocoevalcaps_on_captions_with_punctuation():
    assert [" ".join(tokenize_caption(c)) for c in PUNCT_CANDS] == PYCOCO_CAND_TOKENS
    assert [[" ".join(tokenize_caption(r)) for r in refs] for refs in PUNCT_REFS] == PYCOCO_REF_TOKENS


def test_cider_of_raw_captions_with_punctuation_matches_pycocoevalcap():
    score, per = cider_d(PUNCT_CANDS, PUNCT_REFS)
    assert score == pytest.approx(PYCOCO_CIDER, abs=1e-9)
    assert per == pytest.approx(PYCOCO_PER_IMAGE, abs=1e-9)


# More of CoreNLP 3.4.1's rules (`PTBTokenizer -preserveLines -lowerCase` on the jar, then
# pycocoevalcap's punctuation list dropped), one line each.
@pytest.mark.parametrize(
    ("caption", "tokens"),
    [
        (
            "They're gonna play, won't they? I'm sure we'll see.",
            "they 're gon na play wo n't they i 'm sure we 'll see",
        ),
        (
            "Cannot stop 'em. 'Tis a dogs' park: kids' toys - one/two items.",
            "can not stop 'em 't is a dogs park kids toys one/two items",
        ),
        ("hello!!! what?! wow?? ok.. so... umm.... yes", "hello !!! what ?! wow ?? ok so umm yes"),
        (
            "a cat(sitting) on a (big)mat [x]y {z}w",
            "a cat -lrb- sitting -rrb- on a -lrb- big -rrb- mat -lsb- x -rsb- y -lcb- z -rcb- w",
        ),
        (
            "“curly quotes” and ‘single’ and it’s — dash – endash … ellipsis",
            "curly quotes and single and it 's dash endash ellipsis",
        ),
        ("a very---long dash and -leading trailing- words", "a very long dash and leading trailing words"),
        (
            "50-50 odds; 1.5x; $3.50; #1; 100s; 3/4; 50% off 1,000",
            "50-50 odds 1.5 x $ 3.50 # 1 100s 3/4 50 % off 1,000",
        ),
        (
            "Dr. Who at St. Louis, no. 5 and no. A... b the cat sat.",
            "dr. who at st. louis no. 5 and no a. b the cat sat",
        ),
        (
            "2 1/2 cups, e.g. at 5 p.m. in the U.S.A. o'clock rock 'n' roll '90s",
            "2\xa01/2 cups e.g. at 5 p.m. in the u.s.a. o'clock rock 'n' roll '90s",
        ),
        (
            "it's 5'10\" tall and a mat.the end; email me@example.com",
            "it 's 5 10 tall and a mat.the end email me@example.com",
        ),
    ],
)
def test_ptb_rules_as_corenlp_applies_them(caption, tokens):
    assert tokenize_caption(caption) == tokens.split(" ")


def test_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        cider_d(["one"], [["a"], ["b"]])
