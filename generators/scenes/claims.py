"""What a caption claims about a rendered scene, checked against the scene's exact objects.

A claim is an object mention: an optional count, size and colour, a shape word, and an optional place
("at the top left", "in the centre", "on the right"). "a small red circle at the top left" claims
that such an object exists; "two blue squares" claims there are exactly two. Words the scene world
does not know are skipped, so free prose around the mentions does not matter; only what a caption
says about shapes, colours, sizes, counts and places is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmsynth.generators.scenes.truth import (
    COLOURS,
    NUMBER_WORDS,
    PLURAL,
    SHAPES,
    SIZES,
    describe_object,
    normalise_words,
)

_SINGULAR = {plural: shape for shape, plural in PLURAL.items()}
_ROWS = {"top": 0, "middle": 1, "bottom": 2}
_COLS = {"left": 0, "right": 2}
# How far a mention's attributes may stand from its shape word: "a large red circle at the top left".
_BEFORE, _AFTER = 3, 5


@dataclass(frozen=True)
class Claim:
    """One object mention: `count` None means "at least one" (a singular mention)."""

    text: str
    shape: str
    colour: str | None = None
    size: str | None = None
    row: int | None = None
    col: int | None = None
    count: int | None = None

    def matches(self, obj: dict[str, Any], with_place: bool = True) -> bool:
        return (
            obj["shape"] == self.shape
            and self.colour in (None, obj["colour"])
            and self.size in (None, obj["size"])
            and (not with_place or (self.row in (None, obj["row"]) and self.col in (None, obj["col"])))
        )


def caption_claims(text: str) -> list[Claim]:
    """The object mentions in `text`, in order."""
    words = normalise_words(text)
    claims = []
    for i, w in enumerate(words):
        if w not in SHAPES and w not in _SINGULAR:
            continue
        shape, plural = _SINGULAR.get(w, w), w in _SINGULAR
        colour = size = count = None
        start = i
        for j in range(i - 1, max(-1, i - 1 - _BEFORE), -1):
            v = words[j]
            if v in COLOURS and colour is None:
                colour = v
            elif v in SIZES and size is None:
                size = v
            elif v in NUMBER_WORDS or v.isdigit():
                count = int(v) if v.isdigit() else NUMBER_WORDS[v]
                start = j
                break
            else:
                break
            start = j
        row = col = None
        end = i + 1
        for j in range(i + 1, min(len(words), i + 1 + _AFTER)):
            v = words[j]
            if v in SHAPES or v in _SINGULAR or v in COLOURS or v in SIZES or v in NUMBER_WORDS:
                break
            if v in _ROWS and row is None:
                row, end = _ROWS[v], j + 1
            elif v in _COLS and col is None:
                col, end = _COLS[v], j + 1
            elif v == "centre":
                # "in the centre" is the middle cell; "top centre" is the middle column.
                if row is None:
                    row = 1
                col, end = 1, j + 1
        claims.append(
            Claim(
                " ".join(words[start:end]),
                shape,
                colour,
                size,
                row,
                col,
                count if plural or count is not None else None,
            )
        )
    return claims


def check_claim(objects: Sequence[dict[str, Any]], claim: Claim) -> str | None:
    """None when the scene bears the claim out; otherwise what the scene has instead, in words."""
    if claim.count is not None:
        # A counted mention ("two red circles") is about how many, wherever they are.
        n = sum(claim.matches(o, with_place=claim.row is not None or claim.col is not None) for o in objects)
        return None if n == claim.count else f"the scene has {n}"
    if any(claim.matches(o) for o in objects):
        return None
    near = [o for o in objects if o["shape"] == claim.shape]
    if not near:
        return f"the scene has no {claim.shape}"
    return "the scene has " + " and ".join(describe_object(o) for o in near[:2])


def check_caption(objects: Sequence[dict[str, Any]], text: str) -> tuple[int, list[tuple[Claim, str]]]:
    """(claims checked, the false ones with what the scene has instead)."""
    claims = caption_claims(text)
    wrong = [(c, why) for c in claims if (why := check_claim(objects, c)) is not None]
    return len(claims), wrong
