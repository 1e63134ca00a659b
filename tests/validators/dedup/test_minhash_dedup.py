from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from mmsynth.validators import build_validator, remember_accepted, run_stack
from mmsynth.validators.dedup.minhash import MinHashDedupConfig, MinHashDedupValidator, optimal_bands
from mmsynth.validators.dedup.shingles import ngram_hashes, word_token_hashes, words

VOCAB = [f"w{i}" for i in range(5000)]


def random_doc(rng: random.Random, n: int = 80) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def edit(doc: str, every: int, rng: random.Random, first: int | None = None) -> str:
    """Replace one word in each `every` words (from `first`, else a random offset): each replacement
    changes 5 five-word shingles, so the Jaccard is about (1 - 5/every) / (1 + 5/every)."""
    ws = doc.split()
    for k in range(rng.randrange(every) if first is None else first, len(ws), every):
        ws[k] = f"x{rng.randrange(10**6)}"
    return " ".join(ws)


def jaccard(a: str, b: str, n: int = 5) -> float:
    wa, wb = words(a), words(b)
    sa = {tuple(wa[i : i + n]) for i in range(len(wa) - n + 1)}
    sb = {tuple(wb[i : i + n]) for i in range(len(wb) - n + 1)}
    return len(sa & sb) / len(sa | sb)


def stream(dedup, candidates, batch_size):
    """Check and remember in batches, as the factory does; returns the verdicts in order."""
    out = []
    for s in range(0, len(candidates), batch_size):
        batch = candidates[s : s + batch_size]
        verdicts = run_stack([dedup], batch)
        remember_accepted([dedup], batch, verdicts)
        out += [vs[-1] for vs in verdicts]
    return out


BASE = (
    "The red fox jumps over the lazy dog near the old river bank while two children watch "
    "from the wooden bridge and a heron waits in the reeds for fish to swim past"
)


def test_near_duplicate_of_remembered_rejected_and_distinct_kept(make_candidate):
    dedup = MinHashDedupValidator()
    first = make_candidate(BASE, id="a")
    assert dedup.check([first])[0].keep
    dedup.remember(first)
    near = BASE.replace("lazy dog", "lazy  dog!").upper()  # spacing, punctuation and case do not count
    near_edit = BASE.replace("swim past", "swim by")  # one shingle of 27 differs
    v_near, v_edit, v_other = dedup.check(
        [
            make_candidate(near, id="b"),
            make_candidate(near_edit, id="c"),
            make_candidate("A completely different caption about a city tram at night in the rain", id="d"),
        ]
    )
    assert v_near.reason == "near-duplicate of: a (jaccard~1.00)"
    assert v_near.validator == "minhash_dedup"
    assert not v_edit.keep and v_edit.reason.startswith("near-duplicate of: a (jaccard~")
    assert v_edit.score == pytest.approx(jaccard(BASE, near_edit), abs=0.15)
    assert v_other.keep


def test_in_batch_near_duplicate_rejected_without_changing_memory(make_candidate):
    dedup = MinHashDedupValidator()
    verdicts = dedup.check(
        [
            make_candidate(BASE, id="a"),
            make_candidate("Something else entirely, with its own words and no overlap at all", id="b"),
            make_candidate(BASE + " today", id="c"),
        ]
    )
    assert [v.keep for v in verdicts] == [True, True, False]
    assert verdicts[2].reason.startswith("near-duplicate of: a (")
    assert len(dedup) == 0  # only remember() changes memory


def test_rejected_in_batch_candidate_does_not_count_as_seen(make_candidate, monkeypatch):
    # b is a near-dup of remembered a; c is a near-dup of b but not of a: c is kept, since b never
    # reaches the dataset (the same rule as exact_dedup).
    rng = random.Random(3)
    a = random_doc(rng, 200)
    b = edit(a, 40, rng, first=5)
    c = edit(b, 40, rng, first=25)
    dedup = MinHashDedupValidator(MinHashDedupConfig(threshold=0.7, num_perm=256))
    dedup.remember(make_candidate(a, id="a"))
    j_ab, j_bc, j_ac = jaccard(a, b), jaccard(b, c), jaccard(a, c)
    assert j_ab > 0.76 and j_bc > 0.76 and j_ac < 0.62, (j_ab, j_bc, j_ac)
    vb, vc = dedup.check([make_candidate(b, id="b"), make_candidate(c, id="c")])
    assert vb.reason.startswith("near-duplicate of: a")
    assert vc.keep


def test_state_across_batches_and_resume_replay(make_candidate):
    rng = random.Random(7)
    originals = [random_doc(rng) for _ in range(60)]
    texts = originals + [edit(originals[k], 100, rng) for k in range(0, 60, 3)]
    rng.shuffle(texts)
    candidates = [make_candidate(t, id=f"r{i}") for i, t in enumerate(texts)]

    whole = stream(MinHashDedupValidator(), candidates, batch_size=len(candidates))
    for size in (1, 7):
        assert stream(MinHashDedupValidator(), candidates, batch_size=size) == whole
    # One word of 80 replaced: Jaccard 0.88, where the LSH S-curve finds about 98% of pairs.
    assert sum(not v.keep for v in whole) >= 18

    # Resume: a fresh validator fed the accepted records of the first half (no check in between)
    # judges the second half exactly as the uninterrupted run did.
    half = len(candidates) // 2
    live = MinHashDedupValidator()
    stream(live, candidates[:half], batch_size=10)
    resumed = MinHashDedupValidator()
    accepted = [c for c, v in zip(candidates[:half], whole[:half], strict=True) if v.keep]
    remember_accepted([resumed], accepted)
    assert len(resumed) == len(live) == len(accepted)
    assert stream(resumed, candidates[half:], 10) == whole[half:]


def test_recall_and_precision_on_planted_near_duplicates(make_candidate):
    rng = random.Random(11)
    originals = [random_doc(rng, rng.randint(60, 200)) for _ in range(400)]
    planted = {}
    for k in range(0, 400, 4):
        dup = edit(originals[k], rng.choice([100, 200]), rng)
        assert jaccard(originals[k], dup) >= 0.82
        planted[f"dup{k}"] = dup
    candidates = [make_candidate(t, id=f"orig{i}") for i, t in enumerate(originals)]
    candidates += [make_candidate(t, id=i) for i, t in planted.items()]
    rng.shuffle(candidates)
    verdicts = stream(MinHashDedupValidator(), candidates, batch_size=64)
    rejected = {c.id for c, v in zip(candidates, verdicts, strict=True) if not v.keep}
    # Whichever of a pair came first is kept: count pairs with one member rejected.
    pairs_found = sum(({f"orig{k}", f"dup{k}"} & rejected) != set() for k in range(0, 400, 4))
    assert pairs_found >= 95  # of 100
    assert len(rejected) == pairs_found  # nothing unrelated was rejected


def test_task_is_part_of_the_key(make_candidate):
    dedup = MinHashDedupValidator()
    dedup.remember(make_candidate(BASE, id="a", task="captions"))
    assert dedup.check([make_candidate(BASE, id="b", task="qa")])[0].keep
    assert not dedup.check([make_candidate(BASE, id="c", task="captions")])[0].keep


def test_short_and_empty_texts(make_candidate):
    dedup = MinHashDedupValidator()
    dedup.remember(make_candidate("A red car.", id="a"))  # fewer words than the shingle: one shingle
    dedup.remember(make_candidate("   ", id="blank"))  # nothing to hash: not remembered
    assert len(dedup) == 1
    v_same, v_other, v_blank = dedup.check(
        [
            make_candidate("a red car", id="b"),
            make_candidate("A blue car.", id="c"),
            make_candidate("", id="d"),
        ]
    )
    assert v_same.reason == "near-duplicate of: a (jaccard~1.00)"
    assert v_other.keep and v_blank.keep


def test_character_shingles(make_candidate):
    dedup = MinHashDedupValidator(MinHashDedupConfig(shingle="char", ngram=4))
    dedup.remember(make_candidate("Kitten sitting on the windowsill in the afternoon sun", id="a"))
    v_typo, v_other = dedup.check(
        [
            make_candidate("Kitten siting on the windowsill in the afternoon sun", id="b"),
            make_candidate("Puppy sleeping under the kitchen table at night", id="c"),
        ]
    )
    assert v_typo.reason.startswith("near-duplicate of: a")
    assert v_other.keep


def test_without_verification_any_shared_band_rejects(make_candidate):
    dedup = MinHashDedupValidator(MinHashDedupConfig(verify=False))
    assert dedup.bytes_per_record == 12 * dedup.bands
    dedup.remember(make_candidate(BASE, id="a"))
    [v] = dedup.check([make_candidate(BASE + " today", id="b")])
    assert not v.keep and v.reason.startswith("near-duplicate of: a (jaccard~")
    assert 0.5 < v.score <= 1.0


def test_optimal_bands_match_datasketch():
    # The values datasketch's (and Data-Juicer's) optimal_param returns, computed with scipy quad.
    assert optimal_bands(0.7, 128) == (14, 9)
    assert optimal_bands(0.7, 256) == (25, 10)
    assert optimal_bands(0.8, 128) == (9, 13)
    assert optimal_bands(0.5, 64) == (14, 4)
    assert optimal_bands(0.9, 128) == (5, 25)


def test_signature_estimates_jaccard():
    rng = random.Random(5)
    dedup = MinHashDedupValidator(MinHashDedupConfig(num_perm=256))
    for every in (4, 8, 16):
        a = random_doc(rng, 200)
        b = edit(a, every, rng)
        sig, empty = dedup.signatures([a, b])
        assert not empty.any()
        assert float((sig[0] == sig[1]).mean()) == pytest.approx(jaccard(a, b), abs=0.08)


def test_ngram_hashes_do_not_cross_texts():
    tokens, lengths = word_token_hashes(["a b c", "d e", "f g h i"])
    grams, counts = ngram_hashes(tokens, lengths, 3)
    assert counts.tolist() == [1, 0, 2]
    again, _ = ngram_hashes(*word_token_hashes(["x a b c", "f g h i"]), 3)
    assert set(grams.tolist()) <= set(again.tolist())
    _, short = ngram_hashes(tokens, lengths, 3, short_as_one=True)
    assert short.tolist() == [1, 1, 2]


def test_word_hashes_are_stable_and_unicode_aware():
    # Fixed values: state rebuilt in another process must hash the same.
    tokens, lengths = word_token_hashes(["Hello, World", "ÉCOLE—été"])
    assert lengths.tolist() == [2, 2]
    same, _ = word_token_hashes(["hello world", "école été"])
    assert tokens.tolist() == same.tolist()
    assert words("ÉCOLE—été l'été") == ["école", "été", "l", "été"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"bands": 10}, "set both `bands` and `rows`"),
        ({"bands": 20, "rows": 10}, "exceeds num_perm"),
        ({"threshold": 1.0}, "less than 1"),
        ({"ngram": 0}, "greater than or equal to 1"),
        ({"shingle": "sentence"}, "'word' or 'char'"),
        ({"num_perms": 64}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors(spec, message):
    with pytest.raises(ValidationError, match=message):
        build_validator({"type": "minhash_dedup", **spec})


def test_built_from_the_registry():
    v = build_validator({"type": "minhash_dedup", "threshold": 0.8, "num_perm": 64, "tasks": ["captions"]})
    assert isinstance(v, MinHashDedupValidator)
    assert (v.bands, v.rows) == optimal_bands(0.8, 64)
    assert v.stateful and v.applies_to("captions") and not v.applies_to("qa")
