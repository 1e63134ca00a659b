"""The gain measurement: train a fresh student per (arm, seed), evaluate in context, compare to the baseline.

Two regimes:
- `pool`: each arm's student is fine-tuned on that arm's pool (baseline or a treatment), then evaluated
  at every shot count (MM1's in-context protocol on top of the Sandbox's equal-size pools).
- `fewshot_ft`: few-shot fine-tuning; the baseline arm trains on k labelled real examples per task, the
  treatment on the same k examples plus the synthetic pool; both evaluated at every shot count.
Every arm trains for the same number of steps with the same seeds, and answers the same prompts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmsynth.trainer import fewshot
from mmsynth.trainer.data import Example
from mmsynth.trainer.pools import Pool, add_pool, baseline_pool, make_pools
from mmsynth.trainer.report import report_dir, write_report
from mmsynth.trainer.stats import paired_bootstrap
from mmsynth.trainer.student import TrainConfig, is_vlm_folder, load_student, train_student, usable
from mmsynth.trainer.tasks import TASKS, EvalTask, get_task

REGIMES = ("pool", "fewshot_ft")


@dataclass
class GainConfig:
    """What `run_gain` measures and how."""

    student: str
    """A model folder or Hub id (causal LM or VLM)."""
    shots: tuple[int, ...] = (0, 4, 8)
    seeds: int = 3
    """Training seeds per arm (at least 3 for a reported interval)."""
    trials: int = 3
    """Exemplar draws per example for k > 0 shots."""
    tasks: tuple[str, ...] = ()
    """Task names (see tasks.TASKS); empty = every task the evaluation split has examples for."""
    regime: str = "pool"
    modes: tuple[str, ...] = ("replace",)
    """Treatment pools in the `pool` regime: replace, add, mix."""
    fraction: float = 0.5
    ratios: dict[str, float] | None = None
    pool_size: int | None = None
    """Baseline pool size (None: all real train examples)."""
    ft_k: int = 16
    """Labelled real examples per task in the `fewshot_ft` regime."""
    eval_size: int = 200
    """At most this many evaluation examples per task."""
    eval_fraction: float = 0.2
    """Share of the real data held out for evaluation when it has no test/validation split."""
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"
    n_boot: int = 2000
    level: float = 0.95
    seed: int = 0
    """Seeds data splits, pool sampling and exemplar draws (training seeds are 0..seeds-1)."""
    batch_size_eval: int = 16

    def task_list(self, eval_examples: Sequence[Example]) -> list[EvalTask]:
        if self.tasks:
            return [get_task(t) for t in self.tasks]
        kinds = {e.kind for e in eval_examples}
        return [t for t in TASKS.values() if t.kind in kinds]


def split_real(
    splits: dict[str, list[Example]], eval_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Example], list[Example], str]:
    """(train, eval, how): the dataset's test/validation split when it has one, else a seeded hold-out."""
    for name in ("test", "validation"):
        if splits.get(name) and splits.get("train"):
            return list(splits["train"]), list(splits[name]), f"train split / {name} split"
    everything = [e for s in sorted(splits) for e in splits[s]]
    # Hold out whole ids (a VQA image's questions stay together), so train and eval never share one.
    groups = sorted({e.id.split("/")[0] for e in everything})
    random.Random(seed).shuffle(groups)
    held = set(groups[: max(1, round(len(groups) * eval_fraction))])
    train = [e for e in everything if e.id.split("/")[0] not in held]
    evals = [e for e in everything if e.id.split("/")[0] in held]
    return train, evals, f"seeded hold-out of {eval_fraction:.0%} (no test/validation split)"


def build_pools(
    cfg: GainConfig, real_train: Sequence[Example], synthetic: Sequence[Example], tasks: Sequence[EvalTask]
) -> list[Pool]:
    if cfg.regime == "pool":
        return make_pools(real_train, synthetic, cfg.modes, cfg.fraction, cfg.ratios, cfg.pool_size, cfg.seed)
    if cfg.regime == "fewshot_ft":
        rng = random.Random(cfg.seed)
        labelled: list[Example] = []
        for kind in sorted({t.kind for t in tasks}):
            of_kind = [e for e in real_train if e.kind == kind]
            labelled += rng.sample(of_kind, min(cfg.ft_k, len(of_kind)))
        base = baseline_pool(labelled)
        base.notes.append(f"{cfg.ft_k} labelled real examples per task kind")
        return [base, add_pool(base, synthetic, name="k+synthetic")]
    raise ValueError(f"unknown regime {cfg.regime!r}; choose from {', '.join(REGIMES)}")


def run_gain(
    cfg: GainConfig,
    real_train: Sequence[Example],
    real_eval: Sequence[Example],
    synthetic: Sequence[Example],
    out_dir: str | Path | None = None,
    info: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    pools: Sequence[Pool] | None = None,
) -> dict[str, Any]:
    """Measure every treatment's gain over the baseline; write the report into `out_dir` when given.

    `info` (sources, decontamination result, split description) is copied into the report as is.
    `pools` replaces the pools the config would build (the first one is the baseline).
    Returns the report dict.
    """
    if cfg.seeds < 1:
        raise ValueError("seeds must be >= 1")
    started = time.time()
    tasks = cfg.task_list(real_eval)
    if not tasks:
        raise ValueError("the evaluation split has no example of any known task kind")
    rng = random.Random(cfg.seed)
    evals: dict[str, list[Example]] = {}
    exemplars: dict[str, list[Example]] = {}
    for task in tasks:
        ex = task.select(real_eval)
        if not ex:
            raise ValueError(f"task {task.name!r}: no {task.kind} example in the evaluation split")
        evals[task.name] = rng.sample(ex, min(cfg.eval_size, len(ex)))
        exemplars[task.name] = task.select(real_train)
    notes: list[str] = []
    if not is_vlm_folder(cfg.student):
        # A text-only student cannot be scored on examples with images.
        for task in list(tasks):
            evals[task.name] = [e for e in evals[task.name] if not e.images]
            exemplars[task.name] = [e for e in exemplars[task.name] if not e.images]
            if not evals[task.name]:
                tasks.remove(task)
                notes.append(
                    f"task {task.name} skipped: the student is text-only and its examples have images"
                )
        if not tasks:
            raise ValueError("the student is text-only and every evaluation example has an image")
    pools = list(pools) if pools else build_pools(cfg, real_train, synthetic, tasks)
    if cfg.seeds < 3:
        notes.append(f"only {cfg.seeds} seed(s) per arm: intervals are not reported as reliable below 3")
    # scores[arm][task][shots] -> (seeds, examples)
    scores: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    samples: dict[str, dict[str, list[dict[str, str]]]] = {}
    for pool in pools:
        scores[pool.name] = {
            t.name: {k: np.zeros((cfg.seeds, len(evals[t.name]))) for k in cfg.shots} for t in tasks
        }
        for s in range(cfg.seeds):
            t0 = time.time()
            student = load_student(cfg.student, cfg.device, seed=s)
            train_cfg = replace(cfg.train, seed=s)
            if train_cfg.checkpoint_dir is not None:
                train_cfg.checkpoint_dir = Path(train_cfg.checkpoint_dir) / pool.name / f"seed{s}"
            n_usable = sum(usable(student, e) for e in pool.examples)
            losses = train_student(student, pool.examples, train_cfg) if n_usable else []
            for task in tasks:
                for k in cfg.shots:
                    row, preds = fewshot.evaluate(
                        student,
                        task,
                        evals[task.name],
                        exemplars[task.name],
                        k,
                        cfg.trials,
                        cfg.seed,
                        cfg.batch_size_eval,
                    )
                    scores[pool.name][task.name][k][s] = row
                    if s == 0:
                        samples.setdefault(pool.name, {})[f"{task.name}@{k}"] = [
                            {"prediction": p, "reference": e.target}
                            for p, e in list(zip(preds, evals[task.name], strict=False))[:5]
                        ]
            final = np.mean(losses[-10:]) if losses else float("nan")
            log(
                f"[gain] {pool.name} seed {s}: trained {len(losses)} steps (final loss {final:.3f}), evaluated in {time.time() - t0:.1f}s"
            )
    base = pools[0].name
    gains = []
    for pool in pools[1:]:
        for task in tasks:
            for k in cfg.shots:
                g = paired_bootstrap(
                    scores[pool.name][task.name][k],
                    scores[base][task.name][k],
                    cfg.n_boot,
                    cfg.level,
                    cfg.seed,
                )
                gains.append(
                    {"arm": pool.name, "task": task.name, "metric": task.metric, "shots": k, **g.to_dict()}
                )
    report = {
        "version": 1,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "student": cfg.student,
            "regime": cfg.regime,
            "modes": list(cfg.modes),
            "seeds": cfg.seeds,
            "shots": list(cfg.shots),
            "trials": cfg.trials,
            "steps": cfg.train.steps,
            "train": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg.train).items()},
            "eval_size": cfg.eval_size,
            "seed": cfg.seed,
        },
        "level": cfg.level,
        "tasks": {
            t.name: {
                "metric": t.metric,
                "kind": t.kind,
                "eval_examples": len(evals[t.name]),
                "exemplars": len(exemplars[t.name]),
            }
            for t in tasks
        },
        "arms": {
            p.name: {
                **p.summary(),
                "scores": {
                    t: {
                        str(k): {"mean": float(m.mean()), "per_seed": [float(x) for x in m.mean(axis=1)]}
                        for k, m in by_k.items()
                    }
                    for t, by_k in scores[p.name].items()
                },
                "samples": samples.get(p.name, {}),
            }
            for p in pools
        },
        "gains": gains,
        "notes": notes + [n for p in pools for n in p.notes],
        "seconds": round(time.time() - started, 1),
        **(info or {}),
    }
    if out_dir is not None:
        write_report(out_dir, report)
    return report


__all__ = ["REGIMES", "GainConfig", "build_pools", "report_dir", "run_gain", "split_real"]
