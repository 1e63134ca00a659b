"""The atomic file writer: the whole new file or the old one, never a temp file left behind."""

from __future__ import annotations

import pytest

from mmsynth.prompts.files import atomic_open, write_atomic
from mmsynth.prompts.files import tmp_path as temp_name_of


def test_write_atomic_writes_text_and_bytes_and_creates_the_folder(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    write_atomic(target, "héllo")
    assert target.read_bytes() == "héllo".encode()
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failing_body_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    target = tmp_path / "stats.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target, "w") as f:
        f.write("half of the new")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


def test_the_temp_file_is_hidden_beside_the_target(tmp_path):
    target = tmp_path / "data" / "train-00000.parquet"
    tmp = temp_name_of(target)
    assert tmp.parent == target.parent and tmp.name.startswith(".train-00000.parquet.tmp-")
    with atomic_open(target) as f:
        f.write(b"x")
        assert tmp.exists() and not target.exists()  # nothing under the final name until the rename
    assert target.read_bytes() == b"x" and not tmp.exists()


def test_only_whole_file_modes():
    with pytest.raises(ValueError, match="mode 'a'"), atomic_open("x", "a"):
        pass
