"""The one row reader: each layout it knows, where a row is, and a clear error for what it does not know."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmsynth.prompts.rows import BadRow, RowsError, iter_rows, open_rows, split_of


def rows_of(parts) -> list:
    return [row for part in parts for batch in part.batches for row in batch]


def test_jsonl_rows_keep_their_lines_and_bad_lines_say_why(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{oops\n[1, 2]\n{"a": 4}\n')
    kind, (part,) = open_rows(path, batch_size=2)
    assert kind == "jsonl" and part.split == "train" and part.base_dir == tmp_path
    rows = rows_of([part])
    assert rows[0] == {"a": 1} and rows[3] == {"a": 4}
    assert isinstance(rows[1], BadRow) and rows[1].raw == "{oops" and rows[1].error.startswith("invalid JSON")
    assert rows[2] == BadRow("a JSON line must be an object, got list", "[1, 2]")
    assert [part.where(i) for i in range(4)] == [f"{path}:{n}" for n in (1, 3, 4, 5)]  # blank line 2 skipped
    with pytest.raises(ValueError, match=f"{path}:3: invalid JSON"):
        list(iter_rows(path))


def test_parquet_file_with_columns_and_batches(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist([{"a": i, "b": str(i)} for i in range(5)]), path)
    kind, (part,) = open_rows(path, columns=["b", "missing"], batch_size=2)
    assert kind == "parquet" and part.schema.names == ["b"]
    assert [len(b) for b in part.batches] == [2, 2, 1]
    assert part.where(3) == f"{path}: row 3"


def test_a_parquet_folder_takes_splits_from_file_and_folder_names(tmp_path):
    for rel in ("data/train-00000-of-00001.parquet", "data/test-00000.parquet", "validation/part.parquet"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([{"a": rel}]), tmp_path / rel)
    (tmp_path / ".hidden").mkdir()
    pq.write_table(pa.Table.from_pylist([{"a": "hidden"}]), tmp_path / ".hidden" / "x.parquet")
    kind, parts = open_rows(tmp_path)
    assert kind == "parquet"
    assert sorted((p.split, rows_of([p])[0]["a"]) for p in parts) == [
        ("test", "data/test-00000.parquet"),
        ("train", "data/train-00000-of-00001.parquet"),
        ("validation", "validation/part.parquet"),
    ]
    assert all(p.base_dir == tmp_path for p in parts)  # relative image paths resolve against the folder
    assert split_of(tmp_path / "whatever.parquet") == "train"


def test_a_saved_dataset_gives_one_part_per_split_with_image_cells_as_stored(tmp_path):
    from PIL import Image

    ds = datasets.Dataset.from_dict({"text": ["x"], "image": [Image.new("RGB", (4, 4), "red")]})
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "saved"))
    kind, parts = open_rows(tmp_path / "saved")
    assert kind == "datasets" and [p.split for p in parts] == ["train", "test"]
    (row,) = rows_of(parts[:1])
    assert row["image"]["bytes"].startswith(b"\x89PNG")  # not decoded to a PIL image
    assert parts[0].name == f"{tmp_path / 'saved'}[train]"
    assert isinstance(datasets.Features.from_arrow_schema(parts[0].schema)["image"], datasets.Image)


def test_a_run_folder_needs_its_marker(tmp_path):
    shard = tmp_path / "data" / "captions" / "train-00000.parquet"
    shard.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"id": "r1"}]), shard)
    pq.write_table(pa.Table.from_pylist([{"id": "r2"}]), shard.with_name("rejected-00000.parquet"))
    assert open_rows(tmp_path)[0] == "parquet"  # a Hub dataset with configs looks like this too
    (tmp_path / ".mmsynth").mkdir()
    kind, parts = open_rows(tmp_path)
    assert kind == "run" and [r["id"] for r in rows_of(parts)] == ["r1"]  # accepted records only


def test_csv_and_clear_errors(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("text,n\nhello,1\n")
    kind, parts = open_rows(csv)
    assert kind == "csv" and rows_of(parts) == [{"text": "hello", "n": 1}]
    with pytest.raises(RowsError, match=r"nope\.jsonl: no such file or folder"):
        open_rows(tmp_path / "nope.jsonl")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RowsError, match=r"notes\.txt: not a \.parquet, \.jsonl or \.csv file"):
        open_rows(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RowsError, match="no dataset found"):
        open_rows(tmp_path / "empty")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(RowsError, match=r"broken\.parquet: cannot read Parquet"):
        open_rows(tmp_path / "broken.parquet")
    (tmp_path / "lines").mkdir()
    (tmp_path / "lines" / "train.jsonl").write_text(json.dumps({"text": "a"}) + "\n")
    kind, parts = open_rows(tmp_path / "lines", hub=True)  # a local data folder `datasets` reads
    assert kind == "hub" and rows_of(parts) == [{"text": "a"}]
