"""Quality of the scene teacher on held-out scenes, asked through the real in-process backend.

    python -m mmsynth.generators.tiny.scene_eval [DIR] [--scenes N] [--temperature T]

Held-out scenes are those the recipes render (seed 0, indices 0..N-1, 1-4 objects): the teacher never
trained on them (scene_data.TRAIN_START). Each template is rendered by the template code, sent as a
GenerationRequest with the recipes' tightest max_tokens, and scored against the scene's exact truth:

    caption.short / caption.dense   exact: the text equals the exact answer
    caption.grounded                valid: JSON under the output schema; exact: equal to the exact JSON
    vqa.pairs (with the scene hint, and from the image alone)
                                    valid (as above); qa: share of the checkable answers that are right
                                    (truth.answer_question / answer_is_correct, as scene_grounding);
                                    exact: every checkable answer of the list right
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from typing import Any

from mmsynth.generators.scenes.truth import answer_is_correct, answer_question
from mmsynth.generators.scenes.world import make_scene
from mmsynth.generators.tiny import scene_data as sd

MAX_TOKENS = {"caption.short": 24, "caption.dense": 64, "caption.grounded": 64, "vqa.pairs": 48}
# (row name, template, with the scene hint): vqa.pairs as qa.yaml asks it and as proving-ground.yaml does.
TASKS = (
    ("caption.short", "caption.short", False),
    ("caption.dense", "caption.dense", False),
    ("caption.grounded", "caption.grounded", False),
    ("vqa.pairs", "vqa.pairs", True),
    ("vqa.pairs (image only)", "vqa.pairs", False),
)


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def schema_valid(value: Any, schema: dict | None) -> bool:
    import jsonschema

    if value is None:
        return False
    return schema is None or not any(jsonschema.Draft202012Validator(schema).iter_errors(value))


def score(template: str, scene: dict[str, Any], text: str, schema: dict | None) -> Counter:
    """Counts for one answer: n, exact, valid, qa_checked, qa_correct."""
    objects, background = scene["objects"], scene["background"]
    c: Counter = Counter(n=1)
    text = text.strip()
    if template == "caption.short":
        c["exact"] = text == sd.short_caption(objects)
    elif template == "caption.dense":
        c["exact"] = text == sd.dense_caption(objects, background)
    else:
        parsed = parse_json(text)
        c["valid"] = schema_valid(parsed, schema)
        if template == "caption.grounded":
            c["exact"] = c["valid"] and parsed == json.loads(sd.grounded_caption(objects, background))
        elif c["valid"]:
            checked = correct = 0
            for item in parsed["pairs"]:
                truth = answer_question(objects, item["question"])
                if truth is not None:
                    checked += 1
                    correct += answer_is_correct(truth[0], truth[1], item["answer"])
            c["qa_checked"], c["qa_correct"] = checked, correct
            c["exact"] = checked > 0 and correct == checked  # every checkable answer right
    return c


def evaluate(
    folder: str,
    scenes: int = 96,
    start: int = 0,
    seed: int = 0,
    temperature: float = 0.0,
    max_objects: int = 4,
) -> dict[str, dict[int, Counter]]:
    """{template: {object count: Counter}} for scenes start..start+scenes-1 of `seed`."""
    from mmsynth.generators.inprocess.transformers_backend import TransformersBackend
    from mmsynth.generators.types import GenerationRequest, SamplingParams

    backend = TransformersBackend("tiny:scene-vlm", path=str(folder), batch_size=32, device="cpu")
    world = [make_scene(seed, start + i, max_objects=max_objects) for i in range(scenes)]
    table: dict[str, dict[int, Counter]] = {}
    for name, template, hint in TASKS:
        requests = []
        for i, s in enumerate(world):
            prompt = sd.render_prompt(template, s["description"] if hint else None, image=s["image"])
            sampling = SamplingParams(
                temperature=temperature, top_p=1.0, max_tokens=MAX_TOKENS[template], seed=i
            )
            requests.append(GenerationRequest(prompt, sampling, key=f"{name}:{start + i}"))
        rows: dict[int, Counter] = defaultdict(Counter)
        for s, req, gen in zip(world, requests, backend.generate_sync(requests), strict=True):
            out = gen.outputs[0] if gen.outputs else None
            c = score(template, s, out.text if out else "", req.output_schema)
            c["truncated"] = out is not None and out.finish_reason == "length"
            rows[len(s["objects"])] += c
        table[name] = dict(sorted(rows.items()))
    backend.close()
    return table


def summary(table: dict[str, dict[int, Counter]]) -> dict[str, dict[str, float]]:
    """Shares over all scenes: exact, valid (JSON templates), qa (answer accuracy), by template."""
    out = {}
    for template, rows in table.items():
        total = sum(rows.values(), Counter())
        shares = {"exact": total["exact"] / total["n"], "truncated": total["truncated"] / total["n"]}
        if template.startswith(("caption.grounded", "vqa.pairs")):
            shares["valid"] = total["valid"] / total["n"]
        if total["qa_checked"]:
            shares["qa"] = total["qa_correct"] / total["qa_checked"]
        out[template] = shares
    return out


def format_table(table: dict[str, dict[int, Counter]]) -> str:
    """A Markdown table: one row per template, exact share by object count (and overall)."""
    counts = sorted({k for rows in table.values() for k in rows})
    head = "| template | metric | " + " | ".join(f"{k} obj" for k in counts) + " | all |"
    lines = [head, "|" + "---|" * (len(counts) + 3)]
    for template, rows in table.items():
        metrics = ["exact"] + (["valid"] if template.startswith(("caption.grounded", "vqa.pairs")) else [])
        metrics += ["qa"] if template.startswith("vqa.pairs") else []
        total = sum(rows.values(), Counter())
        for m in metrics:

            def share(c: Counter, m=m) -> str:
                if m == "qa":
                    return f"{c['qa_correct'] / c['qa_checked']:.0%}" if c["qa_checked"] else "-"
                return f"{c[m] / c['n']:.0%}"

            cells = [share(rows[k]) if k in rows else "-" for k in counts]
            lines.append(f"| {template} | {m} | " + " | ".join(cells) + f" | {share(total)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", nargs="?", help="model folder (default: build or reuse tiny:scene-vlm)")
    p.add_argument("--scenes", type=int, default=96)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="scene seed (recipes/proving-ground.yaml uses 1)")
    p.add_argument("--max-objects", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.0)
    args = p.parse_args(argv)
    folder = args.dir
    if folder is None:
        from mmsynth.generators.model_paths import resolve_model_path

        folder = resolve_model_path("tiny:scene-vlm")
    table = evaluate(folder, args.scenes, args.start, args.seed, args.temperature, args.max_objects)
    print(format_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
