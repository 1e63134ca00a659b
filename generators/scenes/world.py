"""The rendered-scene world: shapes on a 3x3 grid drawn with Pillow, with exact truth for every image.

Everything is a pure function of (seed, index), so the same scene comes out on every machine. Seeds
(factory/seeds/scenes.py), the scene-grounding validator, the trained tiny teacher and the trainer's
controls all draw from this one world; the truth (captions, counts, QA) is in truth.py beside it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

from mmsynth.generators.scenes.truth import (
    COLOURS,
    SHAPES,
    SIZES,
    describe_scene,
    position_name,
    scene_counts,
    scene_qa,
)
from mmsynth.prompts.media import ImageRef

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
