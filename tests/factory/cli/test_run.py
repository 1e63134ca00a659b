"""End to end: a recipe runs into a dataset folder; reruns, kills and bad input behave as promised."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import pytest

from mmsynth.factory.cli.main import main

pytestmark = pytest.mark.slow


def write_recipe(
    path: Path, *, count: int = 12, chunk: int = 4, extra_tasks: str = "", model: str = "tiny:vlm"
) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""\
            name: e2e
            seed: 7
            seeds: {{type: scenes, count: {count}, image_size: 64}}
            models:
              vlm: {{backend: transformers, model: "{model}", batch_size: 8, device: cpu}}
            tasks:
              - name: captions
                template: caption.short
                model: vlm
                n: 2
                sampling: {{temperature: 0.8, max_tokens: 12}}
              - name: qa
                template: vqa.pairs
                model: vlm
                inputs: {{scene: description}}
                sampling: {{max_tokens: 16}}
            {extra_tasks}
            validators:
              - {{type: heuristics, min_chars: 4, reject_truncated: false}}
              - {{type: json_schema}}
              - {{type: exact_dedup}}
            output: {{chunk_size: {chunk}}}
            """
        )
    )
    return path


def ids(run: Path) -> dict[str, list[str]]:
    out = {}
    for split in ("train", "rejected"):
        files = sorted((run / "data").glob(f"*/{split}-*.parquet"))
        out[split] = (
            sorted(datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")["id"])
            if files
            else []
        )
    return out


def log_lines(run: Path) -> list[dict]:
    path = run / ".mmsynth" / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def log_keys(run: Path, event: str) -> list[str]:
    return [k for e in log_lines(run) if e["event"] == event for k in e["keys"]]


def run_cli(recipe: Path, out: Path, *extra: str, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mmsynth.factory.cli.main",
            "run",
            str(recipe),
            "--out",
            str(out),
            "-q",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env or os.environ.copy(),
        timeout=600,
        **kw,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run that the interrupted ones must reproduce."""
    base = tmp_path_factory.mktemp("ref")
    recipe = write_recipe(base / "recipe.yaml", count=24, chunk=4)
    out = base / "run"
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 0
    return recipe, out


def test_run_writes_a_loadable_dataset_with_lineage(reference):
    _, out = reference
    assert (out / "manifest.json").exists()
    ds = datasets.load_dataset(str(out))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records"]["total"] == 24 * 3  # 2 captions + 1 qa per scene
    assert len(ds["train"]) + len(ds["rejected"]) == stats["records"]["total"]
    assert stats["requests"]["sent"] == 48 and stats["requests"]["cached"] == 0
    row = (ds["train"] if len(ds["train"]) else ds["rejected"])[0]
    for col in (
        "template_id",
        "template_hash",
        "model",
        "model_revision",
        "backend",
        "sampling",
        "sample_seed",
        "finish_reason",
        "verdicts",
        "seed_id",
    ):
        assert row[col] not in (None, ""), col
    assert row["image"].size == (64, 64)
    assert row["model"] == "tiny:vlm" and row["model_revision"].startswith("local-")
    rej = ds["rejected"]
    assert all(r for r in rej["reject_reason"])
    qa = datasets.load_dataset(str(out), "qa", split="rejected")
    assert set(qa["task"]) == {"qa"}
    # Reasons in stats match the rows.
    assert sum(stats["reject_reasons"].values()) == len(rej)


def test_rerun_of_a_complete_run_sends_nothing(reference, capsys):
    recipe, out = reference
    before = log_keys(out, "sent")
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert log_keys(out, "sent") == before


def test_kill_9_then_rerun_equals_an_uninterrupted_run(reference, tmp_path):
    _, ref_out = reference
    recipe = write_recipe(tmp_path / "recipe.yaml", count=24, chunk=4)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmsynth.factory.cli.main", "run", str(recipe), "--out", str(out), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = out / ".mmsynth" / "chunks" / "00001.json"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
    answered_before = set(log_keys(out, "answered"))
    assert answered_before, "nothing was answered before the kill"
    lines_before = len(log_lines(out))

    r = run_cli(recipe, out)
    assert r.returncode == 0, r.stderr
    sent_after = {k for e in log_lines(out)[lines_before:] if e["event"] == "sent" for k in e["keys"]}
    assert not answered_before & sent_after, "answered requests were sent again after the kill"
    assert ids(out) == ids(ref_out)
    # Together the two sessions sent every request of the job, and nothing outside it.
    assert set(log_keys(out, "sent")) == set(log_keys(ref_out, "sent"))


def test_ctrl_c_drains_and_resume_completes(reference, tmp_path):
    _, ref_out = reference
    recipe = write_recipe(tmp_path / "recipe.yaml", count=24, chunk=4)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmsynth.factory.cli.main", "run", str(recipe), "--out", str(out), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    marker = out / ".mmsynth" / "chunks" / "00000.json"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the run finished before Ctrl-C arrived")
    assert proc.returncode == 130, err
    assert "resume" in err
    # Every batch that was sent before the stop was answered and cached: nothing in flight was lost.
    assert set(log_keys(out, "sent")) == set(log_keys(out, "answered"))
    assert run_cli(recipe, out).returncode == 0
    assert ids(out) == ids(ref_out)


def test_corrupt_image_seed_becomes_a_rejected_record(tmp_path):
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (32, 32), colour).save(imgs / f"ok{i}.png")
    (imgs / "broken.png").write_bytes(b"\x89PNG this is not an image")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        textwrap.dedent(
            """\
            name: folder
            seeds: {type: image_folder, path: imgs}
            models: {vlm: {backend: transformers, model: "tiny:vlm", device: cpu}}
            tasks: [{name: captions, template: caption.short, model: vlm, sampling: {max_tokens: 8}}]
            validators: [{type: heuristics, reject_truncated: false, min_chars: 1}]
            """
        )
    )
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 0
    ds = datasets.load_dataset(str(out))
    rows = [r for split in ds.values() for r in split]
    assert len(rows) == 3
    (bad,) = [r for r in rows if "broken.png" in (r["reject_reason"] or "")]
    assert bad["reject_reason"].startswith("seed: cannot decode image")
    assert not bad["accepted"]


@pytest.mark.parametrize(
    ("patch", "expect"),
    [
        (
            ("max_tokens: 12", "max_token: 12"),
            r"recipe.yaml:\d+:\d+: tasks\[0\]\.sampling\.max_token.*max_tokens",
        ),
        (("n: 2", "n: two"), r"recipe.yaml:\d+:\d+: tasks\[0\]\.n"),
        (
            ("inputs: {scene: description}", "inputs: {scene: descripton}"),
            r"recipe.yaml:\d+:\d+: .*descripton.*description",
        ),
        (
            ("template: caption.short", "template: caption.shrt"),
            r"recipe.yaml:\d+:\d+: tasks\[0\]\.template.*caption\.short",
        ),
        (
            ("type: exact_dedup", "type: exact_dedupe"),
            r"recipe.yaml:\d+:\d+: validators\[2\]\.type.*exact_dedup",
        ),
        (("min_chars: 4", "min_char: 4"), r"recipe.yaml:\d+:\d+: validators\[0\]\.min_char.*min_chars"),
        (
            ("device: cpu}", "device: cpu, options: {temperature: 1}}"),
            r"recipe.yaml:\d+:\d+: models\.vlm\.options.*takes no options",
        ),
        (
            ("seeds: {type: scenes, count: 12, image_size: 64}", "seeds: {type: jsonl, path: missing.jsonl}"),
            r"recipe.yaml:\d+:\d+: seeds\.path.*missing\.jsonl",
        ),
    ],
)
def test_malformed_recipe_fails_with_file_line_and_writes_nothing(tmp_path, capsys, patch, expect):
    import re

    recipe = write_recipe(tmp_path / "recipe.yaml")
    text = recipe.read_text()
    assert patch[0] in text
    recipe.write_text(text.replace(patch[0], patch[1], 1))
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(expect, err), err
    assert not out.exists()


def test_changed_template_is_refused_then_fresh_regenerates_only_its_records(tmp_path):
    tdir = tmp_path / "tpl"
    tdir.mkdir()
    src = Path(__file__).resolve().parents[3] / "prompts" / "builtin" / "caption.short@1.j2"
    (tdir / "mine.j2").write_text(src.read_text().replace("id: caption.short", "id: my.caption"))
    recipe = write_recipe(tmp_path / "recipe.yaml", count=8, chunk=4)
    recipe.write_text(
        recipe.read_text()
        .replace("template: caption.short", "template: my.caption")
        .replace("seed: 7", "seed: 7\ntemplates: [tpl]")
    )
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 0
    first = json.loads((out / "stats.json").read_text())
    assert first["requests"]["sent"] == 16

    (tdir / "mine.j2").write_text(
        (tdir / "mine.j2").read_text().replace("Reply with the sentence only.", "Reply with one sentence.")
    )
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 2  # refused: the template changed
    assert main(["run", str(recipe), "--out", str(out), "-q", "--fresh"]) == 0
    second = json.loads((out / "stats.json").read_text())
    # Only the 8 caption requests use the edited template; the 8 QA answers come from the cache.
    assert second["requests"]["sent"] == 8 and second["requests"]["cached"] == 8


def test_dedup_state_is_replayed_on_resume(tmp_path):
    """Duplicates that span chunks are still caught after a restart between chunks."""
    ideas = ["a red kite", "a blue boat", "a red kite", "a green hill", "a blue boat", "a red kite"]
    (tmp_path / "ideas.jsonl").write_text("".join(json.dumps({"idea": i}) + "\n" for i in ideas))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        textwrap.dedent(
            """\
            name: dedup
            seeds: {type: jsonl, path: ideas.jsonl}
            models: {lm: {backend: transformers, model: "tiny:lm", device: cpu}}
            tasks: [{name: prompts, template: t2i.expand, model: lm, sampling: {temperature: 0, max_tokens: 8}}]
            validators: [{type: exact_dedup}]
            output: {chunk_size: 2}
            """
        )
    )
    ref = tmp_path / "ref"
    assert main(["run", str(recipe), "--out", str(ref), "-q"]) == 0
    ds = datasets.load_dataset(str(ref))
    dups = [r for r in ds["rejected"] if r["reject_reason"].startswith("exact_dedup: duplicate of")]
    chunk0 = {r["id"] for split in ds.values() for r in split if r["seed_index"] < 2}
    # At least one duplicate in a later chunk points back at a record of chunk 0 (greedy: same idea, same text).
    assert any(r["seed_index"] >= 2 and r["reject_reason"].rsplit(": ", 1)[-1] in chunk0 for r in dups)

    # The state a kill leaves right after chunk 0 finished: its marker and shards, nothing else.
    run = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run), "-q"]) == 0
    (run / "manifest.json").unlink()
    for k in (1, 2):
        (run / ".mmsynth" / "chunks" / f"{k:05d}.json").unlink()
    assert main(["run", str(recipe), "--out", str(run), "-q"]) == 0
    assert ids(run) == ids(ref)
    again = datasets.load_dataset(str(run))
    assert sorted(again["rejected"]["reject_reason"]) == sorted(ds["rejected"]["reject_reason"])


def test_unreachable_server_fails_with_a_clear_message(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        textwrap.dedent(
            f"""\
            name: down
            seeds: {{type: scenes, count: 2}}
            models:
              vlm:
                backend: vllm-server
                model: some-vlm
                options: {{base_url: "http://127.0.0.1:{port}/v1", max_retries: 0}}
            tasks: [{{name: captions, template: caption.short, model: vlm}}]
            """
        )
    )
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "model 'vlm' (vllm-server: some-vlm) could not be loaded" in err
    assert f"127.0.0.1:{port}" in err
    assert (
        not list((tmp_path / "run" / "data").glob("*/*.parquet"))
        if (tmp_path / "run" / "data").exists()
        else True
    )
