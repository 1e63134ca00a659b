"""Images from a folder, in sorted order of their relative paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from mmsynth.factory.seeds.base import (
    LocalFolder,
    Seed,
    SourceConfig,
    absolute,
    read_image,
    seed_id,
    stop_index,
)

FIELDS = frozenset({"image", "path", "filename"})
DEFAULT_EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"]


class ImageFolderConfig(SourceConfig):
    """Every image file under a folder, one seed each, in sorted order of relative path."""

    type: Literal["image_folder"] = Field(default="image_folder", description="Selects this source.")
    path: LocalFolder = Field(description="The folder; relative to the recipe's folder.")
    recursive: bool = Field(default=True, description="Include images in sub-folders.")
    extensions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXTENSIONS),
        min_length=1,
        description="File extensions to include, case-insensitive.",
    )

    @field_validator("extensions")
    @classmethod
    def _normalise(cls, value: list[str]) -> list[str]:
        return [e.lower() if e.startswith(".") else f".{e.lower()}" for e in value]


def list_images(root: Path, recursive: bool = True, extensions: list[str] | None = None) -> list[str]:
    """Relative POSIX paths of the image files under `root`, sorted; hidden files and folders skipped."""
    exts = tuple(e.lower() for e in (extensions or DEFAULT_EXTENSIONS))
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(exts):
                found.append((rel_dir / name).as_posix())
    return sorted(found)


def iter_seeds(
    config: ImageFolderConfig, base_dir: str | Path | None = None, start: int = 0
) -> Iterator[Seed]:
    """One seed per image; a file PIL cannot parse becomes a seed with `error` set, not an exception."""
    root = absolute(config.path, base_dir)
    files = list_images(root, config.recursive, config.extensions)
    stop = stop_index(config.limit, len(files))
    for index in range(max(start, 0), stop or 0):
        rel = files[index]
        fields = {"path": rel, "filename": rel.rsplit("/", 1)[-1]}
        image, error = read_image(root / rel, rel)
        if image is None:
            yield Seed(
                id=seed_id("image_folder", index, rel, error or ""), index=index, fields=fields, error=error
            )
            continue
        yield Seed(
            id=seed_id("image_folder", index, rel, image.sha256),
            index=index,
            fields={"image": image, **fields},
        )


def count_seeds(config: ImageFolderConfig, base_dir: str | Path | None = None) -> int:
    root = absolute(config.path, base_dir)
    return stop_index(config.limit, len(list_images(root, config.recursive, config.extensions))) or 0


def peek_fields(config: ImageFolderConfig, base_dir: str | Path | None = None) -> set[str]:
    return set(FIELDS)
