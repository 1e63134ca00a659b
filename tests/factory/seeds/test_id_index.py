"""The jsonl duplicate-id index keeps hashes, not ids: a hash match is confirmed by re-reading the
earlier line, so a collision is never a duplicate and the first line named is always right."""

from __future__ import annotations

import json
import random

import pytest

from mmsynth.factory.seeds import JsonlConfig, iter_seeds
from mmsynth.factory.seeds import jsonl as jsonl_module
from mmsynth.factory.seeds.id_index import IdIndex
from mmsynth.prompts.rows import jsonl_lines


def dup(lineno: int, id: str, first: int) -> str:
    return (
        f"seeds.jsonl:{lineno}: duplicate id {id!r} in field 'uid' (first on line {first}); "
        "make the ids unique, or drop id_field to use content ids"
    )


def check_against_a_dict(ids: list[str], hash_id) -> IdIndex:
    """Feed `ids` (offset = position) to an index and to a plain dict: same answers."""
    reads: list[int] = []

    def read_id(offset: int) -> str:
        reads.append(offset)
        return ids[offset]

    index = IdIndex(read_id, hash_id)
    seen: dict[str, int] = {}
    for pos, id in enumerate(ids):
        assert index.first_line(id, pos + 1, pos) == seen.setdefault(id, pos + 1), (pos, id)
    assert len(index) == len(seen)
    return index


def test_colliding_hashes_are_compared_as_strings():
    # hash = length: "a", "b", "c" collide, and so do "aa", "bb"
    ids = ["a", "b", "a", "aa", "c", "b", "bb", "aa", "c", "bb", "d", "a"]
    check_against_a_dict(ids, len)


def test_a_constant_hash_and_a_zero_hash_still_give_exact_answers():
    rng = random.Random(5)
    ids = [f"id{rng.randrange(300)}" for _ in range(2000)]
    check_against_a_dict(ids, lambda _: 0)
    check_against_a_dict(ids, lambda s: (1 << 64) - 1 if len(s) % 2 else 0)


def test_many_ids_through_several_doublings(monkeypatch):
    monkeypatch.setattr("mmsynth.factory.seeds.id_index.REHASH_CHUNK", 1000)  # rehash in many chunks
    rng = random.Random(7)
    ids = [str(rng.randrange(40_000)) for _ in range(60_000)]
    index = check_against_a_dict(ids, lambda s: int(s) % 5003)  # collisions and growth together
    assert index.nbytes < 60 * len(set(ids))
    check_against_a_dict(ids, lambda s: hash(s))


def test_a_hash_match_is_confirmed_by_reading_the_earlier_line():
    reads: list[int] = []
    index = IdIndex(lambda offset: reads.append(offset) or "x", len)
    assert index.first_line("x", 1, 0) == 1
    assert reads == []  # a new hash reads nothing
    assert index.first_line("x", 7, 50) == 1
    assert reads == [0]


def write(tmp_path, rows):
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows))
    return path


@pytest.mark.parametrize("start", [0, 3, 6])
def test_jsonl_duplicates_with_forced_collisions_name_the_right_first_line(tmp_path, monkeypatch, start):
    monkeypatch.setattr(
        "mmsynth.factory.seeds.id_index.IdIndex", lambda read_id: IdIndex(read_id, len)
    )  # all collide
    rows = [
        {"uid": "ab", "q": "x" * 5000},  # 1: a long line, re-read from its offset
        b"",  # 2: blank
        {"uid": "cd"},  # 3: same hash as "ab", not a duplicate
        b"\xef\xbb\xbf" + b'{"uid": 12}',  # 4: the id is "12"
        {"uid": "ab"},  # 5: duplicate of line 1
        b"not json",  # 6
        {"uid": "cd"},  # 7: duplicate of line 3
        {"uid": "12"},  # 8: duplicate of line 4 (ids compare as strings)
        {"uid": "ef"},  # 9: third id with that hash, new
        {"uid": "ef"},  # 10
    ]
    path = write(tmp_path, rows)
    seeds = list(iter_seeds(JsonlConfig(path=path, id_field="uid"), start=start))
    errors = {s.index: s.error for s in seeds}
    expected = {
        0: None,
        1: None,
        2: None,
        3: dup(5, "ab", 1),
        4: "seeds.jsonl:6: invalid JSON: Expecting value: line 1 column 1 (char 0)",
        5: dup(7, "cd", 3),
        6: dup(8, "12", 4),
        7: None,
        8: dup(10, "ef", 9),
    }
    assert errors == {i: e for i, e in expected.items() if i >= start}


def test_line_offsets_match_the_shared_line_reader(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSYNTH_SEED_MAX_LINE_BYTES", "100")
    raw = b'{"a": 1}\r\n\n   \n' + b"x" * 250 + b"\n" + b"y" * 100 + b"\n" + b'{"b": 2}' + b"z" * 200
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(raw)
    at = list(jsonl_module._lines_at(path))
    assert [(n, r) for n, _, r in at] == list(jsonl_lines(path, 100))
    for _, offset, r in at:
        if r:
            assert raw[offset:].startswith(r)
