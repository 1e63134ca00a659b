from __future__ import annotations

from mmsynth.validators import ExactDedupConfig, ExactDedupValidator, remember_accepted


def test_duplicate_of_remembered_rejected_with_first_id(make_candidate):
    dedup = ExactDedupValidator()
    first = make_candidate("A red car.", id="a")
    assert dedup.check([first])[0].keep
    dedup.remember(first)
    [v] = dedup.check([make_candidate("A red car.", id="b")])
    assert not v.keep
    assert v.reason == "duplicate of: a"
    assert v.validator == "exact_dedup"


def test_distinct_outputs_kept(make_candidate):
    dedup = ExactDedupValidator()
    dedup.remember(make_candidate("A red car.", id="a"))
    assert dedup.check([make_candidate("A blue car.", id="b")])[0].keep


def test_in_batch_duplicate_rejected_without_changing_memory(make_candidate):
    dedup = ExactDedupValidator()
    batch = [
        make_candidate("A red car.", id="a"),
        make_candidate("A dog.", id="b"),
        make_candidate("A red car.", id="c"),
    ]
    verdicts = dedup.check(batch)
    assert [v.keep for v in verdicts] == [True, True, False]
    assert verdicts[2].reason == "duplicate of: a"
    assert len(dedup) == 0  # only remember() changes memory


def test_normalisation(make_candidate):
    dedup = ExactDedupValidator()
    dedup.remember(make_candidate("A red car, parked.", id="a"))
    [v] = dedup.check([make_candidate("  a RED   car parked!\n", id="b")])
    assert v.reason == "duplicate of: a"
    # Full-width letters fold to ASCII under NFKC.
    assert dedup.check([make_candidate("Ａ red car parked", id="c")])[0].reason == "duplicate of: a"


def test_normalisation_can_be_turned_off(make_candidate):
    cfg = ExactDedupConfig(lowercase=False, strip_punctuation=False, collapse_whitespace=False)
    dedup = ExactDedupValidator(cfg)
    dedup.remember(make_candidate("A red car.", id="a"))
    for text in ["a red car.", "A red car", "A  red car."]:
        assert dedup.check([make_candidate(text, id="b")])[0].keep, text
    assert not dedup.check([make_candidate("A red car.", id="b")])[0].keep


def test_key_includes_task(make_candidate):
    dedup = ExactDedupValidator()
    dedup.remember(make_candidate("Yes.", id="a", task="vqa"))
    assert dedup.check([make_candidate("Yes.", id="b", task="captions")])[0].keep
    assert not dedup.check([make_candidate("Yes.", id="c", task="vqa")])[0].keep


def test_text_key_ignores_images(make_candidate, image_a, image_b):
    dedup = ExactDedupValidator()
    dedup.remember(make_candidate("A cat.", id="a", images=(image_a,)))
    assert dedup.check([make_candidate("A cat.", id="b", images=(image_b,))])[0].reason == "duplicate of: a"


def test_text_image_key(make_candidate, image_a, image_b):
    dedup = ExactDedupValidator(ExactDedupConfig(key="text+image"))
    dedup.remember(make_candidate("A cat.", id="a", images=(image_a,)))
    same_caption_other_image = make_candidate("A cat.", id="b", images=(image_b,))
    same_caption_same_image = make_candidate("a cat", id="c", images=(image_a,))
    v_other, v_same = dedup.check([same_caption_other_image, same_caption_same_image])
    assert v_other.keep
    assert v_same.reason == "duplicate of: a"


def test_structured_outputs_compared_by_value(make_candidate):
    schema = {"type": "object"}
    dedup = ExactDedupValidator()
    dedup.remember(
        make_candidate('{"a": 1, "b": "x"}', id="a", parsed={"a": 1, "b": "x"}, output_schema=schema)
    )
    fenced = make_candidate(
        '```json\n{"b":"x","a":1}\n```', id="b", parsed={"b": "x", "a": 1}, output_schema=schema
    )
    assert dedup.check([fenced])[0].reason == "duplicate of: a"


def test_replayed_structured_candidate_has_the_same_key(make_candidate):
    # On resume the factory rebuilds candidates from shard rows: parsed is there, output_schema is not.
    dedup = ExactDedupValidator()
    live = make_candidate('```json\n{"a": 1}\n```', id="a", parsed={"a": 1}, output_schema={"type": "object"})
    replayed = make_candidate('```json\n{"a": 1}\n```', id="a", parsed={"a": 1})
    assert dedup.digest(live) == dedup.digest(replayed)


def test_remember_keeps_the_first_id(make_candidate):
    dedup = ExactDedupValidator()
    dedup.remember(make_candidate("A cat.", id="a"))
    dedup.remember(make_candidate("A cat.", id="b"))
    assert len(dedup) == 1
    assert dedup.check([make_candidate("A cat.", id="c")])[0].reason == "duplicate of: a"


def test_rejected_then_seen_record_is_not_remembered(make_candidate):
    # "a" passes dedup but a later validator rejects it: the caller does not remember it,
    # so the same text later is new, not a duplicate of a record that is not in the dataset.
    dedup = ExactDedupValidator()
    a = make_candidate("A cat.", id="a")
    assert dedup.check([a])[0].keep
    assert dedup.check([make_candidate("A cat.", id="b")])[0].keep


def test_resume_state_equals_uninterrupted_run(make_candidate):
    texts = ["A cat.", "A dog.", "a cat", "A bird.", "A DOG!", "A fish.", "A bird", "A cow."]
    stream = [make_candidate(t, id=f"r{i}") for i, t in enumerate(texts)]
    batches = [stream[:3], stream[3:5], stream[5:]]

    live = ExactDedupValidator()
    accepted = []
    for batch in batches:
        verdicts = live.check(batch)
        remember_accepted([live], batch, [[v] for v in verdicts])
        accepted += [c for c, v in zip(batch, verdicts, strict=True) if v.keep]
    assert [c.id for c in accepted] == ["r0", "r1", "r3", "r5", "r7"]

    resumed = ExactDedupValidator()
    for c in accepted:
        resumed.remember(c)
    assert resumed._first == live._first

    probe = [make_candidate(t, id=f"p{i}") for i, t in enumerate(["A cat", "A horse.", "a fish", "A horse"])]
    assert resumed.check(probe) == live.check(probe)
    assert [v.reason for v in live.check(probe)] == [
        "duplicate of: r0",
        None,
        "duplicate of: r5",
        "duplicate of: p1",
    ]
