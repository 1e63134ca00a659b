from __future__ import annotations

import pytest

from mmsynth.validators import (
    Candidate,
    ExactDedupValidator,
    Validator,
    Verdict,
    build_validator,
    remember_accepted,
    run_stack,
)


class Recorder:
    """A validator that rejects texts containing `bad` and records what it was shown and told."""

    def __init__(self, name, bad="", tasks=None):
        self.name, self.bad, self.tasks = name, bad, tasks
        self.calls: list[list[str]] = []
        self.remembered: list[str] = []

    def applies_to(self, task):
        return self.tasks is None or task in self.tasks

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        self.calls.append([c.id for c in candidates])
        return [
            Verdict.reject(self.name, f"bad: {self.bad}")
            if self.bad and self.bad in c.text
            else Verdict.ok(self.name)
            for c in candidates
        ]

    def remember(self, candidate):
        self.remembered.append(candidate.id)


@pytest.fixture
def batch(make_candidate):
    return [
        make_candidate("fine caption", id="a"),
        make_candidate("has spam in it", id="b"),
        make_candidate("fine answer", id="c", task="vqa"),
        make_candidate("has junk", id="d"),
    ]


def test_short_circuit_and_batching(batch):
    first, second, third = Recorder("first", bad="spam"), Recorder("second", bad="junk"), Recorder("third")
    verdicts = run_stack([first, second, third], batch)
    assert first.calls == [["a", "b", "c", "d"]]
    assert second.calls == [["a", "c", "d"]]  # b was rejected by first
    assert third.calls == [["a", "c"]]
    assert [[v.validator for v in vs] for vs in verdicts] == [
        ["first", "second", "third"],
        ["first"],
        ["first", "second", "third"],
        ["first", "second"],
    ]
    assert verdicts[1][-1] == Verdict.reject("first", "bad: spam")
    assert verdicts[3][-1].reason == "bad: junk"


def test_applies_to_scopes_validators(batch):
    captions_only = Recorder("captions_only", bad="fine", tasks=["captions"])
    everyone = Recorder("everyone")
    verdicts = run_stack([captions_only, everyone], batch)
    assert captions_only.calls == [["a", "b", "d"]]
    assert everyone.calls == [["b", "c", "d"]]
    assert [v.validator for v in verdicts[2]] == ["everyone"]  # vqa skipped captions_only
    assert not verdicts[0][-1].keep


def test_the_protocol_declares_scope_memory_and_close(batch):
    class Plain:  # name, check and remember only: no task scope, no stateful flag, no close
        name = "plain"

        def check(self, candidates):
            return [Verdict.ok(self.name) for _ in candidates]

        def remember(self, candidate):
            pass

    assert not isinstance(Plain(), Validator)
    unscoped = ExactDedupValidator()  # the base class's defaults: every task, nothing to close
    assert isinstance(unscoped, Validator) and unscoped.stateful
    assert all(unscoped.applies_to(c.task) for c in batch)
    assert unscoped.close() is None
    [verdicts] = run_stack([unscoped], batch[:1])
    assert [v.validator for v in verdicts] == ["exact_dedup"]


def test_no_validator_called_with_an_empty_batch(make_candidate):
    vqa_only = Recorder("vqa_only", tasks=["vqa"])
    assert run_stack([vqa_only], [make_candidate("x", task="captions")]) == [[]]
    assert vqa_only.calls == []


def test_wrong_verdict_count_raises(batch):
    class Broken(Recorder):
        def check(self, candidates):
            return []

    with pytest.raises(RuntimeError, match="returned 0 verdicts for 4"):
        run_stack([Broken("broken")], batch)


def test_remember_accepted_only_remembers_fully_accepted(batch):
    first, second = Recorder("first", bad="spam"), Recorder("second", bad="junk", tasks=["captions"])
    verdicts = run_stack([first, second], batch)
    remember_accepted([first, second], batch, verdicts)
    assert first.remembered == ["a", "c"]
    assert second.remembered == ["a"]  # c is a vqa record: second does not apply to it


def test_remember_accepted_without_verdicts_is_the_resume_path(batch):
    rec = Recorder("rec", tasks=["captions"])
    remember_accepted([rec], batch)
    assert rec.remembered == ["a", "b", "d"]


def test_dedup_after_a_rejecting_validator(make_candidate):
    # The first "spam" copy is rejected by heuristics; the second copy in a later batch is not
    # a duplicate of a record that never reached the dataset.
    stack = [
        build_validator({"type": "heuristics", "extra_refusal_phrases": ["spam"]}),
        ExactDedupValidator(),
    ]
    one = [make_candidate("A dog runs.", id="a"), make_candidate("spam spam", id="b")]
    v1 = run_stack(stack, one)
    remember_accepted(stack, one, v1)
    two = [make_candidate("a dog runs", id="c"), make_candidate("A cat sleeps.", id="d")]
    v2 = run_stack(stack, two)
    assert [vs[-1].reason for vs in v1] == [None, "refusal: matched 'spam'"]
    assert [vs[-1].reason for vs in v2] == ["duplicate of: a", None]
