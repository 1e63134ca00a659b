"""The `scenes` seed source: rendered shape scenes with exact truth (the world is generators/scenes/).

A scene is up to `max_objects` shapes on a 3x3 grid, at most one per cell. Every seed is a pure
function of (seed, index), so the same recipe gives the same images and captions on every machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from mmsynth.factory.seeds.base import Seed, SourceConfig, seed_id, stop_index
from mmsynth.generators.scenes.truth import COLOURS, SHAPES
from mmsynth.generators.scenes.world import make_scene

FIELDS = frozenset({"image", "description", "objects", "counts", "qa", "background"})

Shape = Literal["circle", "square", "triangle"]
Colour = Literal["red", "green", "blue", "yellow", "purple", "orange"]


class ScenesConfig(SourceConfig):
    """Rendered shape scenes with exact captions, counts and question/answer pairs."""

    type: Literal["scenes"] = Field(default="scenes", description="Selects this source.")
    count: int = Field(default=64, ge=1, description="How many scenes to render.")
    image_size: int = Field(
        default=64, ge=32, le=2048, description="Width and height of each image, in pixels."
    )
    max_objects: int = Field(
        default=3, ge=1, le=9, description="Most objects in one scene; each scene has 1 to max_objects."
    )
    shapes: list[Shape] = Field(
        default_factory=lambda: list(SHAPES),
        min_length=1,
        description="Shapes to draw from: circle, square, triangle.",
    )
    colours: list[Colour] = Field(
        default_factory=lambda: list(COLOURS),
        min_length=1,
        description="Colours to draw from: red, green, blue, yellow, purple, orange.",
    )
    seed: int | None = Field(default=None, description="Scene sampling seed; null uses the recipe's `seed`.")

    @field_validator("shapes", "colours")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        dupes = sorted({v for v in value if value.count(v) > 1})
        if dupes:
            raise PydanticCustomError(
                "duplicate_items", "duplicate entries: {items}", {"items": ", ".join(dupes)}
            )
        return value


# --- the source contract ---------------------------------------------------------------------------


def iter_seeds(config: ScenesConfig, base_dir: str | Path | None = None, start: int = 0) -> Iterator[Seed]:
    """Scenes start..count-1 (capped by `limit`); each computed from (seed, index) alone, so `start` is free."""
    seed = config.seed if config.seed is not None else 0
    stop = stop_index(config.limit, config.count)
    for index in range(max(start, 0), stop):
        fields = make_scene(
            seed,
            index,
            size=config.image_size,
            shapes=config.shapes,
            colours=config.colours,
            max_objects=config.max_objects,
        )
        content = json.dumps({k: v for k, v in fields.items() if k != "image"}, sort_keys=True)
        yield Seed(id=seed_id("scenes", index, content, fields["image"].sha256), index=index, fields=fields)


def count_seeds(config: ScenesConfig, base_dir: str | Path | None = None) -> int:
    return stop_index(config.limit, config.count)  # type: ignore[return-value]


def peek_fields(config: ScenesConfig, base_dir: str | Path | None = None) -> set[str]:
    return set(FIELDS)
