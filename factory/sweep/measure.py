"""Generate every variant through one response cache, then measure them on equal terms.

Equal terms: one real train/eval split, one decontamination rule, pools of one size with the same
baseline examples kept (the same seed), the same student seeds, the same evaluation examples and
exemplar draws. So every variant's scores are paired with every other's, not only with the baseline.
Budget: with `halving`, every variant is first measured on a cheap rung (fewer steps and seeds); the
best share is measured again in full. Every (arm, seed) is cached, so a rerun trains nothing twice.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mmsynth.factory.curate.decontaminate import check_contamination
from mmsynth.factory.engine.runner import run_recipe
from mmsynth.factory.sweep.spec import SweepSpec
from mmsynth.factory.sweep.variants import Variant
from mmsynth.prompts.files import write_atomic
from mmsynth.trainer.data import Example, load_dataset_examples, read_run_dir
from mmsynth.trainer.gain import GainConfig, Measurement, measure_arms, prepare_evaluation, split_real
from mmsynth.trainer.pools import add_pool, baseline_pool, replace_pool
from mmsynth.trainer.student import TrainConfig

BASELINE = "baseline"


@dataclass
class VariantRun:
    """What generating one variant cost and gave (from its run folder's stats.json)."""

    variant: Variant
    run_dir: Path
    accepted: int = 0
    total: int = 0
    requests_sent: int = 0
    requests_reused: int = 0
    tokens: int = 0
    seconds: float = 0.0
    examples: list[Example] = field(default_factory=list)
    contaminated: int = 0
    rejects: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "variant": self.variant.name,
            "values": self.variant.values,
            "run_dir": str(self.run_dir),
            "accepted": self.accepted,
            "records": self.total,
            "accepted_share": round(self.accepted / self.total, 4) if self.total else 0.0,
            "requests_sent": self.requests_sent,
            "requests_reused": self.requests_reused,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 2),
            "examples": len(self.examples),
            "contaminated_dropped": self.contaminated,
            "rejects_by_validator": self.rejects,
        }


class SweepEvents(Protocol):
    """What the sweep reports as it goes (the live view, factory/sweep/live.py, implements it)."""

    def variant_generated(self, run: VariantRun) -> None: ...

    def rung_started(self, rung: Rung, index: int, total: int, rank_by: str | None) -> None: ...

    def arm_measured(self, rung: Rung, arm: str, trained: int, rank_by: str | None) -> None: ...

    def variants_cut(self, rung: Rung, kept: list[str]) -> None: ...


def generate(
    recipes: dict[str, Path],
    variants: list[Variant],
    runs_dir: Path,
    log: Callable[[str], None],
    events: SweepEvents | None = None,
) -> dict[str, VariantRun]:
    """Run (or resume) every variant's recipe; a finished one is not run again."""
    out = {}
    for v in variants:
        run_dir = runs_dir / v.name
        result = run_recipe(recipes[v.name], run_dir, progress=False)
        stats = result.stats
        # Seconds of this variant's generation as recorded with its run, so a resumed sweep reports the same.
        seconds = stats.get("throughput", {}).get("chunk_seconds_total", 0.0)
        req = stats.get("requests", {})
        out[v.name] = VariantRun(
            v,
            run_dir,
            accepted=stats["records"]["accepted"],
            total=stats["records"]["total"],
            requests_sent=req.get("sent", 0),
            requests_reused=req.get("cached", 0),
            tokens=sum(stats.get("tokens", {}).values()),
            seconds=seconds,
            rejects={k: s.get("rejected", 0) for k, s in stats.get("validators", {}).items()},
        )
        state = "already complete" if result.already_complete else "generated"
        log(
            f"[sweep] {v.name} ({v.label()}): {state}, {out[v.name].accepted}/{out[v.name].total} accepted, "
            f"{out[v.name].requests_sent} requests sent, {out[v.name].requests_reused} reused"
        )
        if events is not None:
            events.variant_generated(out[v.name])
    return out


def gain_config(spec: SweepSpec, student: str, steps: int, seeds: int) -> GainConfig:
    return GainConfig(
        student=student,
        shots=tuple(spec.shots),
        seeds=seeds,
        tasks=tuple(spec.tasks),
        eval_size=spec.eval_size,
        train=TrainConfig(
            steps=steps,
            batch_size=spec.batch_size,
            lr=spec.lr,
            lora=spec.lora,
            schedule="linear",
            progress=False,
        ),
        device=spec.device,
        seed=spec.seed,
    )


@dataclass
class Rung:
    name: str
    config: GainConfig
    arms: list[str]
    measurement: Measurement


def measure(
    spec: SweepSpec,
    baseline: str,
    student: str,
    runs: dict[str, VariantRun],
    arms_dir: Path,
    rank: Callable[[Rung, list[str]], list[str]],
    log: Callable[[str], None],
    events: SweepEvents | None = None,
) -> tuple[list[Rung], dict[str, Any]]:
    """Pools for every variant on equal terms, then the rungs; returns them and what the pools hold."""
    splits = load_dataset_examples(baseline)
    train, evals, how = split_real(splits, seed=spec.seed)
    if not train or not evals:
        raise ValueError(f"baseline {baseline} gives {len(train)} train and {len(evals)} eval examples")
    for r in runs.values():
        synthetic = read_run_dir(r.run_dir, spec.synthetic_tasks or None)
        bad, _ = check_contamination(synthetic, evals)
        r.contaminated = len(bad)
        drop = set(bad)
        r.examples = [e for i, e in enumerate(synthetic) if i not in drop]
    empty = [n for n, r in runs.items() if not r.examples]
    usable = {n: r for n, r in runs.items() if r.examples}
    if not usable:
        raise ValueError("no variant gave a usable accepted record: nothing to measure")
    base = baseline_pool(train, spec.pool_size, spec.seed)
    fewest = min(len(r.examples) for r in usable.values())
    # Equal terms: every variant's pool holds the same number of synthetic examples, and (replace)
    # keeps the same baseline examples; the variant with the fewest sets the number.
    if spec.mode == "add":
        wanted = spec.synthetic or fewest
        slots = min(wanted, fewest)
        pools = {BASELINE: base} | {
            n: add_pool(base, random.Random(spec.seed).sample(r.examples, slots), name=n)
            for n, r in usable.items()
        }
    else:
        wanted = round(len(base.examples) * spec.fraction)
        slots = min(wanted, fewest)
        fraction = slots / len(base.examples)
        pools = {BASELINE: base} | {
            n: replace_pool(base, r.examples, fraction, spec.seed, name=n) for n, r in usable.items()
        }
    info = {
        "split": how,
        "real_train": len(train),
        "real_eval": len(evals),
        "pool_size": len(base.examples),
        "mode": spec.mode,
        "synthetic_per_pool": slots,
        "notes": (
            []
            if slots == wanted
            else [f"{slots} synthetic examples per pool (the fewest any variant has), not {wanted}"]
        )
        + [f"{n}: no usable accepted record, not measured" for n in empty],
        "unmeasured": empty,
    }
    rungs: list[Rung] = []
    alive = list(usable)
    plan = []
    if spec.halving is not None and len(alive) > spec.halving.min_keep:
        h = spec.halving
        plan.append(("proxy", gain_config(spec, student, h.proxy_steps, h.proxy_seeds), h))
    plan.append(("full", gain_config(spec, student, spec.steps, spec.seeds), None))
    trained = 0
    for index, (name, cfg, halving) in enumerate(plan):
        t0 = time.time()
        m = prepare_evaluation(cfg, train, evals)
        rung = Rung(name, cfg, list(alive), m)
        rungs.append(rung)
        if events is not None:
            events.rung_started(rung, index, len(plan), spec.rank_by)
        # One arm at a time (the baseline first), so the view can show each arm's gain as it lands.
        for arm in [BASELINE, *alive]:
            before = m.trained
            measure_arms(cfg, m, [pools[arm]], log, arms_dir)
            trained += m.trained - before
            if events is not None:
                events.arm_measured(rung, arm, trained, spec.rank_by)
        log(f"[sweep] rung {name}: {len(alive)} variants, {m.trained} trainings run, {time.time() - t0:.0f}s")
        if halving is not None:
            keep = max(halving.min_keep, math.ceil(len(alive) * halving.keep))
            alive = rank(rung, alive)[:keep]
            if events is not None:
                events.variants_cut(rung, alive)
    return rungs, info


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str))


__all__ = ["BASELINE", "Rung", "SweepEvents", "VariantRun", "gain_config", "generate", "measure"]
