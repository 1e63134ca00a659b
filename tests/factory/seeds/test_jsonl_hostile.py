"""Every bad JSONL seed line becomes an error seed naming file:line and the reason; nothing crashes."""

from __future__ import annotations

import json

import pytest

from mmsynth.factory.seeds import JsonlConfig, count_seeds, iter_seeds, seed_fields


def write(tmp_path, lines: list[bytes | str]):
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(b"".join((x.encode() if isinstance(x, str) else x) + b"\n" for x in lines))
    return path


GOOD = json.dumps({"uid": "ok", "q": "fine"})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[" * 1500 + "]" * 1500, "nested too deeply"),
        ('{"a": ' + "[" * 1500 + "]" * 1500 + "}", "nested too deeply"),
        ('{"a": ' + "[" * 100 + "]" * 100 + "}", "nested too deeply (more than 64 levels)"),
        ('{"n": ' + "7" * 5000 + "}", "invalid JSON value: Exceeds the limit"),
        ('{"x": NaN}', "invalid JSON value: NaN is not valid JSON"),
        ('{"x": Infinity}', "invalid JSON value: Infinity is not valid JSON"),
        ('{"x": -Infinity}', "invalid JSON value: -Infinity is not valid JSON"),
        ('{"x": 1e999}', "invalid JSON value: 1e999 overflows to infinity"),
        (b'{"x": "\xff\xfe"}', "invalid UTF-8: invalid start byte at byte 7"),
        ('{"x": "unterminated}', "invalid JSON: "),
        ("12", "expected a JSON object, got int"),
    ],
)
def test_a_hostile_line_is_an_error_seed_at_its_line(tmp_path, line, reason):
    path = write(tmp_path, [GOOD, "", line, GOOD.replace("ok", "ok2")])
    seeds = list(iter_seeds(JsonlConfig(path=path)))
    assert [s.error for s in seeds[::2]] == [None, None]
    assert seeds[1].error.startswith(f"seeds.jsonl:3: {reason}"), seeds[1].error
    assert seeds[1].fields == {}
    assert count_seeds(JsonlConfig(path=path)) == 3
    assert seed_fields(JsonlConfig(path=path)) == {"uid", "q"}


def test_a_line_over_the_size_limit_is_refused_without_being_held(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSYNTH_SEED_MAX_LINE_BYTES", "1000")
    big = json.dumps({"q": "x" * 5_000_000})
    path = write(tmp_path, [big, GOOD, json.dumps({"q": "y" * 990})])
    seeds = list(iter_seeds(JsonlConfig(path=path)))
    assert seeds[0].error == (
        "seeds.jsonl:1: line longer than 1,000 bytes (set MMSYNTH_SEED_MAX_LINE_BYTES to allow more)"
    )
    assert seeds[1].error is None and seeds[1].fields["uid"] == "ok"
    assert seeds[2].error is None  # 1000 bytes and its newline: at the limit, not over it
    assert count_seeds(JsonlConfig(path=path)) == 3
    monkeypatch.setenv("MMSYNTH_SEED_MAX_LINE_BYTES", "many")
    with pytest.raises(ValueError, match="MMSYNTH_SEED_MAX_LINE_BYTES='many' must be a positive"):
        list(iter_seeds(JsonlConfig(path=path)))


def test_the_default_line_limit_is_16_mib(monkeypatch):
    from mmsynth.factory.seeds.jsonl import max_line_bytes

    monkeypatch.delenv("MMSYNTH_SEED_MAX_LINE_BYTES", raising=False)
    assert max_line_bytes() == 16 * 1024 * 1024


def test_a_repeated_id_is_refused_at_its_line_also_after_a_resume(tmp_path):
    rows = [{"uid": "a"}, {"uid": "b"}, {"uid": "a"}, {"uid": 1}, {"uid": "1"}]
    path = write(tmp_path, [json.dumps(r) for r in rows])
    config = JsonlConfig(path=path, id_field="uid")
    seeds = list(iter_seeds(config))
    assert [s.error for s in seeds] == [
        None,
        None,
        "seeds.jsonl:3: duplicate id 'a' in field 'uid' (first on line 1); make the ids unique, "
        "or drop id_field to use content ids",
        None,
        "seeds.jsonl:5: duplicate id '1' in field 'uid' (first on line 4); make the ids unique, "
        "or drop id_field to use content ids",
    ]
    assert len({s.id for s in seeds}) == 5  # the refused ones get content ids: records stay unique
    resumed = list(iter_seeds(config, start=2))
    assert resumed == seeds[2:]


def test_a_byte_order_mark_on_the_first_line_is_accepted(tmp_path):
    path = write(tmp_path, [b"\xef\xbb\xbf" + GOOD.encode()])
    (seed,) = iter_seeds(JsonlConfig(path=path))
    assert seed.error is None and seed.fields == {"uid": "ok", "q": "fine"}
