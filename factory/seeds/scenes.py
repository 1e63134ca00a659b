"""Rendered scenes of simple shapes, with exact ground truth: caption, objects, counts and QA pairs.

A scene is up to `max_objects` shapes on a 3x3 grid, at most one per cell, drawn with Pillow on a
white or light background. Everything is a pure function of (seed, index), so the same recipe gives
the same images and captions on every machine, and the exact answers let validators and the trainer
measure what a model got right.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from mmsynth.factory.seeds.base import Seed, SourceConfig, seed_id, stop_index
from mmsynth.prompts.media import ImageRef

# The scene vocabulary, captions and exact QA live with the validators that check answers against them.
from mmsynth.validators.scene_truth import (  # noqa: F401  (re-exported: part of this module's API)
    COLOURS,
    COLS,
    PLURAL,
    ROWS,
    SHAPES,
    SIZES,
    describe_object,
    describe_scene,
    position_name,
    scene_counts,
    scene_qa,
)

RGB = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 80, 220),
    "yellow": (240, 200, 20),
    "purple": (130, 50, 180),
    "orange": (245, 130, 20),
}
BACKGROUNDS = {
    "white": (255, 255, 255),
    "light grey": (232, 232, 232),
    "cream": (250, 245, 228),
    "light blue": (228, 240, 252),
}
# Share of a grid cell's side that an object spans: small objects stay about 10 px wide at 64 px.
EXTENT = {"small": 0.5, "large": 0.85}

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


# --- scene data: plain functions, reusable without the factory -------------------------------------


def scene_rng(seed: int, index: int) -> random.Random:
    """The RNG of scene `index` under `seed`: independent of every other index, same on every machine."""
    digest = hashlib.sha256(f"mmsynth.scenes:{seed}:{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def random_scene(
    rng: random.Random,
    *,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = COLOURS,
    max_objects: int = 3,
) -> list[dict[str, Any]]:
    """1..max_objects objects (dicts: shape, colour, size, row, col, position) in distinct cells, row-major."""
    n = rng.randint(1, min(max_objects, 9))
    cells = sorted(rng.sample(range(9), n))
    objects = []
    for cell in cells:
        row, col = divmod(cell, 3)
        objects.append(
            {
                "shape": rng.choice(list(shapes)),
                "colour": rng.choice(list(colours)),
                "size": rng.choice(SIZES),
                "row": row,
                "col": col,
                "position": position_name(row, col),
            }
        )
    return objects


def object_box(obj: dict[str, Any], size: int) -> tuple[int, int, int, int]:
    """Pixel bounding box (left, top, right, bottom; inclusive) of an object in a `size` px image."""
    cell = size / 3
    half = EXTENT[obj["size"]] * cell / 2
    cx, cy = (obj["col"] + 0.5) * cell, (obj["row"] + 0.5) * cell
    return round(cx - half), round(cy - half), round(cx + half) - 1, round(cy + half) - 1


def render_scene(objects: Sequence[dict[str, Any]], size: int = 64, background: str = "white"):
    """Draw `objects` (as from random_scene) on a `size` x `size` RGB PIL image, flat colours, no antialiasing."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    for obj in objects:
        left, top, right, bottom = object_box(obj, size)
        fill = RGB[obj["colour"]]
        if obj["shape"] == "circle":
            draw.ellipse((left, top, right, bottom), fill=fill)
        elif obj["shape"] == "square":
            draw.rectangle((left, top, right, bottom), fill=fill)
        elif obj["shape"] == "triangle":
            draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
        else:
            raise ValueError(f"unknown shape {obj['shape']!r}")
    return image


def make_scene(
    seed: int,
    index: int,
    *,
    size: int = 64,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = COLOURS,
    max_objects: int = 3,
) -> dict[str, Any]:
    """Scene `index` under `seed` as seed fields: image, description, objects, counts, qa, background."""
    rng = scene_rng(seed, index)
    objects = random_scene(rng, shapes=shapes, colours=colours, max_objects=max_objects)
    background = rng.choice(sorted(BACKGROUNDS))
    image = ImageRef.from_pil(render_scene(objects, size, background), source=f"scene:{seed}:{index}")
    return {
        "image": image,
        "description": describe_scene(objects),
        "objects": objects,
        "counts": scene_counts(objects, shapes, colours),
        "qa": scene_qa(objects, shapes, colours),
        "background": background,
    }


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
