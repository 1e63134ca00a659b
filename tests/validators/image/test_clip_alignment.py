"""clip_score on a tiny random-weight CLIP: the plumbing and the threshold logic, not real alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from mmsynth.prompts.media import ImageRef
from mmsynth.validators import Candidate, build_validator
from mmsynth.validators.image.clip import ClipScoreConfig, ClipScoreValidator

pytest.importorskip("torch")


def picture(seed: int) -> ImageRef:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    return ImageRef.from_pil(Image.fromarray(pixels), source=f"pic{seed}")


CAPTIONS = [
    "A red circle on the left of the image.",
    "Two blue squares at the top.",
    "There are three small green triangles in the center.",
    "A yellow star next to a purple hexagon.",
    "The image shows five orange dots.",
    "A large white rectangle near the edge.",
]


def candidates(seed_fields: bool = False) -> list[Candidate]:
    out = []
    for i, text in enumerate(CAPTIONS):
        seed = {"description": text.upper()} if seed_fields else {}
        out.append(
            Candidate(
                id=f"r{i}",
                task="captions",
                text=text,
                finish_reason="stop",
                images=(picture(i % 4),),
                seed=seed,
            )
        )
    return out


@pytest.fixture(scope="module")
def loaded(tiny_clip) -> ClipScoreValidator:
    v = ClipScoreValidator(ClipScoreConfig(model=str(tiny_clip)))
    v.load()
    return v


def clip(loaded: ClipScoreValidator, **kw) -> ClipScoreValidator:
    """A validator with this config that shares the module's loaded model (loads are the slow part)."""
    v = ClipScoreValidator(ClipScoreConfig(model=loaded.config.model, **kw))
    v._model, v._processor, v.device = loaded._model, loaded._processor, loaded.device
    return v


@pytest.fixture(scope="module")
def reference_scores(loaded) -> list[float]:
    verdicts = clip(loaded, min_score=None).check(candidates())
    return [v.score for v in verdicts]


def test_scores_are_deterministic_cosines(tiny_clip, reference_scores):
    assert all(-1.0 <= s <= 1.0 for s in reference_scores)
    assert len(set(reference_scores)) == len(reference_scores)  # different pairs, different scores
    # A second validator that loads the model itself gives the same scores.
    fresh = ClipScoreValidator(ClipScoreConfig(model=str(tiny_clip), min_score=None))
    assert [v.score for v in fresh.check(candidates())] == pytest.approx(reference_scores, abs=1e-6)
    assert fresh.device == "cpu" and fresh._model.dtype.is_floating_point


def test_minus_infinity_keeps_all_and_records_scores(loaded, reference_scores):
    v = clip(loaded, min_score=-math.inf)
    verdicts = v.check(candidates())
    assert all(x.keep for x in verdicts)
    assert [x.score for x in verdicts] == pytest.approx(reference_scores, abs=1e-6)


def test_threshold_between_two_scores_splits_them(loaded, reference_scores):
    ranked = sorted(reference_scores)
    threshold = (ranked[2] + ranked[3]) / 2
    verdicts = clip(loaded, min_score=threshold).check(candidates())
    kept = [s for s, v in zip(reference_scores, verdicts, strict=True) if v.keep]
    assert sorted(kept) == pytest.approx(ranked[3:], abs=1e-6)
    rejected = [v for v in verdicts if not v.keep]
    assert len(rejected) == 3
    low = min(reference_scores)
    assert f"low clip score: {low:.3f} < {threshold:g}" in [v.reason for v in rejected]
    assert all(v.score is not None and v.score < threshold for v in rejected)


def test_batched_equals_one_by_one(loaded, reference_scores):
    one = clip(loaded, min_score=None, batch_size=1)
    singles = [one.check([c])[0].score for c in candidates()]
    assert singles == pytest.approx(reference_scores, abs=1e-5)
    two = clip(loaded, min_score=None, batch_size=4)
    assert [v.score for v in two.check(candidates())] == pytest.approx(reference_scores, abs=1e-5)


def test_text_from_a_seed_field(loaded, reference_scores):
    by_seed = clip(loaded, min_score=None, text_from="seed.description")
    scores = [v.score for v in by_seed.check(candidates(seed_fields=True))]
    # The tokenizer lowercases, so the upper-cased seed text scores exactly like the output text.
    assert scores == pytest.approx(reference_scores, abs=1e-5)
    [missing] = by_seed.check(candidates()[:1])
    assert not missing.keep and missing.reason == "no text: seed has no field 'description'"


def test_no_image_kept_unscored_and_undecodable_rejected(loaded):
    v = clip(loaded)
    bad = ImageRef.from_bytes(b"junk", source="x.png")
    verdicts = v.check(
        [
            Candidate(id="a", task="t", text="text only", finish_reason="stop"),
            Candidate(id="b", task="t", text="a red circle", finish_reason="stop", images=(bad,)),
        ]
    )
    assert verdicts[0].keep and verdicts[0].score is None
    assert verdicts[1].reason.startswith("undecodable image: image 0 (x.png): ")


def test_min_score_from_yaml_minus_infinity():
    import yaml

    spec = yaml.safe_load("type: clip_score\nmin_score: -.inf\n")
    assert build_validator(spec).config.min_score == -math.inf


def test_config_is_validated_without_loading_a_model():
    v = build_validator({"type": "clip_score", "model": "/nowhere/clip", "tasks": ["captions"]})
    assert isinstance(v, ClipScoreValidator) and v._model is None
    with pytest.raises(ValueError):
        ClipScoreConfig(text_from="prompt")
    with pytest.raises(ValueError):
        ClipScoreConfig(dtype="float64")
