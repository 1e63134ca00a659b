"""A run's stats from its index: counts, pass rate per validator, top reasons, score histograms.

Computed from the shards rather than read from stats.json, so a running run (no stats.json yet) has
them too, and they can be narrowed to one task. stats.json, when there, is passed along as `file`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmsynth.factory.viewer.index import KEEP, SCORE, Snapshot
from mmsynth.validators import RECORD_REASON_FIELDS, reason_key

# Reasons group as stats.json groups them: a record's "validator: reason: detail" by its first two fields
# (RECORD_REASON_FIELDS), a verdict's "reason: detail" by its first ("too short: 2 < 8 chars" -> "too short").

BINS = 20
TOP_REASONS = 12


def run_stats(snap: Snapshot, run: Path, task: str | None = None) -> dict[str, Any]:
    t = snap.table
    mask = np.ones(t.num_rows, bool)
    if task:
        mask &= pc.equal(t["task"], task).fill_null(False).to_numpy(zero_copy_only=False)
    accepted = t["accepted"].fill_null(False).to_numpy(zero_copy_only=False) & mask
    tasks = {d["values"]: d["counts"] for d in pc.value_counts(t["task"]).to_pylist()}
    reasons: Counter = Counter()
    for d in pc.value_counts(t["reject_reason"].filter(pa.array(mask & ~accepted))).to_pylist():
        if d["values"] is not None:
            reasons[reason_key(d["values"], RECORD_REASON_FIELDS)] += d["counts"]
    verdicts: Counter = Counter()
    for shard, counts in zip(snap.shards, snap.verdicts, strict=True):
        if not task or shard.task == task:
            verdicts.update(counts)
    stats_file = run / "stats.json"
    return {
        "task": task,
        "tasks": dict(sorted(tasks.items())),
        "records": {
            "total": int(mask.sum()),
            "accepted": int(accepted.sum()),
            "rejected": int(mask.sum() - accepted.sum()),
        },
        "reject_reasons": reasons.most_common(TOP_REASONS),
        "validators": {v: _validator(snap, v, mask, verdicts) for v in snap.validators},
        "complete": (run / "manifest.json").exists(),
        "file": json.loads(stats_file.read_text()) if stats_file.exists() else None,
    }


def _validator(snap: Snapshot, name: str, mask: np.ndarray, verdicts: Counter) -> dict[str, Any]:
    kept = sum(c for (v, k, _), c in verdicts.items() if v == name and k)
    rejected = sum(c for (v, k, _), c in verdicts.items() if v == name and not k)
    reasons: Counter = Counter()
    for (v, k, r), c in verdicts.items():
        if v == name and not k:
            reasons[reason_key(r)] += c
    keep = snap.column(KEEP + name)[mask]
    score = snap.column(SCORE + name)[mask]
    return {
        "seen": kept + rejected,
        "kept": kept,
        "rejected": rejected,
        "pass_rate": round(kept / (kept + rejected), 4) if kept + rejected else None,
        "reasons": reasons.most_common(TOP_REASONS),
        "histogram": histogram(score, keep),
    }


def histogram(score: np.ndarray, keep: np.ndarray, bins: int = BINS) -> dict[str, Any] | None:
    """Counts of scores per bin, split into kept and rejected records; None when no record has a score."""
    has = ~np.isnan(score)
    if not has.any():
        return None
    s, k = score[has], keep[has]
    lo, hi = float(s.min()), float(s.max())
    if lo == hi:
        hi = lo + 1.0  # one value: one bar, not a division by zero
    edges = np.linspace(lo, hi, bins + 1)
    kept, _ = np.histogram(s[k == 1], edges)
    rejected, _ = np.histogram(s[k != 1], edges)
    return {
        "edges": [round(float(e), 6) for e in edges],
        "kept": kept.tolist(),
        "rejected": rejected.tolist(),
        "count": int(has.sum()),
        "min": float(s.min()),
        "max": float(s.max()),
        "mean": float(s.mean()),
    }
