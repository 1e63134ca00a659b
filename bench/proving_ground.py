"""The proving ground: does the factory's own data teach a student, and what do the validators buy?

1. Teacher quality at the proving ground's settings (generators/tiny/scene_eval.py: scene seed 1, at
   most 2 objects, temperature 0.7, the scenes the recipe renders).
2. `recipes/sweeps/proving-ground.yaml` run programmatically: the teacher captions and questions 160
   fresh scenes; variant `filtered` keeps what the validators accept, `unfiltered` keeps everything
   (same cache, same pool size); the student `tiny:scene-student` is fine-tuned on 8 real labelled
   scenes alone (baseline) and on those plus the synthetic data, 3 seeds each.
3. Gains with 95% paired bootstrap intervals (over seeds and evaluation examples), per task:
   (a) filtered over the baseline, (b) unfiltered over the baseline, (c) = (a) - (b), what the
   validators buy (the paired interval of filtered minus unfiltered, whatever its sign).
Headline last, on the sweep's rank_by task:

    proving_ground ratio=<gain (a) / gain (b)>      (above 1: the validators made the data worth more)

    MMSYNTH_HOME=~/.cache/mmsynth python bench/proving_ground.py [--steps N] [--seeds N]
        [--eval-size N] [--scenes N] [--out DIR]

Without MMSYNTH_HOME the teacher is built into bench/.cache (about 6-8 minutes, once). `--out` keeps
the sweep folder; a rerun over it resumes (nothing generated or trained twice).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import _common  # before anything imports torch: pins threads, offline mode, MMSYNTH_HOME
import yaml

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "recipes" / "sweeps" / "proving-ground.yaml"


def teacher_quality(folder: str, scenes: int) -> dict[str, dict[str, float]]:
    """scene_eval's shares on the recipe's own settings (seed 1, 2 objects, temperature 0.7)."""
    from mmsynth.generators.tiny import scene_eval

    recipe = yaml.safe_load((ROOT / "recipes" / "proving-ground.yaml").read_text())
    seeds = recipe["seeds"]
    table = scene_eval.evaluate(
        folder, scenes, seed=seeds["seed"], temperature=0.7, max_objects=seeds["max_objects"]
    )
    return scene_eval.summary(table)


def sweep_file(folder: Path, steps: int | None, seeds: int | None, eval_size: int | None) -> Path:
    """The shipped sweep with the recipe path made absolute and the given measurement overrides."""
    data = yaml.safe_load(SWEEP.read_text())
    spec = data["sweep"]
    spec["recipe"] = str((SWEEP.parent / spec["recipe"]).resolve())
    for key, value in (("steps", steps), ("seeds", seeds), ("eval_size", eval_size)):
        if value is not None:
            spec[key] = value
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def gains(report: dict) -> dict[str, dict[str, dict]]:
    """{"a"|"b"|"c": {task: row}} at 0 shots from the sweep report's filtered and unfiltered variants."""
    rows = {v["values"]["validators"]: v for v in report["variants"]}
    f, u = rows["filtered"], rows["unfiltered"]
    out: dict[str, dict[str, dict]] = {"a": {}, "b": {}, "c": {}}
    for key, row in (("a", f), ("b", u)):
        out[key] = {g["task"]: g for g in row["gains"] if g["shots"] == 0}
    if report["best"] == f["variant"]:  # "best minus this" on the unfiltered row is filtered - unfiltered
        out["c"] = {g["task"]: g for g in u["best_minus_this"] if g["shots"] == 0}
    else:  # the same paired bootstrap, read the other way round
        out["c"] = {
            g["task"]: {**g, "gain": -g["gain"], "lo": -g["hi"], "hi": -g["lo"]}
            for g in f["best_minus_this"]
            if g["shots"] == 0
        }
    return out


def matched_mixture(out: Path, spec_path: Path, report: dict, log) -> dict[str, dict]:
    """(c) again with pools of the same mixture: the sweep's pools have the same size, but filtering
    drops more QA records than captions, so the filtered pool holds more captions. Here both pools get
    the same number of examples of each kind (the fewer of the two); {"a"|"b"|"c": {task: row}}."""
    import random
    from collections import Counter

    from mmsynth.factory.curate.decontaminate import check_contamination
    from mmsynth.factory.sweep.measure import BASELINE, gain_config
    from mmsynth.factory.sweep.spec import baseline_path, load_sweep
    from mmsynth.generators.model_paths import resolve_model_path
    from mmsynth.trainer.data import load_dataset_examples, read_run_dir
    from mmsynth.trainer.gain import measure_arms, prepare_evaluation, split_real
    from mmsynth.trainer.pools import add_pool, baseline_pool

    spec, _, _ = load_sweep(spec_path)
    train, evals, _ = split_real(load_dataset_examples(baseline_path(spec, out)), seed=spec.seed)
    synthetic = {}
    for v in report["variants"]:  # as the sweep reads them: accepted records, decontaminated
        examples = read_run_dir(v["run_dir"], spec.synthetic_tasks or None)
        bad = set(check_contamination(examples, evals)[0])
        synthetic[v["values"]["validators"]] = [e for i, e in enumerate(examples) if i not in bad]
    kinds = {n: Counter(e.kind for e in ex) for n, ex in synthetic.items()}
    fewest = {k: min(c[k] for c in kinds.values()) for k in set().union(*kinds.values())}
    base = baseline_pool(train, spec.pool_size, spec.seed)
    pools = {BASELINE: base}
    for name, examples in synthetic.items():
        if dict(kinds[name]) == fewest:  # all of it, drawn as the sweep draws it (its cached arms)
            picked = random.Random(spec.seed).sample(examples, len(examples))
        else:
            rng = random.Random(spec.seed)
            picked = [
                e for k in sorted(fewest) for e in rng.sample([x for x in examples if x.kind == k], fewest[k])
            ]
            rng.shuffle(picked)
        pools[name] = add_pool(base, picked, name=name)
    cfg = gain_config(spec, resolve_model_path(spec.student), spec.steps, spec.seeds)
    m = prepare_evaluation(cfg, train, evals)
    measure_arms(cfg, m, list(pools.values()), log, out / "arms")
    print(f"matched mixture: {json.dumps(fewest)} synthetic examples per pool; {m.trained} trainings run")
    rows = {
        "a": m.compare(cfg, "filtered", BASELINE),
        "b": m.compare(cfg, "unfiltered", BASELINE),
        "c": m.compare(cfg, "filtered", "unfiltered"),
    }
    return {key: {g["task"]: g for g in r if g["shots"] == 0} for key, r in rows.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=None, help="training steps per arm (default: the sweep's)")
    ap.add_argument("--seeds", type=int, default=None, help="training seeds per arm (default: the sweep's)")
    ap.add_argument("--eval-size", type=int, default=None, help="evaluation examples per task")
    ap.add_argument("--scenes", type=int, default=64, help="scenes for the teacher-quality check")
    ap.add_argument("--out", type=Path, default=None, help="keep the sweep folder here (resumable)")
    ap.add_argument(
        "--no-matched", dest="matched", action="store_false", help="skip (c) on pools of the same mixture"
    )
    args = ap.parse_args()
    _common.one_thread()
    from mmsynth.factory.sweep.runner import run_sweep
    from mmsynth.generators.model_paths import resolve_model_path

    t0 = time.perf_counter()
    teacher = resolve_model_path("tiny:scene-vlm")
    student = resolve_model_path("tiny:scene-student")
    print(f"models ready in {time.perf_counter() - t0:.1f} s: teacher {teacher}, student {student}")
    t0 = time.perf_counter()
    quality = teacher_quality(teacher, args.scenes)
    print(
        f"teacher quality ({args.scenes} scenes, seed 1, <= 2 objects, T 0.7; {time.perf_counter() - t0:.0f} s):"
    )
    for template in ("caption.short", "vqa.pairs (image only)"):
        print(f"  {template}: " + ", ".join(f"{k} {v:.0%}" for k, v in quality[template].items()))

    with tempfile.TemporaryDirectory(prefix="mmsynth-bench-proving-") as tmp:
        out = args.out or Path(tmp) / "sweep"
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        spec_path = sweep_file(out, args.steps, args.seeds, args.eval_size)
        report = run_sweep(spec_path, out, log=lambda m: None)
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        same_mix = matched_mixture(out, spec_path, report, log=lambda m: None) if args.matched else None
        matched_seconds = time.perf_counter() - t0
    rows = {v["values"]["validators"]: v for v in report["variants"]}
    f = rows["filtered"]
    cfg, pools = report["config"], report["pools"]
    print(
        f"sweep: {seconds:.0f} s wall, student {Path(cfg['student']).name}, {cfg['steps']} steps x "
        f"{cfg['seeds']} seeds, trainings run {report['trainings']}, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"filtered: {f['accepted']}/{f['records']} records accepted ({f['accepted_share']:.0%}); "
        f"rejects {json.dumps(f['rejects_by_validator'])}; pools: {pools['real_train']} real train examples "
        f"+ {pools['synthetic_per_pool']} synthetic, {pools['real_eval']} real eval examples"
    )
    g = gains(report)
    names = {
        "a": "(a) filtered over baseline",
        "b": "(b) unfiltered over baseline",
        "c": "(c) filtered - unfiltered",
    }
    for key, label in names.items():
        for task, row in g[key].items():
            print(
                f"{label}: {task} ({row['metric']}) {row['gain']:+.3f} [{row['lo']:+.3f}, {row['hi']:+.3f}]"
            )
    if same_mix is not None:
        print(f"same mixture of kinds in both pools ({matched_seconds:.0f} s):")
        for key, label in names.items():
            for task, row in same_mix[key].items():
                print(f"  {label}: {task} {row['gain']:+.3f} [{row['lo']:+.3f}, {row['hi']:+.3f}]")
    task = report["rank_by"].partition("@")[0]
    a, b = g["a"][task]["gain"], g["b"][task]["gain"]
    ratio = a / b if b else float("inf")
    print(f"proving_ground ratio={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
