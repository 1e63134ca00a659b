"""A whole sweep on tiny random models: shared cache, no training twice, kill -9 resumes to the same report.

What the data is worth is not asserted here (random models write noise); the ranking on real data is
tested with the trained teacher in test_sweep_teacher.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmsynth.factory.sweep.runner import run_sweep

RECIPE = """\
name: sw
seed: 0
seeds: {type: scenes, count: 12, image_size: 64, max_objects: 1}
models:
  vlm: {backend: transformers, model: tiny:vlm, batch_size: 12}
tasks:
  - name: captions
    template: caption.short
    model: vlm
    sampling: {temperature: 0.8, max_tokens: 8}
validators: []
output: {chunk_size: 4}
"""

SWEEP = """\
sweep:
  recipe: r.yaml
  axes:
    validators: {none: [], dedup: [{type: exact_dedup}]}
  baseline: {scenes: {train: "0:6", test: "20000:6", max_objects: 1, qa: false}}
  student: tiny:vlm
  tasks: [caption]
  mode: add
  seeds: 2
  steps: 3
  batch_size: 2
  eval_size: 4
  device: cpu
"""


def write(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "r.yaml").write_text(RECIPE)
    (folder / "s.yaml").write_text(SWEEP)
    return folder / "s.yaml"


def stable(report: dict) -> dict:
    """The report without what a resumed run measures differently (wall time) or where it lives."""
    text = json.dumps(report, sort_keys=True)
    out = json.loads(text)
    for v in out["variants"] + out["cut"] + out.get("unmeasured", []):
        v.pop("seconds", None)
        v.pop("run_dir", None)
    out.pop("trainings", None)
    return out


@pytest.mark.slow
def test_one_cache_and_no_training_twice(tmp_path, tiny_vlm, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "0")  # not a terminal: the live view writes plain lines
    spec = write(tmp_path / "a")
    first = run_sweep(spec, tmp_path / "a" / "out", log=lambda m: None, live=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[sweep] variants 0/2 generated | generating")
    assert any(
        line.startswith("[sweep] variants 2/2 generated | rung full (1 of 1): 0/3 arms") for line in lines
    )
    # The last line names the winner the report names, with its interval on the ranking task.
    assert lines[-1].startswith("[sweep] variants 2/2 generated | rung full (1 of 1): 3/3 arms measured")
    assert f"best: {first['best']} (" in lines[-1] and " on caption@0, ahead of " in lines[-1]
    by_name = {v["variant"]: v for v in first["variants"]}
    assert by_name["v00"]["requests_sent"] == 12 and by_name["v00"]["requests_reused"] == 0
    # A validator-only change reads every answer from the shared cache.
    assert by_name["v01"]["requests_sent"] == 0 and by_name["v01"]["requests_reused"] == 12
    # Baseline + 2 variants, 2 seeds each; when dedup rejected nothing both variants hold the same
    # examples, which is one arm: trained once.
    same = by_name["v00"]["accepted"] == by_name["v01"]["accepted"]
    assert first["trainings"] == {"full": 4 if same else 6}
    again = run_sweep(spec, tmp_path / "a" / "out", log=lambda m: None)
    assert again["trainings"] == {"full": 0}
    assert stable(again) == stable(first)
    best = (tmp_path / "a" / "out" / "best-recipe.yaml").read_text()
    assert best.startswith("# Chosen by `mmsynth sweep`")
    winner_card = tmp_path / "a" / "out" / "runs" / first["best"] / "gain" / "report.md"
    assert "How this recipe was chosen" in winner_card.read_text()


@pytest.mark.slow
def test_kill_minus_9_mid_sweep_resumes_to_the_same_report(tmp_path, tiny_vlm):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = run_sweep(write(tmp_path / "ref"), tmp_path / "ref" / "out", log=lambda m: None)
    spec = write(tmp_path / "k")
    out = tmp_path / "k" / "out"
    cmd = [sys.executable, "-m", "mmsynth.factory.cli.main", "sweep", str(spec), "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 170
    # Kill it once some, but not all, trainings are done (or during generation if it is fast).
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "arms").glob("*.json"))) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, (
        "the sweep finished before it could be killed: " + proc.stderr.read().decode()[-500:]
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert stable(report) == stable(reference)
    assert report["trainings"]["full"] < 6  # the arms finished before the kill were not trained again
