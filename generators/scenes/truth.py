"""Exact facts about a rendered shape scene, and answers to questions about it.

A scene is a list of objects (dicts with shape, colour, size, row, col), as factory.seeds.scenes draws
them. The vocabulary, captions and the exact QA list live here, below the factory, so that the seed
source and the grounding validators share one definition of what a scene says.

`answer_question` goes further than `scene_qa`: it answers free-form counting, colour, shape,
position and yes/no questions a model may write ("How many small red circles are there?"), and
returns None for any question it does not fully understand, so a check never guesses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
ROWS = ("top", "middle", "bottom")
COLS = ("left", "centre", "right")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}


def position_name(row: int, col: int) -> str:
    """'top left', 'middle right', ... and 'centre' for the middle cell."""
    return "centre" if (row, col) == (1, 1) else f"{ROWS[row]} {COLS[col]}"


def describe_object(obj: dict[str, Any]) -> str:
    """'a large red circle at the top left' ('in the centre' for the middle cell)."""
    pos = position_name(obj["row"], obj["col"])
    where = "in the centre" if pos == "centre" else f"at the {pos}"
    return f"a {obj['size']} {obj['colour']} {obj['shape']} {where}"


def describe_scene(objects: Sequence[dict[str, Any]]) -> str:
    """The exact caption: every object, in row-major order, joined as 'x, y and z'."""
    parts = [describe_object(o) for o in objects]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def scene_counts(
    objects: Sequence[dict[str, Any]], shapes: Sequence[str] = SHAPES, colours: Sequence[str] = COLOURS
) -> dict[str, int]:
    """Count of every shape and colour in `shapes` and `colours` (zeros included)."""
    counts = {name: 0 for name in [*shapes, *colours]}
    for o in objects:
        counts[o["shape"]] = counts.get(o["shape"], 0) + 1
        counts[o["colour"]] = counts.get(o["colour"], 0) + 1
    return counts


def scene_qa(
    objects: Sequence[dict[str, Any]], shapes: Sequence[str] = SHAPES, colours: Sequence[str] = COLOURS
) -> list[dict[str, str]]:
    """Question/answer pairs whose answers are exact: only questions the scene answers unambiguously.

    count: total objects, each shape in `shapes`, each colour present; colour: of each shape that
    occurs once; position: of each (colour, shape) that occurs once. Each item: question, answer, kind.
    """
    qa: list[dict[str, str]] = []
    total = len(objects)
    qa.append({"question": "How many objects are there?", "answer": str(total), "kind": "count"})
    for shape in shapes:
        n = sum(o["shape"] == shape for o in objects)
        qa.append({"question": f"How many {PLURAL[shape]} are there?", "answer": str(n), "kind": "count"})
    for colour in colours:
        n = sum(o["colour"] == colour for o in objects)
        if n:
            qa.append(
                {"question": f"How many {colour} objects are there?", "answer": str(n), "kind": "count"}
            )
    for shape in shapes:
        same = [o for o in objects if o["shape"] == shape]
        if len(same) == 1:
            qa.append(
                {"question": f"What colour is the {shape}?", "answer": same[0]["colour"], "kind": "colour"}
            )
    for o in objects:
        same = [p for p in objects if p["shape"] == o["shape"] and p["colour"] == o["colour"]]
        if len(same) == 1:
            qa.append(
                {
                    "question": f"Where is the {o['colour']} {o['shape']}?",
                    "answer": position_name(o["row"], o["col"]),
                    "kind": "position",
                }
            )
    return qa


# --- free-form questions ---------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")
# Spelling variants folded before parsing, so "color", "center" and "gray" read like the scene's words.
_ALIASES = {
    "color": "colour",
    "colors": "colours",
    "coloured": "colour",
    "colored": "colour",
    "center": "centre",
    "central": "centre",
    "big": "large",
    "little": "small",
    "upper": "top",
    "lower": "bottom",
}
_SINGULAR = {plural: shape for shape, plural in PLURAL.items()}
_ROW_WORDS = {"top": 0, "middle": 1, "bottom": 2}
_COL_WORDS = {"left": 0, "right": 2}
NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
        ]
    )
}
NUMBER_WORDS.update({"no": 0, "none": 0})
# Words that carry no condition: a question made of these plus scene words is fully understood.
_FILLER = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "there",
        "how",
        "many",
        "what",
        "which",
        "where",
        "in",
        "on",
        "at",
        "of",
        "image",
        "picture",
        "scene",
        "this",
        "do",
        "does",
        "you",
        "see",
        "can",
        "be",
        "visible",
        "shown",
        "drawn",
        "total",
        "altogether",
        "object",
        "objects",
        "shape",
        "shapes",
        "thing",
        "things",
        "located",
        "placed",
        "positioned",
        "position",
        "any",
        "colour",
        "kind",
        "type",
        "sort",
    ]
)


def normalise_words(text: str) -> list[str]:
    """Lower-case word tokens with spelling variants folded ('Color' -> 'colour', 'center' -> 'centre')."""
    return [_ALIASES.get(w, w) for w in _WORD.findall(text.lower())]


def answer_question(objects: Sequence[dict[str, Any]], question: str) -> tuple[str, str] | None:
    """(kind, exact answer) for a question the scene answers, or None when it is not understood.

    Kinds: count (a number), colour, shape, position (as position_name gives it), exists ('yes'/'no').
    A question with any word that is neither a scene word nor filler is not understood (None); so is a
    colour/shape/position question whose object is missing or not unique.
    """
    words = normalise_words(question)
    if not words:
        return None
    for qa in scene_qa(objects):
        if normalise_words(qa["question"]) == words:
            return _KINDS[qa["kind"]], qa["answer"]
    kind = _question_kind(words)
    if kind is None:
        return None
    colours, shapes, sizes, rows, cols, rest = set(), set(), set(), set(), set(), []
    for i, w in enumerate(words):
        if w in COLOURS:
            colours.add(w)
        elif w in SHAPES or w in _SINGULAR:
            shapes.add(_SINGULAR.get(w, w))
        elif w in SIZES:
            sizes.add(w)
        elif w in _ROW_WORDS:
            rows.add(_ROW_WORDS[w])
        elif w in _COL_WORDS:
            cols.add(_COL_WORDS[w])
        elif w == "centre":
            # "centre" alone is the middle cell; after a row word ("top centre") it is the middle column.
            if i > 0 and words[i - 1] in _ROW_WORDS:
                cols.add(1)
            else:
                rows.add(1)
                cols.add(1)
        elif w not in _FILLER and w not in _KIND_WORDS:
            rest.append(w)
    # Two values of one attribute ("red or blue", "left and right") is a compound question: not handled.
    if rest or any(len(s) > 1 for s in (colours, shapes, sizes, rows, cols)):
        return None

    def matches(o: dict[str, Any]) -> bool:
        return (
            (not colours or o["colour"] in colours)
            and (not shapes or o["shape"] in shapes)
            and (not sizes or o["size"] in sizes)
            and (not rows or o["row"] in rows)
            and (not cols or o["col"] in cols)
        )

    found = [o for o in objects if matches(o)]
    if kind == "count":
        return "count", str(len(found))
    if kind == "exists":
        return "exists", "yes" if found else "no"
    if len(found) != 1:
        return None
    obj = found[0]
    if kind == "colour" and not colours:
        return "colour", obj["colour"]
    if kind == "shape" and not shapes:
        return "shape", obj["shape"]
    if kind == "position" and not (rows or cols):
        return "position", position_name(obj["row"], obj["col"])
    return None


_KINDS = {"count": "count", "colour": "colour", "position": "position"}
_KIND_WORDS = frozenset({"colour", "shape", "where", "many"})


def _question_kind(words: list[str]) -> str | None:
    text = " ".join(words)
    if text.startswith("how many"):
        return "count"
    if text.startswith(("what colour", "which colour")):
        return "colour"
    if text.startswith(("what shape", "which shape", "what kind of shape", "what type of shape")):
        return "shape"
    if words[0] == "where":
        return "position"
    if text.startswith(("is there", "are there")):
        return "exists"
    return None


def answer_is_correct(kind: str, truth: str, answer: str) -> bool:
    """Whether a model's short answer says the same as the exact `truth` of a question of `kind`.

    count: the one number in the answer (digits or words, 'no'/'none' = 0); colour/shape: the one
    colour/shape word; position: the same row and column words; exists: a leading yes or no.
    """
    words = normalise_words(answer)
    if kind == "count":
        numbers = {
            int(w) if w.isdigit() else NUMBER_WORDS[w] for w in words if w.isdigit() or w in NUMBER_WORDS
        }
        return numbers == {int(truth)}
    if kind == "colour":
        return {w for w in words if w in COLOURS} == {truth}
    if kind == "shape":
        return {_SINGULAR.get(w, w) for w in words if w in SHAPES or w in _SINGULAR} == {truth}
    if kind == "position":
        said = {w for w in words if w in _ROW_WORDS or w in _COL_WORDS or w == "centre"}
        if truth == "centre":
            return bool(said) and said <= {"centre", "middle"}
        return said == set(truth.split())
    if kind == "exists":
        return bool(words) and words[0] in ("yes", "no") and words[0] == truth
    raise ValueError(f"unknown question kind {kind!r}")
