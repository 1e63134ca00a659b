"""Run statistics: counts per stage, per task, per model, per validator and per reject reason."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmsynth.validators import RECORD_REASON_FIELDS, ValidatorStats, reason_key, tally


@dataclass
class ChunkStats:
    """What one chunk did; stored in its marker so totals survive restarts."""

    seeds: int = 0
    requests: int = 0
    requests_cached: int = 0
    requests_failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    accepted: dict[str, int] = field(default_factory=dict)  # task -> count
    rejected: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    validators: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    # model name -> {"requests", "failed", "prompt_tokens", "completion_tokens"}, cached answers included.
    models: dict[str, dict[str, int]] = field(default_factory=dict)
    # "generate" (waiting for answers), "validate", "write" -> {"seconds": s}. The leaf is named `seconds`
    # so that tools which drop timings (bench/same_output.py) drop these too.
    time_per_stage: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def add_model(self, model: str, prompt_tokens: int, completion_tokens: int, failed: bool) -> None:
        """Count one answered request of `model`."""
        m = self.models.setdefault(
            model, {"requests": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0}
        )
        m["requests"] += 1
        m["failed"] += int(failed)
        m["prompt_tokens"] += prompt_tokens
        m["completion_tokens"] += completion_tokens

    def add_time(self, stage: str, since: float) -> None:
        """Add the time from `since` (time.monotonic()) to now to `stage`."""
        entry = self.time_per_stage.setdefault(stage, {"seconds": 0.0})
        entry["seconds"] = round(entry["seconds"] + time.monotonic() - since, 4)

    def count(self, records: Sequence[Any], validator_names: Iterable[str]) -> None:
        """Fill the per-task accepted/rejected counts, the reason counts and the per-validator stats from
        finished records (anything with `task`, `accepted`, `reject_reason` and `verdicts`)."""
        acc, rej, reasons = Counter(), Counter(), Counter()
        for r in records:
            (acc if r.accepted else rej)[r.task] += 1
            if not r.accepted:
                reasons[reason_key(r.reject_reason or "unknown", RECORD_REASON_FIELDS)] += 1
        self.accepted, self.rejected, self.reasons = dict(acc), dict(rej), dict(reasons)
        per = tally((r.verdicts for r in records), {n: ValidatorStats(n) for n in validator_names})
        self.validators = {name: vs.to_dict() for name, vs in per.items()}


def merge_chunks(chunks: list[dict[str, Any]], wall_seconds: float) -> dict[str, Any]:
    """Totals over chunk markers, in the stats.json layout."""
    tot = Counter()
    accepted, rejected, reasons = Counter(), Counter(), Counter()
    validators: dict[str, dict[str, Any]] = {}
    models: dict[str, Counter] = {}
    stage_seconds: Counter = Counter()
    for c in chunks:
        for k in (
            "seeds",
            "requests",
            "requests_cached",
            "requests_failed",
            "prompt_tokens",
            "completion_tokens",
        ):
            tot[k] += c.get(k, 0)
        accepted.update(c.get("accepted", {}))
        rejected.update(c.get("rejected", {}))
        reasons.update(c.get("reasons", {}))
        for name, v in c.get("validators", {}).items():
            validators[name] = _merge_validator(validators.get(name), v)
        # Markers of runs made before these were counted have neither: those chunks add nothing.
        for name, m in c.get("models", {}).items():
            models.setdefault(name, Counter()).update(m)
        for stage, t in c.get("time_per_stage", {}).items():
            stage_seconds[stage] += t.get("seconds", 0.0)
    n_acc, n_rej = sum(accepted.values()), sum(rejected.values())
    gen_seconds = sum(c.get("seconds", 0.0) for c in chunks)
    return {
        "seeds": tot["seeds"],
        "requests": {
            "total": tot["requests"],
            "cached": tot["requests_cached"],
            "sent": tot["requests"] - tot["requests_cached"],
            "failed": tot["requests_failed"],
        },
        "records": {"accepted": n_acc, "rejected": n_rej, "total": n_acc + n_rej},
        "tasks": {
            t: {"accepted": accepted.get(t, 0), "rejected": rejected.get(t, 0)}
            for t in sorted(set(accepted) | set(rejected))
        },
        "tokens": {"prompt": tot["prompt_tokens"], "completion": tot["completion_tokens"]},
        "validators": validators,
        "reject_reasons": dict(reasons.most_common()),
        "throughput": {
            "wall_seconds_last_session": round(wall_seconds, 3),
            "chunk_seconds_total": round(gen_seconds, 3),
            "records_per_second": round((n_acc + n_rej) / gen_seconds, 3) if gen_seconds else None,
            "completion_tokens_per_second": round(tot["completion_tokens"] / gen_seconds, 3)
            if gen_seconds
            else None,
        },
        "models": {
            name: {
                "requests": m["requests"],
                "failed": m["failed"],
                "tokens": {"prompt": m["prompt_tokens"], "completion": m["completion_tokens"]},
            }
            for name, m in sorted(models.items())
        },
        # Summed over chunks; chunks overlap (the next ones generate while one validates and writes), so
        # the sum can pass the wall time: compare the stages with each other.
        "time_per_stage": {k: {"seconds": round(v, 3)} for k, v in sorted(stage_seconds.items())},
    }


def _merge_validator(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    merged = (
        ValidatorStats.from_dict(b)
        if a is None
        else ValidatorStats.from_dict(a).merge(ValidatorStats.from_dict(b))
    )
    out = merged.to_dict()
    out["pass_rate"] = round(merged.kept / merged.seen, 4) if merged.seen else None
    return out
