"""`mmsynth gain` end to end on a tiny run folder: report files, contamination refusal, argument errors."""

from __future__ import annotations

import json

import pytest
from trainer_helpers import caption_rows, write_baseline, write_run_dir

from mmsynth.factory.cli.main import main
from mmsynth.trainer.report import FILES

FAST = ["--steps", "3", "--batch-size", "2", "--eval-size", "4", "--trials", "1", "--lr", "1e-3", "-q"]


@pytest.fixture
def tiny_run(tmp_path):
    base = write_baseline(tmp_path / "base", range(0, 10), range(100, 106), max_objects=3)
    run = write_run_dir(tmp_path / "run", "captions", caption_rows(range(200, 210), max_objects=3))
    return base, run


def test_gain_writes_report_into_the_run_folder(tiny_run, tiny_vlm, capsys):
    base, run = tiny_run
    args = ["gain", "--baseline", str(base), "--synthetic", str(run), "--student", str(tiny_vlm)]
    assert main([*args, "--shots", "0,1", "--seeds", "3", *FAST]) == 0
    out = capsys.readouterr().out
    assert "caption 0-shot replace50: gain" in out and "caption 1-shot" in out
    files = {name: run / "gain" / name for name in FILES}
    assert all(p.exists() for p in files.values())
    report = json.loads(files["report.json"].read_text())
    assert {(g["task"], g["shots"]) for g in report["gains"]} == {("caption", 0), ("caption", 1)}
    for g in report["gains"]:
        assert g["lo"] <= g["gain"] <= g["hi"] and g["n_seeds"] == 3 and g["n_examples"] == 4
    assert report["arms"]["baseline"]["size"] == 10
    assert report["arms"]["replace50"]["composition"] == {"baseline/caption": 5, "synthetic/caption": 5}
    assert report["decontamination"]["checked"] and report["decontamination"]["contaminated"] == 0
    assert report["split"].startswith("train split / test split")
    md = files["report.md"].read_text()
    assert "| caption | cider | 0 | replace50 |" in md and "95% CI" in md
    assert files["gain.png"].read_bytes()[:4] == b"\x89PNG"


def test_contaminated_synthetic_data_is_refused_unless_told(tmp_path, tiny_vlm, capsys):
    base = write_baseline(tmp_path / "base", range(0, 8), range(100, 104), max_objects=3)
    # Synthetic captions that copy the evaluation captions word for word (3-object descriptions: > 13 words).
    from trainer_helpers import scene

    leaked = [scene(i, 3)[1] for i in range(100, 104)]
    long_enough = [c for c in leaked if len(c.split()) >= 13]
    assert long_enough, "the leak needs captions of 13 words or more"
    rows = caption_rows(range(200, 204), max_objects=3, captions=leaked) + caption_rows(
        range(300, 304), max_objects=3
    )
    run = write_run_dir(tmp_path / "run", "captions", rows)
    args = [
        "gain",
        "--baseline",
        str(base),
        "--synthetic",
        str(run),
        "--student",
        str(tiny_vlm),
        "--shots",
        "0",
    ]
    assert main([*args, *FAST]) == 2
    assert "share 13-grams with the evaluation split" in capsys.readouterr().err
    assert not (run / "gain").exists()
    assert main([*args, *FAST, "--contaminated", "drop", "--seeds", "1"]) == 0
    dec = json.loads((run / "gain" / "report.json").read_text())["decontamination"]
    assert dec["action"] == "dropped" and dec["contaminated"] == len(long_enough)
    assert "dropped" in (run / "gain" / "report.md").read_text()


def test_bad_inputs_exit_2(tmp_path, capsys):
    assert main(["gain", "--baseline", str(tmp_path), "--synthetic", str(tmp_path)]) == 2
    assert "not an mmsynth run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["gain", "--baseline", "x", "--synthetic", "y", "--shots", "a,b"])


def test_text_only_student_runs_the_text_task_and_skips_image_tasks(tiny_lm, tmp_path):
    from mmsynth.trainer.data import Example, caption_example
    from mmsynth.trainer.gain import GainConfig, run_gain
    from mmsynth.trainer.student import TrainConfig

    def text(i, source="baseline"):
        return Example(
            id=f"{source}{i}",
            kind="text",
            prompt="",
            target=f"there are {i} red circles on the left",
            source=source,
        )

    real = [text(i) for i in range(6)]
    evals = [text(i + 10) for i in range(3)] + [caption_example("c", b"png", ["a red circle"])]
    cfg = GainConfig(
        student=str(tiny_lm),
        shots=(0, 1),
        seeds=1,
        trials=1,
        train=TrainConfig(steps=2, batch_size=2, progress=False),
    )
    report = run_gain(
        cfg, real, evals, [text(i, "synthetic") for i in range(4)], tmp_path, log=lambda m: None
    )
    assert list(report["tasks"]) == ["text"]
    assert any("caption skipped" in n for n in report["notes"]) and any(
        "only 1 seed" in n for n in report["notes"]
    )
    assert {g["shots"] for g in report["gains"]} == {0, 1}
