"""`mmsynth validate`: a recipe's validators over JSONL, Parquet, saved `datasets` folders and run folders."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_helpers import bomb_png
from PIL import Image

from mmsynth.factory.cli.main import main
from mmsynth.factory.dataset.records import Record
from mmsynth.factory.dataset.shards import shard_path, write_shard
from mmsynth.generators.scenes.world import make_scene


def write_recipe(tmp_path: Path, validators: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: filter
            seeds: {type: scenes, count: 1}
            models:
              vlm: {backend: transformers, model: "tiny:vlm"}
            tasks:
              - {name: qa, template: vqa.pairs, model: vlm}
            validators:
            """
        )
        + textwrap.indent(textwrap.dedent(validators), "  ")
    )
    return path


def read(out: Path, task: str, split: str) -> list[dict]:
    files = sorted((out / "data" / task).glob(f"{split}-*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def test_jsonl_with_a_column_mapping_and_bad_rows(tmp_path, capsys):
    Image.new("RGB", (16, 16), "red").save(tmp_path / "red.png")
    lines = [
        json.dumps({"caption": "A red square on white.", "img": "red.png", "source": "web"}),
        json.dumps({"caption": "ok", "img": "red.png", "source": "web"}),
        "{not json",
        json.dumps({"caption": None, "img": "red.png", "source": "web"}),
        json.dumps({"caption": "A picture that is not there.", "img": "missing.png", "source": "web"}),
    ]
    data = tmp_path / "captions.jsonl"
    data.write_text("\n".join(lines) + "\n")
    recipe = write_recipe(
        tmp_path, "- {type: heuristics, min_chars: 8}\n- {type: exact_dedup, key: text+image}\n"
    )
    out = tmp_path / "out"
    argv = ["validate", str(data), "--recipe", str(recipe), "--out", str(out)]
    code = main([*argv, "--text-column", "caption", "--image-column", "img", "--task", "captions"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "1 kept, 4 rejected of 5 rows (jsonl)" in printed

    kept = read(out, "captions", "train")
    assert [r["caption"] for r in kept] == ["A red square on white."]
    assert kept[0]["accepted"] and kept[0]["reject_reason"] is None
    assert [v["validator"] for v in kept[0]["verdicts"]] == ["heuristics", "exact_dedup"]
    reasons = sorted(r["reject_reason"] for r in read(out, "captions", "rejected"))
    assert reasons[0] == "heuristics: too short: 2 < 8 chars"
    assert (
        reasons[1]
        == f"input: {data}:3: invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    )
    assert reasons[2] == f"input: {data}:4: column 'caption' is null"
    assert reasons[3].startswith(f"input: {data}:5: ValueError: cannot read image missing.png")
    # A rejected row keeps its columns; an unreadable line keeps its text in the text column.
    by_reason = {r["reject_reason"]: r for r in read(out, "captions", "rejected")}
    assert by_reason[reasons[1]]["caption"] == "{not json"
    assert by_reason[reasons[3]]["img"] == "missing.png" and by_reason[reasons[3]]["source"] == "web"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records"] == {"accepted": 1, "rejected": 4, "total": 5}
    assert stats["input"] == {"path": str(data), "kind": "jsonl", "rows": 5}
    assert stats["validators"]["heuristics"]["seen"] == 2
    assert stats["reject_reasons"]["heuristics: too short"] == 1
    ds = datasets.load_dataset(str(out), "captions")
    assert ds["train"].num_rows == 1 and ds["rejected"].num_rows == 4


def qa_output(*pairs) -> str:
    return json.dumps({"pairs": [{"question": q, "answer": a, "type": "counting"} for q, a in pairs]})


def test_parquet_qa_checked_against_scenes(tmp_path):
    scene = make_scene(0, 5)
    n = len(scene["objects"])
    # The scene's objects as a list column: with no `seed` column, a row's other columns are its seed.
    table = pa.Table.from_pylist(
        [
            {"text": qa_output(("How many objects are there?", str(n))), "objects": scene["objects"]},
            {"text": qa_output(("How many objects are there?", str(n + 1))), "objects": scene["objects"]},
            {"text": '{"pairs": [', "objects": scene["objects"]},
        ]
    )
    data = tmp_path / "qa.parquet"
    pq.write_table(table, data)
    recipe = write_recipe(tmp_path, "- {type: json_schema}\n- {type: structure}\n- {type: scene_grounding}\n")
    out = tmp_path / "out"
    assert main(["validate", str(data), "--recipe", str(recipe), "--out", str(out), "--task", "qa"]) == 0
    assert len(read(out, "qa", "train")) == 1
    reasons = [r["reject_reason"] for r in read(out, "qa", "rejected")]
    assert reasons[0].startswith("scene_grounding: wrong answer: 0 of 1 checked correct")
    assert reasons[1].startswith("json_schema: output is not valid JSON: truncated")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["validators"]["scene_grounding"]["rejected"] == 1
    assert stats["validators"]["structure"]["seen"] == 2


def make_record(i: int, output: str, scene: dict) -> Record:
    return Record(
        id=f"r{i}", task="qa", seed_id="s0", seed_index=0,
        seed={k: v for k, v in scene.items() if k != "image"}, images=(scene["image"],), system="",
        prompt="<image>Write QA pairs.", output=output, parsed=json.loads(output), parse_error=None,
        finish_reason="stop", prompt_tokens=1, completion_tokens=1, template_id="vqa.pairs",
        template_version=1, template_hash="h", model="m", model_revision="r", backend="transformers",
        sampling={}, sample_seed=1, sample_index=i, request_key="k0", created_at="now",
    )  # fmt: skip


def test_run_folder_samples_checked_for_consistency(tmp_path):
    scene = make_scene(1, 2)
    n = len(scene["objects"])
    answers = [str(n), str(n), str(n + 2)]
    run = tmp_path / "run"
    (run / ".mmsynth").mkdir(parents=True)
    records = [
        make_record(i, qa_output(("How many objects are there?", a)), scene) for i, a in enumerate(answers)
    ]
    write_shard(shard_path(run, "qa", "train", 0), records)
    recipe = write_recipe(tmp_path, "- {type: answer_consistency}\n- {type: scene_grounding}\n")
    out = tmp_path / "out"
    # batch size 2 would cut the three samples of one request apart: batches never split a request_key.
    assert main(["validate", str(run), "--recipe", str(recipe), "--out", str(out), "--batch-size", "2"]) == 0
    kept, rejected = read(out, "qa", "train"), read(out, "qa", "rejected")
    assert [r["id"] for r in kept] == ["r0", "r1"]
    assert rejected[0]["id"] == "r2"
    assert rejected[0]["reject_reason"].startswith("answer_consistency: disagrees with majority")
    # The run's own lineage columns survive; verdicts are the new stack's.
    assert rejected[0]["template_id"] == "vqa.pairs" and rejected[0]["image"]["bytes"] == scene["image"].data
    assert [v["validator"] for v in kept[0]["verdicts"]] == ["answer_consistency", "scene_grounding"]


def test_saved_datasets_folder_keeps_image_features(tmp_path):
    images = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    ds = datasets.Dataset.from_dict({"text": ["A red image here.", "A blue image here."], "image": images})
    ds = ds.cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"))
    recipe = write_recipe(
        tmp_path, "- {type: heuristics, min_chars: 8}\n- {type: exact_dedup, key: text+image}\n"
    )
    out = tmp_path / "out"
    assert main(["validate", str(tmp_path / "saved"), "--recipe", str(recipe), "--out", str(out)]) == 0
    loaded = datasets.load_dataset(str(out), "data", split="train")
    assert loaded.num_rows == 2
    assert isinstance(loaded.features["image"], datasets.Image)
    assert loaded[0]["image"].size == (8, 8) and loaded[0]["accepted"] is True


def test_clear_errors(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"caption": "hello there"}) + "\n")
    recipe = write_recipe(tmp_path, "- {type: heuristics}\n")
    out = tmp_path / "out"
    assert main(["validate", str(data), "--recipe", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {data}: no text column 'text' (columns: caption); choose one with --text-column" in err
    assert main(["validate", str(tmp_path / "nope.jsonl"), "--recipe", str(recipe), "--out", str(out)]) == 2
    assert "nope.jsonl: no such file or folder" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    argv = [
        "validate",
        str(data),
        "--recipe",
        str(recipe),
        "--text-column",
        "caption",
        "--out",
        str(tmp_path / "busy"),
    ]
    assert main(argv) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    bad = write_recipe(tmp_path, "- {type: heuristic}\n")
    assert main(["validate", str(data), "--recipe", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "Did you mean 'heuristics'" in capsys.readouterr().err


def test_validate_help_lists_the_command(capsys):
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    assert "--text-column" in capsys.readouterr().out


def test_a_row_whose_image_is_over_the_pixel_limit_is_rejected_by_name(tmp_path):
    (tmp_path / "huge.png").write_bytes(bomb_png())
    Image.new("RGB", (16, 16), "red").save(tmp_path / "red.png")
    data = tmp_path / "captions.jsonl"
    data.write_text(
        json.dumps({"text": "A red square on white.", "image": "red.png"})
        + "\n"
        + json.dumps({"text": "A black square, very large.", "image": "huge.png"})
        + "\n"
    )
    recipe = write_recipe(tmp_path, "- {type: heuristics, min_chars: 8}\n")
    out = tmp_path / "out"
    assert main(["validate", str(data), "--recipe", str(recipe), "--out", str(out)]) == 0
    assert [r["image"] for r in read(out, "data", "train")] == ["red.png"]
    (rejected,) = read(out, "data", "rejected")
    assert rejected["reject_reason"].startswith(
        f"input: {data}:2: ImageTooLarge: image huge.png is 12000x12000 = 144,000,000 pixels, over the limit"
    )
