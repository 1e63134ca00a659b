"""Chunk statistics: what one chunk counts (`ChunkStats.count`) and the stats.json totals (`merge_chunks`).

Fast: records are small values written here; chunk markers go through JSON as they do on disk.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field

import pytest

from mmsynth.factory.engine.stats import ChunkStats, merge_chunks
from mmsynth.validators.types import Verdict

VALIDATORS = ["heuristics", "json_schema"]
# The stats.json layout the shipped recipes write (docs/recipes.md); a change here changes every run.
LAYOUT = ["records", "reject_reasons", "requests", "seeds", "tasks", "throughput", "tokens", "validators"]
# Keys added later (per model, per stage): added only, so readers of the others see the same file.
ADDED = ["models", "time_per_stage"]


@dataclass
class Done:
    """A finished record as ChunkStats.count sees it."""

    task: str
    verdicts: list[Verdict] = field(default_factory=list)
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None and all(v.keep for v in self.verdicts)

    @property
    def reject_reason(self) -> str | None:
        if self.error is not None:
            return self.error
        bad = next((v for v in self.verdicts if not v.keep), None)
        return None if bad is None else f"{bad.validator}: {bad.reason}"


def ok(task: str, score: float | None = None) -> Done:
    return Done(task, [Verdict.ok("heuristics", score), Verdict.ok("json_schema")])


def short(task: str, n: int) -> Done:
    return Done(task, [Verdict.reject("heuristics", f"too short: {n} < 8 chars", 0.1)])


def not_json(task: str) -> Done:
    return Done(
        task, [Verdict.ok("heuristics"), Verdict.reject("json_schema", "output is not valid JSON: line 1")]
    )


def chunk(records: list[Done], *, seeds: int, requests: int, cached: int, seconds: float) -> dict:
    stats = ChunkStats(seeds=seeds, requests=requests, requests_cached=cached, seconds=seconds)
    stats.prompt_tokens, stats.completion_tokens = 10 * requests, 3 * requests
    stats.count(records, VALIDATORS)
    return json.loads(json.dumps(stats.to_dict()))  # as the chunk marker is read back


A = [
    ok("captions", 0.9),
    short("captions", 3),
    short("captions", 5),
    not_json("qa"),
    Done("qa", error="backend: boom"),
]
B = [ok("captions", 0.5), ok("qa"), short("qa", 2)]


def test_totals_over_chunks():
    stats = merge_chunks(
        [
            chunk(A, seeds=4, requests=5, cached=1, seconds=2.0),
            chunk(B, seeds=2, requests=3, cached=3, seconds=2.0),
        ],
        wall_seconds=5.0,
    )
    assert sorted(stats) == sorted(LAYOUT + ADDED)
    assert stats["seeds"] == 6
    assert stats["requests"] == {"total": 8, "cached": 4, "sent": 4, "failed": 0}
    assert stats["records"] == {"accepted": 3, "rejected": 5, "total": 8}
    assert stats["tasks"] == {
        "captions": {"accepted": 2, "rejected": 2},
        "qa": {"accepted": 1, "rejected": 3},
    }
    assert stats["tokens"] == {"prompt": 80, "completion": 24}
    # Reject reasons group by validator and the reason's first field, most frequent first.
    assert list(stats["reject_reasons"].items()) == [
        ("heuristics: too short", 3),
        ("json_schema: output is not valid JSON", 1),
        ("backend: boom", 1),
    ]
    heur, schema = stats["validators"]["heuristics"], stats["validators"]["json_schema"]
    assert (heur["seen"], heur["kept"], heur["rejected"], heur["pass_rate"]) == (7, 4, 3, round(4 / 7, 4))
    assert heur["reasons"] == {"too short": 3}
    assert heur["score"]["count"] == 5 and heur["score"]["min"] == 0.1 and heur["score"]["max"] == 0.9
    assert (schema["seen"], schema["kept"], schema["rejected"]) == (4, 3, 1)
    assert stats["throughput"] == {
        "wall_seconds_last_session": 5.0,
        "chunk_seconds_total": 4.0,
        "records_per_second": 2.0,
        "completion_tokens_per_second": 6.0,
    }


def test_how_records_are_cut_into_chunks_does_not_change_the_counts():
    records = A + B
    whole = merge_chunks([chunk(records, seeds=6, requests=8, cached=4, seconds=4.0)], 1.0)
    for cut in range(len(records) + 1):
        parts = [records[:cut], records[cut:]]
        split = merge_chunks(
            [chunk(p, seeds=3, requests=4, cached=2, seconds=2.0) for p in parts],
            1.0,
        )
        for key in ("seeds", "requests", "records", "tasks", "tokens", "reject_reasons"):
            assert split[key] == whole[key], (cut, key)
        for name in VALIDATORS:
            a, b = copy.deepcopy(split["validators"][name]), copy.deepcopy(whole["validators"][name])
            sa, sb = a.pop("score") or {}, b.pop("score") or {}
            assert sa.pop("mean", 0) == pytest.approx(sb.pop("mean", 0)), (
                cut,
                name,
            )  # a sum in another order
            assert (a, sa) == (b, sb), (cut, name)


def test_a_validator_that_saw_nothing_is_listed_with_no_pass_rate():
    stats = merge_chunks(
        [chunk([Done("qa", error="render: bad")], seeds=1, requests=0, cached=0, seconds=0.0)], 0.0
    )
    assert stats["validators"]["heuristics"]["seen"] == 0
    assert stats["validators"]["heuristics"]["pass_rate"] is None
    assert stats["throughput"]["records_per_second"] is None  # no chunk time: no rate, not a division by 0
    assert stats["reject_reasons"] == {"render: bad": 1}


def test_no_chunks_is_an_empty_run():
    stats = merge_chunks([], 0.0)
    assert sorted(stats) == sorted(LAYOUT + ADDED)
    assert stats["records"] == {"accepted": 0, "rejected": 0, "total": 0} and stats["validators"] == {}


def test_tokens_per_model_and_time_per_stage_add_up_over_chunks_and_old_markers_count_nothing():
    one, two = ChunkStats(), ChunkStats()
    one.add_model("vlm", 10, 3, failed=False)
    one.add_model("vlm", 7, 0, failed=True)
    one.add_model("judge", 5, 1, failed=False)
    two.add_model("vlm", 2, 2, failed=False)
    one.time_per_stage = {"generate": {"seconds": 1.5}, "validate": {"seconds": 0.25}}
    two.time_per_stage = {"generate": {"seconds": 0.5}, "write": {"seconds": 0.125}}
    old = chunk(B, seeds=2, requests=3, cached=0, seconds=1.0)  # a marker written before these keys
    del old["models"], old["time_per_stage"]
    markers = [json.loads(json.dumps(c.to_dict())) for c in (one, two)] + [old]
    stats = merge_chunks(markers, 1.0)
    assert stats["models"] == {
        "judge": {"requests": 1, "failed": 0, "tokens": {"prompt": 5, "completion": 1}},
        "vlm": {"requests": 3, "failed": 1, "tokens": {"prompt": 19, "completion": 5}},
    }
    assert stats["time_per_stage"] == {
        "generate": {"seconds": 2.0},
        "validate": {"seconds": 0.25},
        "write": {"seconds": 0.125},
    }


def test_add_time_adds_up_per_stage():
    stats = ChunkStats()
    stats.add_time("validate", time.monotonic() - 2.0)
    stats.add_time("validate", time.monotonic() - 1.0)
    assert list(stats.time_per_stage) == ["validate"]
    assert stats.time_per_stage["validate"]["seconds"] >= 3.0
