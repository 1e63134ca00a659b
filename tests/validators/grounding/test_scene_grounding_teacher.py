"""scene_grounding on what the trained teacher really writes: its right answers kept, its wrong ones rejected.

The teacher (`tiny:scene-vlm`, built once per session) captions and questions held-out scenes; every
output is scored against the scene's exact truth independently of the validator, and the validator's
verdicts must agree: nothing exact is rejected, what is rejected is wrong, and most of what is wrong
is caught (an omitted object is not a false mention, so a caption can be wrong and still pass).
"""

from __future__ import annotations

import json

import pytest

from mmsynth.generators.scenes.truth import answer_is_correct, answer_question
from mmsynth.generators.scenes.world import make_scene
from mmsynth.generators.tiny import scene_data as sd
from mmsynth.validators import Candidate, build_validator

pytestmark = pytest.mark.slow
SCENES = 64


@pytest.fixture(scope="module")
def outputs(scene_vlm):
    """(scene, template, text) for captions and image-only QA, greedy and sampled."""
    from mmsynth.generators.inprocess.transformers_backend import TransformersBackend
    from mmsynth.generators.types import GenerationRequest, SamplingParams

    backend = TransformersBackend("tiny:scene-vlm", path=str(scene_vlm), batch_size=32, device="cpu")
    world = [make_scene(0, i, max_objects=3) for i in range(SCENES)]
    rows = []
    for template, max_tokens in (("caption.short", 24), ("vqa.pairs", 48)):
        for temperature in (0.0, 0.7):
            requests = [
                GenerationRequest(
                    sd.render_prompt(template, image=s["image"]),
                    SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=i),
                    key=f"{template}:{temperature}:{i}",
                )
                for i, s in enumerate(world)
            ]
            for s, gen in zip(world, backend.generate_sync(requests), strict=True):
                rows.append((s, template, gen.outputs[0].text.strip()))
    backend.close()
    return rows


def _verdict(validator, scene, template: str, text: str):
    parsed = None
    if template == "vqa.pairs":
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
    seed = {"objects": scene["objects"], "description": scene["description"]}
    return validator.check(
        [Candidate(id="r", task=template, text=text, finish_reason="stop", parsed=parsed, seed=seed)]
    )[0]


def test_captions_exact_are_kept_and_rejected_ones_are_wrong(outputs):
    validator = build_validator({"type": "scene_grounding", "captions": True})
    kept_exact = rejected = wrong = caught = 0
    for scene, template, text in outputs:
        if template != "caption.short":
            continue
        exact = text == sd.short_caption(scene["objects"])
        verdict = _verdict(validator, scene, template, text)
        if exact:
            assert verdict.keep, (text, verdict.reason)
            kept_exact += 1
        else:
            wrong += 1
            caught += not verdict.keep
        if not verdict.keep:
            rejected += 1
            assert not exact and verdict.reason.startswith("hallucination"), (text, verdict.reason)
    # A good but imperfect teacher: many exact captions, some wrong ones, most wrong ones caught.
    assert kept_exact >= SCENES // 2, kept_exact
    assert rejected >= 5, rejected
    assert caught / wrong >= 0.6, (caught, wrong)


def test_qa_kept_exactly_when_every_checkable_answer_is_true(outputs):
    validator = build_validator({"type": "scene_grounding"})
    kept = rejected = 0
    for scene, template, text in outputs:
        if template != "vqa.pairs":
            continue
        try:
            pairs = json.loads(text)["pairs"]
        except (ValueError, KeyError, TypeError):
            continue  # not JSON: json_schema's business, not grounding's
        truths = [(answer_question(scene["objects"], p["question"]), p["answer"]) for p in pairs]
        checked = [(t, a) for t, a in truths if t is not None]
        all_right = all(answer_is_correct(t[0], t[1], a) for t, a in checked)
        verdict = _verdict(validator, scene, template, text)
        assert verdict.keep == (not checked or all_right), (text, verdict.reason)
        if checked:
            kept += verdict.keep
            rejected += not verdict.keep
    assert kept >= 10 and rejected >= 10, (kept, rejected)
