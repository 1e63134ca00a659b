from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from mmsynth.prompts.media import ImageRef
from mmsynth.validators import Candidate, build_validator
from mmsynth.validators.image.checks import ImageChecksConfig, ImageChecksValidator


def noise(w: int, h: int, seed: int = 0) -> ImageRef:
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return ImageRef.from_pil(Image.fromarray(pixels), source=f"noise{w}x{h}")


def flat(w: int, h: int, colour=(120, 80, 200)) -> ImageRef:
    return ImageRef.from_pil(Image.new("RGB", (w, h), colour), source="flat")


def cand(*images: ImageRef, id: str = "r0") -> Candidate:
    return Candidate(id=id, task="gen", text="a picture", finish_reason="stop", images=images)


def one(validator: ImageChecksValidator, *images: ImageRef):
    [v] = validator.check([cand(*images)])
    return v


def test_good_image_kept_and_no_images_kept():
    v = ImageChecksValidator(ImageChecksConfig(min_width=32, min_height=32, max_aspect=2.0))
    assert one(v, noise(64, 48)).keep
    assert one(v).keep  # text-only candidate: nothing to check


def test_undecodable_rejected_with_image_named():
    bad = ImageRef.from_bytes(b"\x89PNG\r\n\x1a\n truncated", source="seeds/7.png")
    verdict = one(ImageChecksValidator(), noise(8, 8), bad)
    assert not verdict.keep
    assert verdict.reason.startswith("undecodable image: image 1 (seeds/7.png): ")
    assert " at 0x" not in verdict.reason  # no object addresses: equal failures give equal reasons


def test_size_bounds():
    v = ImageChecksValidator(ImageChecksConfig(min_width=32, max_width=100, min_height=20, max_height=60))
    assert one(v, noise(16, 40)).reason == "too small: image 0 (noise16x40) is 16x40 px (width 16 < 32)"
    assert one(v, noise(50, 10)).reason == "too small: image 0 (noise50x10) is 50x10 px (height 10 < 20)"
    assert one(v, noise(120, 40)).reason == "too large: image 0 (noise120x40) is 120x40 px (width 120 > 100)"
    rejected = one(v, noise(40, 61))
    assert rejected.reason == "too large: image 0 (noise40x61) is 40x61 px (height 61 > 60)"
    assert rejected.score == 61
    assert one(v, noise(32, 20)).keep and one(v, noise(100, 60)).keep  # bounds are inclusive


def test_aspect_ratio_bounds():
    v = ImageChecksValidator(ImageChecksConfig(min_aspect=0.5, max_aspect=2.0))
    wide = one(v, noise(90, 30))
    assert wide.reason == "aspect ratio: image 0 (noise90x30) is 90x30 px (w/h 3 > 2)"
    assert wide.score == pytest.approx(3.0)
    assert one(v, noise(10, 40)).reason == "aspect ratio: image 0 (noise10x40) is 10x40 px (w/h 0.25 < 0.5)"
    assert one(v, noise(60, 30)).keep and one(v, noise(30, 60)).keep


def test_blank_and_near_constant_rejected():
    v = ImageChecksValidator()  # blank check is on by default (std 2.0)
    blank = one(v, flat(64, 64))
    assert blank.reason == "blank image: image 0 (flat) pixel std 0.00 < 2"
    assert blank.score == 0.0
    # A faint 1-level dither is still near-constant.
    dither = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.uint8)[..., None].repeat(3, axis=2) + 100
    assert one(v, ImageRef.from_pil(Image.fromarray(dither))).reason.startswith("blank image:")
    # Red beside green of similar brightness is a picture, though it is near-constant in grey.
    halves = np.zeros((64, 64, 3), dtype=np.uint8)
    halves[:, :32] = (150, 0, 0)
    halves[:, 32:] = (0, 76, 0)
    assert one(v, ImageRef.from_pil(Image.fromarray(halves))).keep
    assert one(ImageChecksValidator(ImageChecksConfig(min_pixel_std=None)), flat(64, 64)).keep


def test_blank_check_on_a_large_image_measures_a_thumbnail():
    big = np.full((2000, 3000, 3), 90, dtype=np.uint8)
    big[:, 1500:] = 200  # two halves: clearly not blank, and still so at thumbnail size
    assert one(ImageChecksValidator(), ImageRef.from_pil(Image.fromarray(big))).keep


def test_max_bytes_checked_before_decoding():
    v = ImageChecksValidator(ImageChecksConfig(max_bytes=100))
    img = noise(32, 32)
    verdict = one(v, img)
    assert verdict.reason == f"file too large: image 0 (noise32x32) is {len(img.data)} bytes (max 100)"
    # Even bytes that would not decode are rejected for size first: no decode is spent on them.
    junk = ImageRef.from_bytes(b"x" * 200, source="junk")
    assert one(v, junk).reason.startswith("file too large: image 0 (junk)")


def test_first_failing_image_decides_and_batches_are_per_candidate():
    v = ImageChecksValidator(ImageChecksConfig(min_width=32))
    verdicts = v.check([cand(noise(40, 40), id="a"), cand(noise(40, 40), noise(8, 40), id="b"), cand(id="c")])
    assert [x.keep for x in verdicts] == [True, False, True]
    assert verdicts[1].reason.startswith("too small: image 1 ")


def test_config_from_registry_and_bounds_ordered():
    v = build_validator({"type": "image_checks", "min_width": 8, "tasks": ["gen"]})
    assert isinstance(v, ImageChecksValidator) and v.config.min_width == 8
    with pytest.raises(ValidationError, match="min_width"):
        ImageChecksConfig(min_width=100, max_width=10)
    with pytest.raises(ValidationError, match="min_aspect"):
        ImageChecksConfig(min_aspect=2, max_aspect=1)
    with pytest.raises(ValidationError):
        ImageChecksConfig(min_widht=3)
