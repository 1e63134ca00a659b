"""The gain measurement: train a fresh student per (arm, seed), evaluate in context, compare to the baseline.

Two regimes:
- `pool`: each arm's student is fine-tuned on that arm's pool (baseline or a treatment), then evaluated
  at every shot count (MM1's in-context protocol on top of the Sandbox's equal-size pools).
- `fewshot_ft`: few-shot fine-tuning; the baseline arm trains on k labelled real examples per task, the
  treatment on the same k examples plus the synthetic pool; both evaluated at every shot count.
Every arm trains for the same number of steps with the same seeds, and answers the same prompts.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmsynth.prompts.files import write_atomic
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


@dataclass
class Measurement:
    """Every arm's scores on the same evaluation examples: scores[arm][task][shots] is (seeds, examples)."""

    tasks: list[EvalTask]
    evals: dict[str, list[Example]]
    exemplars: dict[str, list[Example]]
    scores: dict[str, dict[str, dict[int, np.ndarray]]] = field(default_factory=dict)
    samples: dict[str, dict[str, list[dict[str, str]]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    trained: int = 0
    """(arm, seed) trainings run here; the rest came from the arm cache."""

    def compare(self, cfg: GainConfig, treatment: str, baseline: str) -> list[dict[str, Any]]:
        """Paired gain of arm `treatment` over arm `baseline`, per task and shot count."""
        rows = []
        for task in self.tasks:
            for k in cfg.shots:
                g = paired_bootstrap(
                    self.scores[treatment][task.name][k],
                    self.scores[baseline][task.name][k],
                    cfg.n_boot,
                    cfg.level,
                    cfg.seed,
                )
                rows.append(
                    {"arm": treatment, "task": task.name, "metric": task.metric, "shots": k, **g.to_dict()}
                )
        return rows


def prepare_evaluation(
    cfg: GainConfig, real_train: Sequence[Example], real_eval: Sequence[Example]
) -> Measurement:
    """The evaluation examples and exemplar sets every arm is scored on (seeded, so the same for every arm)."""
    tasks = cfg.task_list(real_eval)
    if not tasks:
        raise ValueError("the evaluation split has no example of any known task kind")
    rng = random.Random(cfg.seed)
    m = Measurement(tasks, {}, {})
    for task in tasks:
        ex = task.select(real_eval)
        if not ex:
            raise ValueError(f"task {task.name!r}: no {task.kind} example in the evaluation split")
        m.evals[task.name] = rng.sample(ex, min(cfg.eval_size, len(ex)))
        m.exemplars[task.name] = task.select(real_train)
    if not is_vlm_folder(cfg.student):
        # A text-only student cannot be scored on examples with images.
        for task in list(tasks):
            m.evals[task.name] = [e for e in m.evals[task.name] if not e.images]
            m.exemplars[task.name] = [e for e in m.exemplars[task.name] if not e.images]
            if not m.evals[task.name]:
                tasks.remove(task)
                m.notes.append(
                    f"task {task.name} skipped: the student is text-only and its examples have images"
                )
        if not tasks:
            raise ValueError("the student is text-only and every evaluation example has an image")
    if cfg.seeds < 3:
        m.notes.append(f"only {cfg.seeds} seed(s) per arm: intervals are not reported as reliable below 3")
    return m


def measure_arms(
    cfg: GainConfig,
    m: Measurement,
    pools: Sequence[Pool],
    log: Callable[[str], None] = print,
    cache_dir: str | Path | None = None,
) -> Measurement:
    """Train a fresh student per (pool, seed) and score it on `m`'s examples; fills `m.scores` in place.

    With `cache_dir`, each (pool, seed)'s scores are kept under a key of everything that decides them
    (student, training config, seed, the pool's examples, the evaluation set, shots, trials), so a
    rerun, or another measurement that holds the same arm, trains nothing twice.
    """
    for pool in pools:
        m.scores[pool.name] = {
            t.name: {k: np.zeros((cfg.seeds, len(m.evals[t.name]))) for k in cfg.shots} for t in m.tasks
        }
        for s in range(cfg.seeds):
            key = arm_key(cfg, m, pool, s) if cache_dir is not None else None
            cached = arm_cache_get(cache_dir, key) if key else None
            if cached is None:
                cached = _train_and_score(cfg, m, pool, s, log)
                m.trained += 1
                if key:
                    arm_cache_put(cache_dir, key, cached)
            for task in m.tasks:
                for k in cfg.shots:
                    m.scores[pool.name][task.name][k][s] = cached["scores"][task.name][str(k)]
            if s == 0:
                m.samples[pool.name] = cached["samples"]
    return m


def _train_and_score(cfg: GainConfig, m: Measurement, pool: Pool, s: int, log: Callable[[str], None]) -> dict:
    t0 = time.time()
    student = load_student(cfg.student, cfg.device, seed=s)
    train_cfg = replace(cfg.train, seed=s)
    if train_cfg.checkpoint_dir is not None:
        train_cfg.checkpoint_dir = Path(train_cfg.checkpoint_dir) / pool.name / f"seed{s}"
    n_usable = sum(usable(student, e) for e in pool.examples)
    losses = train_student(student, pool.examples, train_cfg) if n_usable else []
    out: dict[str, Any] = {"scores": {}, "samples": {}}
    for task in m.tasks:
        out["scores"][task.name] = {}
        for k in cfg.shots:
            row, preds = fewshot.evaluate(
                student,
                task,
                m.evals[task.name],
                m.exemplars[task.name],
                k,
                cfg.trials,
                cfg.seed,
                cfg.batch_size_eval,
            )
            out["scores"][task.name][str(k)] = [float(x) for x in row]
            out["samples"][f"{task.name}@{k}"] = [
                {"prediction": p, "reference": e.target}
                for p, e in list(zip(preds, m.evals[task.name], strict=False))[:5]
            ]
    final = np.mean(losses[-10:]) if losses else float("nan")
    log(
        f"[gain] {pool.name} seed {s}: trained {len(losses)} steps (final loss {final:.3f}), evaluated in {time.time() - t0:.1f}s"
    )
    return out


def _example_digest(e: Example) -> str:
    h = hashlib.sha256()
    for part in (e.id, e.kind, e.prompt, e.target, *e.references):
        h.update(part.encode() + b"\0")
    for img in e.images:
        h.update(hashlib.sha256(img).digest())
    return h.hexdigest()


def arm_key(cfg: GainConfig, m: Measurement, pool: Pool, seed: int) -> str:
    """Everything that decides one (pool, seed)'s scores, hashed; the pool's name is not part of it."""
    train = {k: v for k, v in asdict(cfg.train).items() if k not in ("progress", "checkpoint_dir", "seed")}
    payload = {
        "v": 1,
        "student": cfg.student,
        "revision": student_revision(cfg.student),
        "train": train,
        "seed": seed,
        "eval_seed": cfg.seed,
        "shots": list(cfg.shots),
        "trials": cfg.trials,
        "pool": [_example_digest(e) for e in pool.examples],
        "evals": {t: [_example_digest(e) for e in ex] for t, ex in sorted(m.evals.items())},
        "exemplars": {t: [_example_digest(e) for e in ex] for t, ex in sorted(m.exemplars.items())},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def arm_cache_get(cache_dir: str | Path | None, key: str | None) -> dict | None:
    if cache_dir is None or key is None:
        return None
    path = Path(cache_dir) / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None  # a torn write is a miss: the arm is trained again


def arm_cache_put(cache_dir: str | Path, key: str, value: dict) -> None:
    write_atomic(Path(cache_dir) / f"{key}.json", json.dumps(value))


def student_revision(student: str) -> str:
    """A folder's content revision (so a rebuilt student is a new arm); a Hub id as given."""
    path = Path(student)
    if not path.is_dir():
        return student
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(path)}:{st.st_size}".encode())
            if f.suffix in (".json", ".safetensors", ".bin", ".model", ".txt"):
                h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def run_gain(
    cfg: GainConfig,
    real_train: Sequence[Example],
    real_eval: Sequence[Example],
    synthetic: Sequence[Example],
    out_dir: str | Path | None = None,
    info: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    pools: Sequence[Pool] | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Measure every treatment's gain over the baseline; write the report into `out_dir` when given.

    `info` (sources, decontamination result, split description) is copied into the report as is.
    `pools` replaces the pools the config would build (the first one is the baseline); `cache_dir`
    keeps each (pool, seed)'s scores so nothing is trained twice (see `measure_arms`). Returns the report.
    """
    report, _ = measure_gain(cfg, real_train, real_eval, synthetic, out_dir, info, log, pools, cache_dir)
    return report


def measure_gain(
    cfg: GainConfig,
    real_train: Sequence[Example],
    real_eval: Sequence[Example],
    synthetic: Sequence[Example],
    out_dir: str | Path | None = None,
    info: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    pools: Sequence[Pool] | None = None,
    cache_dir: str | Path | None = None,
    compare: Sequence[tuple[str, str]] = (),
) -> tuple[dict[str, Any], Measurement]:
    """`run_gain`, also returning the Measurement (raw scores) and reporting the `compare` pairs."""
    if cfg.seeds < 1:
        raise ValueError("seeds must be >= 1")
    started = time.time()
    m = prepare_evaluation(cfg, real_train, real_eval)
    pools = list(pools) if pools else build_pools(cfg, real_train, synthetic, m.tasks)
    measure_arms(cfg, m, pools, log, cache_dir)
    base = pools[0].name
    gains = [row for pool in pools[1:] for row in m.compare(cfg, pool.name, base)]
    differences = [{**row, "versus": b} for a, b in compare for row in m.compare(cfg, a, b)]
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
                "eval_examples": len(m.evals[t.name]),
                "exemplars": len(m.exemplars[t.name]),
            }
            for t in m.tasks
        },
        "arms": {
            p.name: {
                **p.summary(),
                "scores": {
                    t: {
                        str(k): {"mean": float(a.mean()), "per_seed": [float(x) for x in a.mean(axis=1)]}
                        for k, a in by_k.items()
                    }
                    for t, by_k in m.scores[p.name].items()
                },
                "samples": m.samples.get(p.name, {}),
            }
            for p in pools
        },
        "gains": gains,
        **({"differences": differences} if differences else {}),
        "notes": m.notes + [n for p in pools for n in p.notes],
        "seconds": round(time.time() - started, 1),
        **(info or {}),
    }
    if out_dir is not None:
        write_report(out_dir, report)
    return report, m


__all__ = [
    "REGIMES",
    "GainConfig",
    "Measurement",
    "build_pools",
    "measure_arms",
    "measure_gain",
    "prepare_evaluation",
    "report_dir",
    "run_gain",
    "split_real",
]
