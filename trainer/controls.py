"""Controls that show the gain measurement works: correct synthetic captions help, shuffled ones do not.

Data: rendered one-object scenes (generators/scenes/world.py), whose descriptions are exact. The
trainer reads no other layer, so the caller hands in the scene maker (`make_scene(seed, index, ...)`). The "real"
data is a few labelled scenes; the synthetic data is more scenes with their exact descriptions
(positive) or with the same descriptions shuffled across images (negative: same words, no grounding).
Regime: few-shot fine-tuning, k real examples +/- the synthetic pool, every arm the same number of steps.
Evaluation: 0-shot captioning of held-out scenes, CIDEr-D, paired bootstrap over seeds and scenes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsynth.trainer.data import Example, caption_example
from mmsynth.trainer.gain import GainConfig, run_gain
from mmsynth.trainer.pools import Pool, add_pool, baseline_pool
from mmsynth.trainer.student import TrainConfig

SCENE_SEED = 7
# Index ranges keep the three sets of scenes disjoint.
REAL_START, SYNTH_START, EVAL_START = 0, 10_000, 20_000


@dataclass
class ControlConfig:
    """The control protocol; the defaults are what bench/gain_controls.py runs (the test runs one short seed)."""

    real: int = 8
    synthetic: int = 120
    eval: int = 48
    seeds: int = 3
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=800, batch_size=8, lr=3e-3, schedule="linear", progress=False
        )
    )
    max_objects: int = 1


SceneMaker = Callable[..., dict[str, Any]]


def scene_examples(
    make_scene: SceneMaker, start: int, count: int, max_objects: int = 1, source: str = "baseline"
) -> list[Example]:
    """Scenes start..start+count-1 as caption examples with their exact descriptions."""
    out = []
    for i in range(start, start + count):
        s = make_scene(SCENE_SEED, i, max_objects=max_objects)
        out.append(caption_example(f"scene-{i}", s["image"].data, [s["description"]], source))
    return out


def shuffled(examples: list[Example], seed: int = 0) -> list[Example]:
    """The same captions, each moved to another image (a derangement where possible)."""
    targets = [e.target for e in examples]
    rng = random.Random(seed)
    order = list(range(len(targets)))
    for _ in range(100):
        rng.shuffle(order)
        if all(i != j for i, j in enumerate(order)):
            break
    return [e.with_target(targets[j]) for e, j in zip(examples, order, strict=True)]


def run_controls(
    student: str | Path,
    make_scene: SceneMaker,
    cfg: ControlConfig | None = None,
    out_dir: str | Path | None = None,
    log=print,
    device: str = "auto",
) -> dict[str, Any]:
    """Run baseline, positive and negative arms on scenes from `make_scene`; returns {"positive": gain row, "negative": gain row, "report": ...}."""
    cfg = cfg or ControlConfig()
    real = scene_examples(make_scene, REAL_START, cfg.real, cfg.max_objects)
    synth = scene_examples(make_scene, SYNTH_START, cfg.synthetic, cfg.max_objects, source="synthetic")
    evals = scene_examples(make_scene, EVAL_START, cfg.eval, cfg.max_objects)
    base = baseline_pool(real)
    pools: list[Pool] = [
        base,
        add_pool(base, synth, name="positive"),
        add_pool(base, shuffled(synth), name="negative"),
    ]
    gcfg = GainConfig(
        student=str(student),
        shots=(0,),
        seeds=cfg.seeds,
        tasks=("caption",),
        regime="fewshot_ft",
        eval_size=cfg.eval,
        train=cfg.train,
        device=device,
    )
    info = {
        "control": {"real": cfg.real, "synthetic": cfg.synthetic, "eval": cfg.eval, "scene_seed": SCENE_SEED}
    }
    report = run_gain(gcfg, real, evals, synth, out_dir, info, log=log, pools=pools)
    rows = {g["arm"]: g for g in report["gains"]}
    return {"positive": rows["positive"], "negative": rows["negative"], "report": report}
