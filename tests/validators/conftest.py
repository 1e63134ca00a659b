"""Fixtures for validator tests: a candidate factory with sensible defaults."""

from __future__ import annotations

from typing import Any

import pytest

from mmsynth.prompts.media import ImageRef
from mmsynth.validators import Candidate


def candidate(text: str = "A brown dog runs across a sunny park.", **kw: Any) -> Candidate:
    kw.setdefault("id", "r0")
    kw.setdefault("task", "captions")
    kw.setdefault("finish_reason", "stop")
    return Candidate(text=text, **kw)


@pytest.fixture
def make_candidate():
    """`make_candidate(text, **fields)` -> Candidate with id r0, task captions, finish_reason stop."""
    return candidate


@pytest.fixture
def image_a() -> ImageRef:
    return ImageRef.from_bytes(b"\x89PNG fake image a")


@pytest.fixture
def image_b() -> ImageRef:
    return ImageRef.from_bytes(b"\x89PNG fake image b")
