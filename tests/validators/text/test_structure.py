"""The structure validator: required fields, QA items and types, documents (OBELICS) and plans."""

from __future__ import annotations

import pytest

from mmsynth.prompts import TemplateRegistry
from mmsynth.validators import build_validator

VQA_SCHEMA = TemplateRegistry().get("vqa.pairs").output_schema


def check(make_candidate, parsed, spec=None, **kw):
    v = build_validator({"type": "structure", **(spec or {})})
    return v.check([make_candidate("{}", parsed=parsed, **kw)])[0]


def pairs(*items):
    return {"pairs": list(items)}


def item(q="How many circles?", a="2", t="counting"):
    return {"question": q, "answer": a, "type": t}


def test_good_qa_is_kept(make_candidate):
    v = check(make_candidate, pairs(item(), item("What colour is the square?", "red", "colour")))
    assert v.keep and v.reason is None


@pytest.mark.parametrize(
    ("parsed", "reason"),
    [
        (pairs(), "qa: 0 items < 1"),
        (pairs(item(), item(a="  ")), "qa: pairs[1].answer is empty"),
        (pairs(item(), {"question": "Q?", "type": "other"}), "qa: pairs[1].answer is missing"),
        (pairs(item(a=["2"])), "qa: pairs[0].answer is not a string"),
        (
            pairs(item(t="counting"), item(t="counting"), item(t="feelings")),
            "qa: pairs[2].type 'feelings' is not one of counting, colour, spatial, ocr, reasoning, other",
        ),
        (pairs("just a string"), "qa: pairs[0] is not an object"),
        ([{"question": "Q?", "answer": ""}], "qa: items[0].answer is empty"),
    ],
)
def test_bad_qa_is_rejected_naming_the_item(make_candidate, parsed, reason):
    v = check(make_candidate, parsed)
    assert not v.keep and v.reason == reason


def test_qa_settings(make_candidate):
    untyped = pairs({"question": "Q?", "answer": "A"})
    assert check(make_candidate, untyped).keep
    assert check(make_candidate, untyped, {"require_type": True}).reason == "qa: pairs[0].type is missing"
    assert check(make_candidate, pairs(item(t="mood")), {"answer_types": None}).keep
    assert check(make_candidate, pairs(item(), item()), {"max_items": 1}).reason == "qa: 2 items > 1"


def test_required_fields_and_unparsed_structured_output(make_candidate):
    spec = {"required": ["title", "meta.source"]}
    assert check(make_candidate, {"title": "T", "meta": {"source": "x"}}, spec).keep
    assert check(make_candidate, {"title": "T", "meta": {}}, spec).reason == "missing field: meta.source"
    assert (
        check(make_candidate, {"title": " ", "meta": {"source": "x"}}, spec).reason == "missing field: title"
    )
    # A structured task whose output did not parse fails closed; a plain caption is not structured.
    bad_json = check(make_candidate, None, output_schema=VQA_SCHEMA, parse_error="truncated")
    assert not bad_json.keep and bad_json.reason == "not JSON: truncated"
    assert check(make_candidate, None).keep


def doc(texts, images, title="A walk"):
    return {"title": title, "texts": texts, "images": images}


def test_good_document_is_kept(make_candidate, image_a, image_b):
    parsed = doc(["Intro.", None, "Middle.", None], [None, image_a.sha256, None, image_b.sha256])
    assert check(make_candidate, parsed, images=(image_a, image_b)).keep


@pytest.mark.parametrize(
    ("texts", "images", "reason"),
    [
        (["a", None], [None], "document: 2 texts but 1 images (they align by position)"),
        (["a", "b"], [None, "h1"], "document: position 1 has both a text and an image"),
        (["a", None], [None, None], "document: position 1 has neither a text nor an image"),
        (["a", None, None], [None, "h1", "h1"], "document: images[2] repeats images[1]"),
        (["a", "b"], [None, None], "document: 0 images < 1"),
        ([None], ["h1"], "document: 0 texts < 1"),
        (["", None], [None, "h1"], "document: texts[0] is empty"),
    ],
)
def test_misaligned_documents_are_rejected(make_candidate, texts, images, reason):
    v = check(make_candidate, doc(texts, images))
    assert not v.keep and v.reason == reason


def test_document_slots_must_match_the_record_images(make_candidate, image_a, image_b):
    parsed = doc(["Intro.", None], [None, image_a.sha256])
    v = check(make_candidate, parsed, images=(image_b,))
    assert not v.keep and v.reason == "document: its 1 image slots do not match the record's 1 images"
    adjacent = doc(["a", None, None], [None, image_a.sha256, image_b.sha256])
    assert check(make_candidate, adjacent).keep
    v = check(make_candidate, adjacent, {"max_adjacent_images": 1})
    assert v.reason == "document: 2 images in a row at position 2 (max 1)"


def seg_text(t="A paragraph."):
    return {"type": "text", "text": t}


def seg_image(d="A red fox in snow, photo."):
    return {"type": "image", "description": d}


def test_plans(make_candidate):
    good = {
        "title": "Foxes",
        "segments": [seg_text(), seg_image(), seg_text("More."), seg_image("A fox den.")],
    }
    assert check(make_candidate, good).keep
    cases = {
        "plan: segments[3] repeats the image of segments[1]": [
            seg_text(),
            seg_image(),
            seg_text("x"),
            seg_image("a red fox in snow photo"),
        ],
        "plan: segments[1].description is missing or empty": [
            seg_text(),
            {"type": "image", "description": ""},
        ],
        "plan: segments[1].type 'video' is not 'text' or 'image'": [
            seg_text(),
            {"type": "video", "url": "x"},
        ],
        "plan: 0 images < 1": [seg_text(), seg_text("b")],
        "plan: segments[2] repeats the image of segments[1]": [
            seg_text(),
            {"type": "image", "description": "one", "slot": 1},
            {"type": "image", "description": "two", "slot": 1},
        ],
    }
    for reason, segments in cases.items():
        v = check(make_candidate, {"title": "T", "segments": segments})
        assert not v.keep and v.reason == reason, segments
