from __future__ import annotations

import json

import pytest

from mmsynth.validators import RECORD_REASON_FIELDS, ValidatorStats, Verdict, reason_key
from mmsynth.validators.stats import tally


def test_reason_key_groups_by_prefix():
    assert reason_key("too short: 3 < 10 chars") == "too short"
    assert reason_key("schema: $.a: 1 is not of type 'string'") == "schema"
    assert reason_key("empty output") == "empty output"
    assert reason_key(None) == "(no reason)"


@pytest.mark.parametrize(
    "validator, reason",
    [
        ("heuristics", "too short: 3 < 10 chars"),
        ("heuristics", "truncated"),
        ("json_schema", "output is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        ("exact_dedup", "duplicate: same text as rec-1"),
    ],
)
def test_one_cut_for_verdicts_and_records(validator, reason):
    """A record's reject reason ("<validator>: <reason>", stats.json's reject_reasons) and the verdict's
    reason (the validator's own `reasons`) fall in the same group: one cut, one more field for the name."""
    record_reason = f"{validator}: {reason}"
    assert reason_key(record_reason, RECORD_REASON_FIELDS) == f"{validator}: {reason_key(reason)}"


def test_record_reasons_keep_two_fields():
    # The keys stats.json had before the two reason_key functions became one.
    assert RECORD_REASON_FIELDS == 2
    assert reason_key("heuristics: too short: 2 < 10 chars", 2) == "heuristics: too short"
    assert reason_key("heuristics: charset", 2) == "heuristics: charset"
    assert reason_key(" generation failed ", 2) == "generation failed"
    assert reason_key("a:b:c:d", 3) == "a:b:c"


def test_counts_reasons_and_scores():
    stats = ValidatorStats("heuristics")
    for v in [
        Verdict.ok("heuristics"),
        Verdict.reject("heuristics", "too short: 3 < 10 chars"),
        Verdict.reject("heuristics", "too short: 4 < 10 chars"),
        Verdict.reject("heuristics", "repetition: top 3-gram covers 62% of 3-grams (max 30%)", 0.62),
        Verdict.ok("heuristics", 0.1),
    ]:
        stats.add(v)
    d = stats.to_dict()
    assert (d["seen"], d["kept"], d["rejected"]) == (5, 2, 3)
    assert d["reasons"] == {"too short": 2, "repetition": 1}
    assert list(d["reasons"]) == ["too short", "repetition"]  # most frequent first
    summary = {k: d["score"][k] for k in ("count", "mean", "min", "max")}
    assert summary == {"count": 2, "mean": pytest.approx(0.36), "min": 0.1, "max": 0.62}
    assert d["score"]["values"] == {"0.1": 1, "0.62": 1}
    assert stats.to_dict(top=1)["reasons"] == {"too short": 2}
    json.dumps(d)


def test_merge_and_round_trip():
    a, b = ValidatorStats("dedup"), ValidatorStats("dedup")
    a.add(Verdict.reject("dedup", "duplicate of: r1"))
    b.add(Verdict.reject("dedup", "duplicate of: r7", 1.0))
    b.add(Verdict.ok("dedup"))
    merged = a.merge(b)
    assert merged is a
    assert merged.to_dict()["reasons"] == {"duplicate of": 2}
    assert (merged.seen, merged.kept, merged.rejected) == (3, 1, 2)
    assert ValidatorStats.from_dict(merged.to_dict()).to_dict() == merged.to_dict()
    assert ValidatorStats("dedup").to_dict()["score"] is None
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(ValidatorStats("other"))


def test_tally_per_validator():
    stats = tally([[Verdict.ok("a"), Verdict.reject("b", "x: y")], [Verdict.reject("a", "z")]])
    assert {k: (s.seen, s.rejected) for k, s in stats.items()} == {"a": (2, 1), "b": (1, 1)}
    tally([[Verdict.ok("b")]], stats)
    assert stats["b"].seen == 2


def test_score_histogram_spans_the_observed_range_and_merges_exactly():
    from mmsynth.validators.stats import ValidatorStats
    from mmsynth.validators.types import Verdict

    a, b = ValidatorStats("clip"), ValidatorStats("clip")
    for s in (0.0, 0.05, 0.5):
        a.add(Verdict.ok("clip", s))
    for s in (0.95, 1.0):
        b.add(Verdict.reject("clip", "low", s))
    merged = ValidatorStats.from_dict(a.to_dict()).merge(ValidatorStats.from_dict(b.to_dict()))
    hist = merged.to_dict()["score"]["histogram"]
    assert hist["edges"][0] == 0.0 and hist["edges"][-1] == 1.0 and len(hist["edges"]) == 11
    assert hist["counts"] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    one = ValidatorStats("judge")
    one.add(Verdict.ok("judge", 4.0))
    assert one.to_dict()["score"]["histogram"] == {"edges": [4.0, 4.0], "counts": [1]}
