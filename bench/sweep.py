"""What `mmsynth sweep` saves: the same 8-variant sweep run naively and by mmsynth sweep.

(a) naive: each variant generated from scratch (its own response cache) and measured on its own
    (its own baseline arm, every variant at full budget), as a hand-written loop of
    `mmsynth run` + `mmsynth gain` would; with the same number of synthetic examples per pool as (b)
    (the fewest any variant has), so both measure the same thing and only the way differs;
(b) `mmsynth sweep`: one response cache (a validator-only change sends nothing), one baseline arm,
    successive halving (all variants on a cheap rung, the top half in full).
Both must pick the same winner. Headline last:

    sweep ratio=<wall time a / wall time b>

    python bench/sweep.py [--steps 200] [--seeds 2] [--count 64] [--student tiny:vlm]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
AXES = {
    "tasks.captions.sampling.temperature": [0.3, 0.7, 1.1, 1.5],
    "validators": {
        "filtered": [{"type": "heuristics", "min_chars": 8}, {"type": "scene_grounding", "captions": True}],
        "unfiltered": [],
    },
}


def sweep_file(
    folder: Path,
    steps: int,
    seeds: int,
    halving: bool,
    count: int,
    synthetic: int | None = None,
    student: str = "tiny:vlm",
) -> Path:
    recipe = yaml.safe_load((ROOT / "recipes" / "proving-ground.yaml").read_text())
    recipe["seeds"]["count"] = count
    recipe["tasks"] = [t for t in recipe["tasks"] if t["name"] == "captions"]
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    spec = {
        "recipe": "recipe.yaml",
        "axes": AXES,
        "baseline": {"scenes": {"train": "0:8", "test": "20000:32", "seed": 0, "max_objects": 2}},
        "student": student,
        "tasks": ["caption"],
        "synthetic_tasks": ["captions"],
        "mode": "add",
        "seeds": seeds,
        "steps": steps,
        "eval_size": 32,
    }
    if synthetic is not None:
        spec["synthetic"] = synthetic
    if halving:
        spec["halving"] = {"proxy_steps": max(1, steps // 4), "proxy_seeds": 1, "keep": 0.5}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"sweep": spec}, sort_keys=False))
    return path


def naive(
    folder: Path, steps: int, seeds: int, count: int, synthetic: int, student: str
) -> tuple[float, str]:
    """Each variant on its own: its own cache, its own baseline arm, full budget; returns (seconds, winner)."""
    from mmsynth.factory.sweep.runner import run_sweep
    from mmsynth.factory.sweep.spec import load_sweep
    from mmsynth.factory.sweep.variants import expand

    t0 = time.perf_counter()
    base = sweep_file(folder, steps, seeds, False, count, synthetic, student)
    spec, _, _ = load_sweep(base)
    results = {}
    for v in expand(spec):
        one = folder / f"naive-{v.name}"
        one.mkdir()
        (one / "recipe.yaml").write_text((folder / "recipe.yaml").read_text())
        data = yaml.safe_load(base.read_text())
        data["sweep"]["axes"] = {k: [v.overrides[k]] for k in v.overrides}
        (one / "sweep.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        report = run_sweep(one / "sweep.yaml", one / "out", log=lambda m: None)
        (row,) = report["variants"]
        gain = next(g for g in row["gains"] if g["shots"] == 0)
        results[v.name] = gain["gain"]
        print(
            f"naive {v.name} ({v.label()}): gain {gain['gain']:+.3f} [{gain['lo']:+.3f}, {gain['hi']:+.3f}]",
            flush=True,
        )
    best = max(results, key=lambda n: (results[n], -list(results).index(n)))
    return time.perf_counter() - t0, best


def by_mmsynth(folder: Path, steps: int, seeds: int, count: int, student: str) -> tuple[float, str, dict]:
    from mmsynth.factory.sweep.runner import run_sweep

    t0 = time.perf_counter()
    spec = sweep_file(folder, steps, seeds, True, count, student=student)
    report = run_sweep(spec, folder / "out", log=lambda m: None)
    seconds = time.perf_counter() - t0
    print((folder / "out" / "report.md").read_text(), flush=True)
    return seconds, report["best"], report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--count", type=int, default=64, help="scenes per variant")
    ap.add_argument("--student", default="tiny:vlm", help="the student both sides train")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="mmsynth-bench-sweep-") as tmp:
        a_dir, b_dir = Path(tmp) / "naive", Path(tmp) / "sweep"
        a_dir.mkdir()
        b_dir.mkdir()
        from mmsynth.generators.model_paths import resolve_model_path

        resolve_model_path("tiny:scene-vlm")  # build the teacher once, outside both timings
        resolve_model_path(args.student)
        tb, best_b, report = by_mmsynth(b_dir, args.steps, args.seeds, args.count, args.student)
        synthetic = report["pools"]["synthetic_per_pool"]
        ta, best_a = naive(a_dir, args.steps, args.seeds, args.count, synthetic, args.student)
    same = best_a == best_b
    print(f"naive: {ta:.1f} s, winner {best_a}")
    print(f"mmsynth sweep: {tb:.1f} s, winner {best_b}; trainings per rung {report['trainings']}")
    print(
        f"settings: steps {args.steps}, seeds {args.seeds}, {args.count} scenes per variant, student {args.student}"
    )
    print(f"same winner: {same}")
    print(f"sweep ratio={ta / tb:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
