"""Fixtures for template tests: write a template file, make a small image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from mmsynth.prompts import ImageRef


@pytest.fixture
def write_template(tmp_path: Path) -> Callable[..., Path]:
    """write(text, name="t.j2", folder=None) -> the file's path (folder is relative to tmp_path)."""

    def write(text: str, name: str = "t.j2", folder: str | None = None) -> Path:
        path = (tmp_path / folder if folder else tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        return path

    return write


@pytest.fixture
def make_image() -> Callable[..., ImageRef]:
    """make_image(colour="red", size=(8, 6)) -> a small PNG ImageRef."""

    def make(colour: str = "red", size: tuple[int, int] = (8, 6)) -> ImageRef:
        return ImageRef.from_pil(Image.new("RGB", size, colour), source=f"{colour}-{size[0]}x{size[1]}")

    return make


@pytest.fixture
def red(make_image) -> ImageRef:
    return make_image("red", (8, 6))


@pytest.fixture
def blue(make_image) -> ImageRef:
    return make_image("blue", (5, 4))
