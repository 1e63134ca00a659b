"""Fault injection, run level: kill -9 at random moments, and Ctrl-C once, twice or three times at
random moments, then rerun; the finished folder must hold exactly the rows (every column, not only
ids) of an uninterrupted run. The seed file mixes good lines with hostile ones.

One round of each by default (the `slow` tier); MMSYNTH_FAULT_ROUNDS=N runs N rounds of each, and
MMSYNTH_FAULT_SEED replays the random moments of a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fault_seed import fault_rng

pytestmark = pytest.mark.slow
ROUNDS = int(os.environ.get("MMSYNTH_FAULT_ROUNDS", "1"))


def write_recipe(base: Path) -> Path:
    lines = [json.dumps({"idea": f"idea number {i}"}) for i in range(16)]
    lines[3] = "[" * 2000 + "]" * 2000  # hostile lines: rejected records, never a crash
    lines[7] = '{"idea": NaN}'
    lines[11] = '{"idea": ' + "1" * 5000 + "}"
    (base / "ideas.jsonl").write_text("\n".join(lines) + "\n")
    recipe = base / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            """\
            name: faults
            seed: 3
            seeds: {type: jsonl, path: ideas.jsonl}
            models: {lm: {backend: transformers, model: "tiny:lm", device: cpu, batch_size: 2}}
            tasks:
              - {name: prompts, template: t2i.expand, model: lm, n: 2, sampling: {temperature: 0.8, max_tokens: 12}}
            validators: [{type: heuristics, min_chars: 1, reject_truncated: false}, {type: exact_dedup}]
            output: {chunk_size: 2}
            """
        )
    )
    return recipe


def rows(run: Path) -> list[dict]:
    """Every row of every shard (the wall-clock column left out), in a stable order."""
    out = []
    for f in sorted((run / "data").glob("*/*.parquet")):
        out += [{k: v for k, v in r.items() if k != "created_at"} for r in pq.read_table(f).to_pylist()]
    return sorted(out, key=lambda r: r["id"])


def start(recipe: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mmsynth.factory.cli.main", "run", str(recipe), "--out", str(out), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def claimed(proc: subprocess.Popen, out: Path) -> None:
    """Wait until the run has claimed its folder: Python and mmsynth are loaded, models not yet."""
    deadline = time.time() + 300
    while not (out / ".mmsynth" / "run.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)


def same_rows(got: list[dict], ref: list[dict]) -> None:
    revisions = {r["model_revision"] for r in got}, {r["model_revision"] for r in ref}
    assert revisions[0] == revisions[1], f"the model's revision changed between runs: {revisions}"
    assert got == ref


def finish(recipe: Path, out: Path) -> None:
    proc = start(recipe, out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("fault-ref")
    recipe = write_recipe(base)
    began = time.monotonic()
    finish(recipe, base / "run")  # a subprocess, timed the way the interrupted runs are
    elapsed = time.monotonic() - began
    ref = rows(base / "run")
    return recipe, ref, elapsed


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_kill_9_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(reference, tmp_path, round_):
    recipe, ref, elapsed = reference
    rng = fault_rng(f"kill-9 round {round_}")
    out = tmp_path / "run"
    for _ in range(rng.randrange(1, 3)):  # one or two kills before the run may finish
        proc = start(recipe, out)
        time.sleep(rng.uniform(0.0, elapsed))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finish(recipe, out)
    same_rows(rows(out), ref)


@pytest.mark.parametrize("round_", range(ROUNDS))
@pytest.mark.parametrize("presses", [1, 2, 3])
def test_ctrl_c_at_random_moments_exits_cleanly_and_the_rerun_equals_an_uninterrupted_run(
    reference, tmp_path, round_, presses
):
    recipe, ref, elapsed = reference
    rng = fault_rng(f"ctrl-c x{presses} round {round_}")
    out = tmp_path / "run"
    proc = start(recipe, out)
    # From the folder claim on (before it, Python itself is still importing mmsynth: docs/reliability.md).
    claimed(proc, out)
    time.sleep(rng.uniform(0.0, elapsed / 2))
    for i in range(presses):
        if i:
            time.sleep(rng.uniform(0.05, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{presses} Ctrl-C left the run hanging")
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err, err
    if proc.returncode:
        assert "resume" in err, err
    finish(recipe, out)
    same_rows(rows(out), ref)
