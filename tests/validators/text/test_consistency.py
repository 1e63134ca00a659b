"""Round-trip caption consistency: content-word F1 against the text the image came from."""

from __future__ import annotations

import pytest

from mmsynth.validators import build_validator
from mmsynth.validators.text.consistency import content_words, word_f1
from mmsynth.validators.types import Candidate


def cand(text: str, **seed) -> Candidate:
    return Candidate(id=text[:8], task="recaptions", text=text, finish_reason="stop", seed=seed)


def test_word_f1_bounds_and_stop_words():
    assert word_f1("a red bicycle", "The red bicycle.") == 1.0
    assert word_f1("a red bicycle", "a green boat") == 0.0
    assert word_f1("", "anything") == 0.0
    # Stop words and one-letter tokens are not content.
    assert content_words("The image shows a cat in a box") == {"cat": 1, "box": 1}
    # Half the words shared on both sides: precision = recall = 0.5.
    assert word_f1("red bicycle", "red boat") == pytest.approx(0.5)


def test_keeps_a_consistent_caption_and_rejects_drift():
    v = build_validator({"type": "caption_consistency", "reference_field": "idea", "min_score": 0.3})
    ok, drift = v.check(
        [
            cand("A red bicycle leans on a brick wall.", idea="a red bicycle leaning on a brick wall"),
            cand("A bowl of soup on a table.", idea="a red bicycle leaning on a brick wall"),
        ]
    )
    assert ok.keep and ok.score > 0.5
    assert not drift.keep and drift.score == 0.0
    assert drift.reason.startswith("inconsistent: word F1 0.00 < 0.3")


def test_missing_reference_is_a_rejection_not_a_crash():
    v = build_validator({"type": "caption_consistency", "reference_field": "prompt"})
    (verdict,) = v.check([cand("a cat", idea="a cat")])
    assert not verdict.keep and "seed field 'prompt' is missing" in verdict.reason


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError):
        build_validator({"type": "caption_consistency", "min_score": 2})
