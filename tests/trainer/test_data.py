"""Reading run folders by their Parquet column contract, and baseline datasets by their columns."""

from __future__ import annotations

import json

import pytest
from image_helpers import bomb_png
from trainer_helpers import caption_rows, png_bytes, write_run_dir

from mmsynth.trainer.data import is_run_dir, load_dataset_examples, read_run_dir


def test_run_dir_captions_vqa_documents_and_rejects(tmp_path):
    rows = caption_rows([0, 1])
    rows.append({**caption_rows([2])[0], "id": "bad", "accepted": False, "output": "rejected text"})
    write_run_dir(tmp_path, "captions", rows)
    pairs = {
        "pairs": [
            {"question": "How many circles?", "answer": "1", "type": "counting"},
            {"question": "Colour?", "answer": "red", "type": "colour"},
        ]
    }
    write_run_dir(
        tmp_path,
        "qa",
        [
            {
                "id": "q",
                "task": "qa",
                "image": {"bytes": png_bytes(), "path": None},
                "output": "{}",
                "parsed": json.dumps(pairs),
                "accepted": True,
            }
        ],
    )
    write_run_dir(
        tmp_path,
        "docs",
        [
            {
                "id": "d",
                "task": "docs",
                "output": "",
                "accepted": True,
                "texts": ["Intro", None, "Outro"],
                "images": [None, {"bytes": png_bytes(), "path": None}, None],
            }
        ],
    )
    assert is_run_dir(tmp_path)
    ex = read_run_dir(tmp_path)
    by_kind = {}
    for e in ex:
        by_kind.setdefault(e.kind, []).append(e)
    assert [e.id for e in by_kind["caption"]] == ["syn-0", "syn-1"]  # the rejected record is not used
    assert all(e.source == "synthetic" and len(e.images) == 1 for e in by_kind["caption"])
    assert [(e.prompt.endswith("How many circles?"), e.target) for e in by_kind["vqa"]] == [
        (True, "1"),
        (False, "red"),
    ]
    (doc,) = by_kind["interleaved"]
    assert doc.target == "Intro\n<image>\nOutro" and len(doc.images) == 1 and doc.prompt == ""
    assert [e.kind for e in read_run_dir(tmp_path, tasks=["qa"])] == ["vqa", "vqa"]


def test_not_a_run_dir(tmp_path):
    assert not is_run_dir(tmp_path)


def test_jsonl_baseline_kinds(jsonl_baseline):
    (train,) = load_dataset_examples(jsonl_baseline).values()
    kinds = [e.kind for e in train]
    assert kinds == ["caption", "vqa", "text", "text"]  # the row with no known column is skipped
    cap, vqa, qa, lm = train
    assert cap.images and cap.images[0].startswith(b"\x89PNG") and cap.target == "a red square"
    assert vqa.target == "red" and len(vqa.references) == 10
    assert qa.prompt == "2+2=" and qa.target == "4"
    assert lm.prompt == "" and lm.target.startswith("plain text")


def test_a_baseline_image_over_the_pixel_limit_is_an_error_naming_its_row(tmp_path):
    (tmp_path / "huge.png").write_bytes(bomb_png())
    path = tmp_path / "base.jsonl"
    rows = [{"text": "plain text"}, {"image": "huge.png", "caption": "a black square"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:2: image huge\.png is 12000x12000 = 144,000,000 pixels"):
        load_dataset_examples(path)
    path.write_text(json.dumps(rows[0]) + "\n{broken\n")
    with pytest.raises(ValueError, match=rf"{path}:2: invalid JSON"):
        load_dataset_examples(path)
