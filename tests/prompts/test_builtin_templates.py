"""Every shipped template loads, lints clean, renders with sample inputs, and has a decoder-friendly schema."""

from __future__ import annotations

import dataclasses
from importlib.resources import files
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from mmsynth.prompts import ImagePart, TemplateRegistry, lint_template, load_template, render_template
from mmsynth.prompts.frontmatter import SAMPLING_KEYS

BUILTIN_DIR = Path(str(files("mmsynth.prompts.builtin")))
BUILTIN_FILES = sorted(BUILTIN_DIR.glob("*.j2"))
SAMPLE_TEXT = {
    "scene": "A kitchen with a kettle on the stove.",
    "caption": "A red square.",
    "topic": "How honeybees make honey",
    "idea": "a lighthouse in a storm",
    "prompt": "a red fox in the snow, watercolour",
    "instruction": "What colour is the square?",
    "response": "The square is red.",
    "num_pairs": 4,
}
# One valid answer per structured template, and one that its schema must refuse.
VALID_OUTPUTS = {
    "caption.grounded": (
        {"caption": "A red square.", "objects": ["red square"]},
        {"caption": "A red square.", "objects": []},
    ),
    "vqa.pairs": (
        {"pairs": [{"question": "What colour is the square?", "answer": "red", "type": "colour"}]},
        {"pairs": [{"question": "Q?", "answer": "A", "type": "color"}]},
    ),
    "interleaved.plan": (
        {
            "title": "Bees",
            "segments": [
                {"type": "text", "text": "Bees make honey."},
                {"type": "image", "description": "A bee on a flower."},
            ],
        },
        {"title": "Bees", "segments": [{"type": "image", "text": "x"}, {"type": "text", "text": "y"}]},
    ),
    "judge.rubric": ({"reason": "Correct.", "score": 5}, {"reason": "Correct.", "score": 6}),
}


def sample_inputs(template, image):
    values = {}
    for name, spec in template.inputs.items():
        values[name] = image if spec.type == "image" else SAMPLE_TEXT[name]
    return values


def test_the_expected_builtins_ship():
    assert [p.name for p in BUILTIN_FILES] == [
        "caption.dense@1.j2",
        "caption.grounded@1.j2",
        "caption.short@1.j2",
        "image.render@1.j2",
        "interleaved.plan@1.j2",
        "judge.rubric@1.j2",
        "t2i.expand@1.j2",
        "vqa.pairs@1.j2",
    ]


@pytest.mark.parametrize("path", BUILTIN_FILES, ids=lambda p: p.stem)
def test_builtin_loads_lints_clean_and_renders(path, red):
    t = load_template(path)
    assert path.name == f"{t.ref}.j2"
    assert t.description and t.task
    # image.render is a bare prompt for a diffusion model: no system block, no text sampling defaults.
    bare = t.task == "image"
    assert bare or t.sampling.get("max_tokens")
    assert lint_template(path, available_vars=set(t.inputs)) == []
    prompt = render_template(t, sample_inputs(t, red))
    roles = [m.role for m in prompt.messages]
    assert roles == (["user"] if bare else ["system", "user"])
    user = prompt.messages[-1]
    assert user.text.strip()
    image_inputs = [n for n, s in t.inputs.items() if s.type == "image"]
    assert user.images == (red,) * len(image_inputs)
    if image_inputs and not t.inputs[image_inputs[0]].optional:
        assert isinstance(user.parts[0], ImagePart), "a required image goes first in the user message"
    assert "None" not in user.text  # an optional input left out must not print as "None"
    # Every optional input may be left out.
    required = {n: v for n, v in sample_inputs(t, red).items() if not t.inputs[n].optional}
    assert render_template(t, required).messages[-1].text.strip()


@pytest.mark.parametrize("ref", sorted(VALID_OUTPUTS))
def test_builtin_schema_accepts_good_and_refuses_bad_output(ref):
    schema = TemplateRegistry().get(ref).output_schema
    good, bad = VALID_OUTPUTS[ref]
    validator = Draft202012Validator(schema)
    assert validator.is_valid(good)
    assert not validator.is_valid(bad)


def test_structured_templates_are_the_expected_ones():
    structured = {t.id for t in TemplateRegistry().list() if t.output_schema is not None}
    assert structured == set(VALID_OUTPUTS)


def _objects(schema):
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            yield schema
        for value in schema.values():
            yield from _objects(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _objects(item)


def _keys(schema):
    if isinstance(schema, dict):
        yield from schema
        for value in schema.values():
            yield from _keys(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _keys(item)


@pytest.mark.parametrize("ref", sorted(VALID_OUTPUTS))
def test_builtin_schema_is_simple_for_constrained_decoding(ref):
    schema = TemplateRegistry().get(ref).output_schema
    assert not {"pattern", "patternProperties", "$ref", "if", "not", "format"} & set(_keys(schema))
    for obj in _objects(schema):
        assert obj.get("additionalProperties") is False
        assert set(obj["required"]) == set(obj["properties"])


def test_vqa_pairs_asks_for_what_the_schema_allows(red):
    t = TemplateRegistry().get("vqa.pairs")
    assert t.output_schema["properties"]["pairs"]["maxItems"] == 10
    text = lambda **kw: render_template(t, {"image": red, **kw}).messages[-1].text  # noqa: E731
    assert "Write 3 question-answer pairs" in text()
    assert "Write 1 question-answer pair " in text(num_pairs=1)
    assert "Write 10 question-answer pairs" in text(num_pairs=50)
    assert "Caption: A red square." in text(caption="A red square.") and "Caption:" not in text()


def test_dense_caption_scene_is_a_hidden_hint(red):
    t = TemplateRegistry().get("caption.dense")
    without = render_template(t, {"image": red}).messages[-1].text
    with_scene = render_template(t, {"image": red, "scene": "Two cats on a sofa."}).messages[-1].text
    assert "Two cats on a sofa." in with_scene and "Never mention it" in with_scene
    assert "Hidden context" not in without


def test_judge_image_is_optional(red):
    t = TemplateRegistry().get("judge.rubric")
    text_only = render_template(t, {"instruction": "Say hi.", "response": "Hi."})
    assert text_only.images == ()
    assert render_template(t, {"instruction": "Say hi.", "response": "Hi.", "image": red}).images == (red,)


def test_sampling_keys_are_known_to_the_backends():
    from mmsynth.generators.types import SamplingParams

    assert set(SAMPLING_KEYS) <= {f.name for f in dataclasses.fields(SamplingParams)}
