"""Checks on a candidate's images: file size, decodable, width and height, aspect ratio, blank.

Every image of the candidate is checked, in order; the first failure rejects, and its reason names the
image (its position and source, or the start of its sha256) and the number that failed. Candidates
without images are kept: this validator has nothing to say about them.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field, model_validator

from mmsynth.prompts.media import ImageRef
from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.types import Candidate, Verdict

_STD_SIDE = 512
_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


class ImageChecksConfig(ValidatorConfig):
    type: Literal["image_checks"] = Field(default="image_checks", description="Registry key: 'image_checks'.")
    max_bytes: int | None = Field(
        default=None, ge=1, description="Largest encoded file size in bytes; null: no limit."
    )
    min_width: int | None = Field(
        default=None, ge=1, description="Narrowest width in pixels; null: no minimum."
    )
    max_width: int | None = Field(default=None, ge=1, description="Widest width in pixels; null: no maximum.")
    min_height: int | None = Field(
        default=None, ge=1, description="Lowest height in pixels; null: no minimum."
    )
    max_height: int | None = Field(
        default=None, ge=1, description="Highest height in pixels; null: no maximum."
    )
    min_aspect: float | None = Field(
        default=None,
        gt=0,
        description="Smallest width/height ratio (0.5: at most twice as tall as wide); null: off.",
    )
    max_aspect: float | None = Field(
        default=None,
        gt=0,
        description="Largest width/height ratio (2.0: at most twice as wide as tall); null: off.",
    )
    min_pixel_std: float | None = Field(
        default=2.0,
        ge=0,
        description="Reject blank or near-constant images: the largest per-channel standard deviation of the RGB pixel values (0-255) must reach this; null: off.",
    )

    @model_validator(mode="after")
    def _bounds_ordered(self) -> ImageChecksConfig:
        for lo, hi in (
            ("min_width", "max_width"),
            ("min_height", "max_height"),
            ("min_aspect", "max_aspect"),
        ):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} ({a}) is greater than {hi} ({b})")
        return self


class ImageChecksValidator(ConfiguredValidator[ImageChecksConfig]):
    """Rejects a candidate when one of its images fails a check; the reason names the image and the number."""

    config_cls = ImageChecksConfig

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        verdicts = []
        for c in candidates:
            failure = None
            for i, img in enumerate(c.images):
                failure = self.first_failure(img, i)
                if failure is not None:
                    break
            if failure is None:
                verdicts.append(Verdict.ok(self.name))
            else:
                verdicts.append(Verdict.reject(self.name, failure[0], failure[1]))
        return verdicts

    def first_failure(self, img: ImageRef, index: int = 0) -> tuple[str, float | None] | None:
        """(reason, score) of the first check `img` fails, or None when it passes them all."""
        cfg = self.config
        name = image_name(img, index)
        size = len(img.data)
        if cfg.max_bytes is not None and size > cfg.max_bytes:
            return f"file too large: {name} is {size} bytes (max {cfg.max_bytes})", float(size)
        try:
            pil = img.to_pil()
        except ValueError as e:
            return f"undecodable image: {name}: {decode_error(e)}", None
        w, h = pil.size
        for label, value, lo, hi in (
            ("width", w, cfg.min_width, cfg.max_width),
            ("height", h, cfg.min_height, cfg.max_height),
        ):
            if lo is not None and value < lo:
                return f"too small: {name} is {w}x{h} px ({label} {value} < {lo})", float(value)
            if hi is not None and value > hi:
                return f"too large: {name} is {w}x{h} px ({label} {value} > {hi})", float(value)
        aspect = w / h
        if cfg.min_aspect is not None and aspect < cfg.min_aspect:
            return f"aspect ratio: {name} is {w}x{h} px (w/h {aspect:.3g} < {cfg.min_aspect:g})", aspect
        if cfg.max_aspect is not None and aspect > cfg.max_aspect:
            return f"aspect ratio: {name} is {w}x{h} px (w/h {aspect:.3g} > {cfg.max_aspect:g})", aspect
        if cfg.min_pixel_std is not None:
            std = pixel_std(pil)
            if std < cfg.min_pixel_std:
                return f"blank image: {name} pixel std {std:.2f} < {cfg.min_pixel_std:g}", std
        return None


def image_name(img: ImageRef, index: int) -> str:
    """How reasons name an image: its position in the candidate and its source or hash prefix."""
    return f"image {index} ({img.source or img.sha256[:12]})"


def decode_error(e: ValueError) -> str:
    """PIL's complaint, short and free of object addresses (so equal failures give equal reasons)."""
    cause = e.__cause__ or e
    text = _ADDRESS.sub("", str(cause)).strip()
    text = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def pixel_std(pil: Image.Image) -> float:
    """Largest per-channel standard deviation of the RGB pixel values (0-255).

    Per channel, not on grey: red on green of equal brightness is not blank. Measured on a copy at most
    _STD_SIDE px on a side, so a huge image costs no more memory than a small one.
    """
    if max(pil.size) > _STD_SIDE:
        pil = pil.copy()
        pil.thumbnail((_STD_SIDE, _STD_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(pil.convert("RGB"), dtype=np.float32).reshape(-1, 3)
    return float(pixels.std(axis=0).max())
