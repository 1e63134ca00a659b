"""Per-validator counts for stats.json: seen, kept, rejected, reasons by prefix, a score summary."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmsynth.validators.types import Verdict

# A record's reject reason is "<validator>: <reason>": grouped by the name and the reason's first field.
RECORD_REASON_FIELDS = 2


def reason_key(reason: str | None, fields: int = 1) -> str:
    """The group a reason counts under: its first `fields` ':'-separated fields, stripped.

    One cut for every count of reasons. A verdict's reason groups by one field ("too short: 3 < 10
    chars" -> "too short"); a record's reject reason is the rejecting validator's name, ": ", then its
    reason, so stats.json's `reject_reasons` group it by two (`RECORD_REASON_FIELDS`: "heuristics: too
    short: 3 < 10 chars" -> "heuristics: too short"), the same group under the validator's name. Empty ->
    "(no reason)".
    """
    if not reason:
        return "(no reason)"
    return ":".join(reason.split(":", fields)[:fields]).strip()


@dataclass
class ValidatorStats:
    """Running counts for one validator; mergeable across shards and workers."""

    name: str
    seen: int = 0
    kept: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    # Score summary kept as sums so that merging is exact.
    score_count: int = 0
    score_sum: float = 0.0
    score_min: float | None = None
    score_max: float | None = None
    # Scores rounded to 3 significant digits and counted: mergeable exactly, bounded in size, and
    # enough to draw a histogram over whatever range the scores turn out to have.
    score_values: Counter[float] = field(default_factory=Counter)

    def add(self, verdict: Verdict) -> None:
        self.seen += 1
        if verdict.keep:
            self.kept += 1
        else:
            self.rejected += 1
            self.reasons[reason_key(verdict.reason)] += 1
        if verdict.score is not None and not math.isnan(verdict.score):
            self._add_scores(1, verdict.score, verdict.score, verdict.score)
            self.score_values[float(f"{verdict.score:.3g}")] += 1

    def _add_scores(self, count: int, total: float, lo: float | None, hi: float | None) -> None:
        self.score_count += count
        self.score_sum += total
        if lo is not None:
            self.score_min = lo if self.score_min is None else min(self.score_min, lo)
        if hi is not None:
            self.score_max = hi if self.score_max is None else max(self.score_max, hi)

    def merge(self, other: ValidatorStats) -> ValidatorStats:
        """Add `other`'s counts into this one (in place) and return self."""
        if other.name != self.name:
            raise ValueError(f"cannot merge stats of {other.name!r} into {self.name!r}")
        self.seen += other.seen
        self.kept += other.kept
        self.rejected += other.rejected
        self.reasons.update(other.reasons)
        self._add_scores(other.score_count, other.score_sum, other.score_min, other.score_max)
        self.score_values.update(other.score_values)
        return self

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """JSON-able counts; `reasons` is ordered most frequent first (only the `top` most when given)."""
        score = None
        if self.score_count:
            score = {
                "count": self.score_count,
                "mean": self.score_sum / self.score_count,
                "min": self.score_min,
                "max": self.score_max,
                "histogram": score_histogram(self.score_values),
                "values": {repr(k): n for k, n in sorted(self.score_values.items())},
            }
        return {
            "name": self.name,
            "seen": self.seen,
            "kept": self.kept,
            "rejected": self.rejected,
            "reasons": dict(self.reasons.most_common(top)),
            "score": score,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidatorStats:
        """Inverse of `to_dict()` (with all reasons), for resuming from a stats.json."""
        stats = cls(d["name"], d["seen"], d["kept"], d["rejected"], Counter(d.get("reasons") or {}))
        if d.get("score"):
            s = d["score"]
            stats._add_scores(s["count"], s["mean"] * s["count"], s["min"], s["max"])
            stats.score_values = Counter({float(k): n for k, n in (s.get("values") or {}).items()})
        return stats


def score_histogram(values: Counter[float], bins: int = 10) -> dict[str, list]:
    """`bins` equal-width bins over the observed range: {"edges": [bins + 1 floats], "counts": [bins ints]}."""
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    if lo == hi:
        return {"edges": [lo, hi], "counts": [sum(values.values())]}
    width = (hi - lo) / bins
    counts = [0] * bins
    for v, n in values.items():
        counts[min(int((v - lo) / width), bins - 1)] += n
    return {"edges": [round(lo + i * width, 6) for i in range(bins + 1)], "counts": counts}


def tally(
    verdict_lists: Iterable[Sequence[Verdict]], stats: dict[str, ValidatorStats] | None = None
) -> dict[str, ValidatorStats]:
    """Add every verdict to the stats of the validator that gave it (created on first sight); returns the dict."""
    stats = {} if stats is None else stats
    for verdicts in verdict_lists:
        for v in verdicts:
            if v.validator not in stats:
                stats[v.validator] = ValidatorStats(v.validator)
            stats[v.validator].add(v)
    return stats
