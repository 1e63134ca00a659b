"""Training data of the scene teacher: rendered scenes, the built-in prompts they are asked, exact answers.

Every example is one scene of the rendered-scene world (generators/scenes) asked one of the built-in
templates the shipped recipes use, rendered by the real template code and laid out as the in-process
backend lays out a chat, with the answer written from the scene's exact truth:

    caption.short     the scene's exact description as a sentence (`describe_scene`)
    caption.dense     how many shapes of which kinds on which background, then one sentence per object
    caption.grounded  JSON {"caption", "objects"} valid under the template's output schema
    vqa.pairs         JSON {"pairs": [...]}: a counting, a colour and a spatial question from `scene_qa`,
                      all answerable by `answer_question` (what the scene_grounding validator checks)

Training scenes come from indices TRAIN_START and up, far above every index the project evaluates on
(recipes, tests, benchmarks and the trainer's controls use 0..200_000), so no held-out scene is seen.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Sequence
from typing import Any

from mmsynth.generators.scenes.truth import PLURAL, describe_object, describe_scene, scene_qa
from mmsynth.generators.scenes.world import BACKGROUNDS, random_scene, render_scene, scene_rng

TRAIN_START = 10_000_000  # first training scene index; evaluation anywhere in the project stays below
VISION_START = 20_000_000  # scenes of the vision tower's stage (disjoint from the language stage's)
SCENE_SEED = 0  # the recipes' seed: training scenes differ from theirs by index alone
TEMPLATES = ("caption.short", "caption.dense", "caption.grounded", "vqa.pairs")
# What the batches ask, in turn: vqa.pairs both with the scene hint (recipes/qa.yaml, quickstart.yaml:
# `inputs: {scene: description}`) and from the image alone (recipes/proving-ground.yaml).
SCHEDULE = (
    ("caption.short", False),
    ("vqa.pairs", True),
    ("caption.dense", False),
    ("vqa.pairs", False),
    ("caption.grounded", False),
)
QA_TYPES = {"count": "counting", "colour": "colour", "position": "spatial"}
NUMBER = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def count_phrase(objects: Sequence[dict[str, Any]]) -> str:
    """'two circles and a square': shapes in order of first appearance."""
    counts: dict[str, int] = {}
    for o in objects:
        counts[o["shape"]] = counts.get(o["shape"], 0) + 1
    parts = [f"a {s}" if n == 1 else f"{NUMBER[n]} {PLURAL[s]}" for s, n in counts.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def short_caption(objects: Sequence[dict[str, Any]]) -> str:
    """'A large red circle at the top left and a small blue square in the centre.'"""
    return _cap(describe_scene(objects)) + "."


def dense_caption(objects: Sequence[dict[str, Any]], background: str) -> str:
    k = len(objects)
    head = f"{_cap(NUMBER[k])} shape{'' if k == 1 else 's'} on a {background} background: {count_phrase(objects)}."
    body = []
    for o in objects:
        where = describe_object(o).split(o["shape"], 1)[1]  # ' at the top left' / ' in the centre'
        body.append(f"A {o['size']} {o['colour']} {o['shape']} is{where}.")
    return " ".join([head, *body])


def grounded_caption(objects: Sequence[dict[str, Any]], background: str) -> str:
    caption = f"{_cap(count_phrase(objects))} on a {background} background. {short_caption(objects)}"
    return json.dumps({"caption": caption, "objects": [describe_object(o)[2:] for o in objects]})


def qa_pairs(objects: Sequence[dict[str, Any]], rng: random.Random, n: int = 3) -> str:
    """n pairs (counting, colour, spatial, in turn), each question drawn at random among the exact ones."""
    qa = scene_qa(objects)
    by_kind = {k: [q for q in qa if q["kind"] == k] for k in QA_TYPES}
    picked: list[dict[str, str]] = []
    for i in range(n):
        kind = list(QA_TYPES)[i % len(QA_TYPES)]
        pool = [q for q in by_kind[kind] if q not in picked] or [q for q in qa if q not in picked]
        picked.append(rng.choice(pool))
    pairs = [{"question": q["question"], "answer": q["answer"], "type": QA_TYPES[q["kind"]]} for q in picked]
    return json.dumps({"pairs": pairs})


def answer(template: str, scene: dict[str, Any], rng: random.Random) -> str:
    objects, background = scene["objects"], scene["background"]
    if template == "caption.short":
        return short_caption(objects)
    if template == "caption.dense":
        return dense_caption(objects, background)
    if template == "caption.grounded":
        return grounded_caption(objects, background)
    if template == "vqa.pairs":
        return qa_pairs(objects, rng)
    raise ValueError(f"no scene answers for template {template!r}")


def training_scene(index: int, max_objects: int, size: int = 64) -> dict[str, Any]:
    """Scene `index` of SCENE_SEED as make_scene draws it (objects, background), with a PIL image."""
    rng = scene_rng(SCENE_SEED, index)
    objects = random_scene(rng, max_objects=max_objects)
    background = rng.choice(sorted(BACKGROUNDS))
    return {
        "objects": objects,
        "background": background,
        "description": describe_scene(objects),
        "image": render_scene(objects, size, background),
    }


# --- prompts -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _registry():
    from mmsynth.prompts.registry import TemplateRegistry

    return TemplateRegistry()


@functools.lru_cache(maxsize=1)
def _blank_image():
    from mmsynth.prompts.media import ImageRef

    return ImageRef.from_pil(render_scene([], 64))


def render_prompt(template: str, scene_text: str | None = None, image=None):
    """The template rendered as a recipe renders it (`vqa.pairs` with `inputs: {scene: description}`)."""
    from mmsynth.prompts.render import render_template

    variables: dict[str, Any] = {"image": image if image is not None else _blank_image()}
    if template == "vqa.pairs" and scene_text is not None:
        variables["scene"] = scene_text
    return render_template(_registry().get(template), variables)


def chat_messages(prompt) -> list[dict[str, Any]]:
    """A RenderedPrompt as processor chat messages, as the transformers backend builds them for a VLM."""
    from mmsynth.prompts.messages import ImagePart, TextPart

    return [
        {
            "role": m.role,
            "content": [
                {"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"}
                for p in m.parts
                if isinstance(p, (TextPart, ImagePart))
            ],
        }
        for m in prompt.messages
    ]


def prompt_chunks(chat_text, split, min_chars: int = 24) -> list[str]:
    """The fixed instruction texts of the templates (each chat text split at special tokens and at the
    scene hint), at least `min_chars` long: the tokenizer gives each one token, so prompts stay short."""
    hole = "\x01scene\x01"
    prompts = [render_prompt(t) for t in TEMPLATES] + [render_prompt("vqa.pairs", hole)]
    chunks = set()
    for prompt in prompts:
        for piece in split(chat_text(chat_messages(prompt))):
            chunks.update(part for part in piece.split(hole) if len(part) >= min_chars)
    return sorted(chunks)


def tokenizer_corpus(
    base: list[str], chat_text, split, *, scenes: int, prompt_repeats: int, vqa_prompts: int, max_objects: int
) -> list[str]:
    """Lines to train the BPE on: `base`, each fixed prompt `prompt_repeats` times, answers of `scenes`
    training scenes and the vqa prompts of the first `vqa_prompts` of them (text split at special tokens)."""
    lines = list(base)
    fixed = [chat_text(chat_messages(render_prompt(t))) for t in TEMPLATES if t != "vqa.pairs"]
    for _ in range(prompt_repeats):
        for text in fixed:
            lines += split(text)
    rng = random.Random(0)
    for i in range(scenes):
        s = training_scene(TRAIN_START + i, max_objects)
        lines += [answer(t, s, rng) for t in TEMPLATES]
        if i < vqa_prompts:
            lines += split(chat_text(chat_messages(render_prompt("vqa.pairs", s["description"]))))
    return lines
