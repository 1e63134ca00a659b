"""Caption claims against the exact scene: the truth passes, each kind of hallucination is caught."""

from __future__ import annotations

import pytest

from mmsynth.generators.scenes.claims import caption_claims, check_caption
from mmsynth.generators.scenes.world import make_scene

OBJECTS = [
    {"shape": "circle", "colour": "red", "size": "large", "row": 0, "col": 0, "position": "top left"},
    {"shape": "circle", "colour": "blue", "size": "small", "row": 1, "col": 1, "position": "centre"},
    {"shape": "square", "colour": "red", "size": "small", "row": 2, "col": 2, "position": "bottom right"},
]


def test_every_exact_caption_is_borne_out():
    for i in range(300):
        s = make_scene(3, i, max_objects=5)
        checked, wrong = check_caption(s["objects"], s["description"])
        assert (checked, wrong) == (len(s["objects"]), []), s["description"]


def test_mentions_are_parsed_with_count_size_colour_and_place():
    (a, b) = caption_claims("Two red circles, and a small blue circle in the centre.")
    assert (a.count, a.colour, a.shape, a.row) == (2, "red", "circle", None)
    assert (b.count, b.size, b.colour, b.row, b.col) == (None, "small", "blue", 1, 1)


@pytest.mark.parametrize(
    ("caption", "why"),
    [
        ("a large green circle at the top left", "the scene has a large red circle at the top left"),
        ("a small blue circle at the bottom left", "the scene has a large red circle"),
        ("a red triangle", "the scene has no triangle"),
        ("three circles", "the scene has 2"),
        ("a large red square at the bottom right", "the scene has a small red square at the bottom right"),
    ],
)
def test_each_kind_of_hallucination_is_caught(caption, why):
    checked, wrong = check_caption(OBJECTS, caption)
    assert checked == 1 and len(wrong) == 1
    assert wrong[0][1].startswith(why)


def test_prose_without_scene_words_claims_nothing():
    assert check_caption(OBJECTS, "A simple drawing on a white background.") == (0, [])
