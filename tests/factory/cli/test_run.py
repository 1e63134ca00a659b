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


def write_fifo_recipe(base: Path, *, fifo: bool, count: int = 8, at: int = 4) -> Path:
    """A jsonl recipe whose seed `at` names an image that is a FIFO when `fifo`: the run reads seeds
    0..at-1, then blocks in the read of that image until the test feeds it (see feed_fifo). Without
    `fifo` the same bytes are a plain file: the reference an interrupted run must reproduce."""
    from PIL import Image

    imgs = base / "imgs"
    imgs.mkdir(parents=True)
    lines = []
    for i in range(count):
        path = imgs / f"{i}.png"
        if fifo and i == at:
            os.mkfifo(path)
        else:
            Image.new("RGB", (32, 32), (40 * i % 256, 90, 200)).save(path)
        lines.append(json.dumps({"n": i, "file": f"imgs/{i}.png"}))
    (base / "seeds.jsonl").write_text("\n".join(lines) + "\n")
    recipe = base / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            """\
            name: fifo
            seed: 7
            seeds: {type: jsonl, path: seeds.jsonl, image_field: file}
            models: {vlm: {backend: transformers, model: "tiny:vlm", device: cpu}}
            tasks: [{name: captions, template: caption.short, model: vlm, sampling: {max_tokens: 8}}]
            validators: [{type: heuristics, reject_truncated: false, min_chars: 1}]
            output: {chunk_size: 2}
            """
        )
    )
    return recipe


def fifo_image(at: int = 4) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (40 * at % 256, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def open_fifo_writer(fifo: Path, proc: subprocess.Popen | None, deadline: float) -> int | None:
    """The FIFO's write end once a reader has opened it (the run is blocked reading the seed), or None
    when the process ended or the deadline passed first. Non-blocking open: nothing here can hang."""
    import errno
    import fcntl

    while time.time() < deadline and (proc is None or proc.poll() is None):
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            time.sleep(0.01)
            continue
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return fd
    return None


def feed_fifo(fifo: Path, data: bytes, stop) -> None:
    """Serve `data` to the first reader of `fifo` (the resumed run reads the seed once), unless `stop`
    comes first. Once only: a second writer while the reader is still open would append to its bytes."""
    while not stop.is_set():
        fd = open_fifo_writer(fifo, None, time.time() + 0.2)
        if fd is not None:
            os.write(fd, data)
            os.close(fd)
            return


def run_feeding(recipe: Path, out: Path, fifo: Path) -> subprocess.CompletedProcess:
    import threading

    stop = threading.Event()
    feeder = threading.Thread(target=feed_fifo, args=(fifo, fifo_image(), stop), daemon=True)
    feeder.start()
    try:
        return run_cli(recipe, out)
    finally:
        stop.set()
        feeder.join(timeout=5)


def start_run(recipe: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mmsynth.factory.cli.main", "run", str(recipe), "--out", str(out), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rows(run: Path) -> list[dict]:
    """Every row of every shard, without the wall-clock column, sorted by id."""
    files = sorted((run / "data").glob("*/*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    return sorted(({k: v for k, v in r.items() if k != "created_at"} for r in ds), key=lambda r: r["id"])


@pytest.fixture(scope="module")
def fifo_reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("fifo-ref")
    recipe = write_fifo_recipe(base, fifo=False)
    assert main(["run", str(recipe), "--out", str(base / "run"), "-q"]) == 0
    return rows(base / "run")


def test_ctrl_c_drains_and_resume_completes(fifo_reference, tmp_path):
    recipe = write_fifo_recipe(tmp_path, fifo=True)
    fifo, out = tmp_path / "imgs" / "4.png", tmp_path / "run"
    proc = start_run(recipe, out)
    fd = open_fifo_writer(fifo, proc, time.time() + 300)
    assert fd is not None, proc.communicate()[1]
    # The run is blocked reading seed 4 with chunks 0 and 1 in flight: Ctrl-C now, then let it go on.
    proc.send_signal(signal.SIGINT)
    os.write(fd, fifo_image())
    os.close(fd)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "resume" in err and "Traceback" not in err
    assert not (out / "manifest.json").exists()
    # Every batch that was sent before the stop was answered and cached: nothing in flight was lost.
    assert set(log_keys(out, "sent")) == set(log_keys(out, "answered"))
    assert run_feeding(recipe, out, fifo).returncode == 0
    assert rows(out) == fifo_reference


def test_ctrl_c_twice_quits_at_once_and_the_folder_resumes(fifo_reference, tmp_path):
    recipe = write_fifo_recipe(tmp_path, fifo=True)
    fifo, out = tmp_path / "imgs" / "4.png", tmp_path / "run"
    proc = start_run(recipe, out)
    fd = open_fifo_writer(fifo, proc, time.time() + 300)
    assert fd is not None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:  # never fed: the second Ctrl-C alone must end it
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the second Ctrl-C did not end the run")
    finally:
        os.close(fd)
    assert proc.returncode == 130, err
    assert "quitting at once" in err and "resume" in err and "Traceback" not in err
    assert run_feeding(recipe, out, fifo).returncode == 0
    assert rows(out) == fifo_reference


def test_ctrl_c_twice_during_start_up_exits_130_without_a_traceback(fifo_reference, tmp_path):
    recipe = write_fifo_recipe(tmp_path, fifo=True)
    fifo, out = tmp_path / "imgs" / "4.png", tmp_path / "run"
    proc = start_run(recipe, out)
    claimed = out / ".mmsynth" / "run.json"  # written just before the models load
    deadline = time.time() + 300
    while not claimed.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("Ctrl-C twice during start-up did not end the run")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "resume" in err, err
    assert run_feeding(recipe, out, fifo).returncode == 0
    assert rows(out) == fifo_reference


def test_a_second_run_on_the_same_folder_is_refused_naming_the_first(fifo_reference, tmp_path):
    recipe = write_fifo_recipe(tmp_path, fifo=True)
    fifo, out = tmp_path / "imgs" / "4.png", tmp_path / "run"
    first = start_run(recipe, out)
    fd = open_fifo_writer(fifo, first, time.time() + 300)  # the first run is mid-way, holding the lock
    assert fd is not None, first.communicate()[1]
    second = run_cli(recipe, out)
    os.write(fd, fifo_image())
    os.close(fd)
    _, err = first.communicate(timeout=300)
    assert second.returncode == 2, second.stderr
    assert f"another mmsynth run (process {first.pid}" in second.stderr
    assert first.returncode == 0, err
    sent = log_keys(out, "sent")
    assert len(sent) == len(set(sent)) == 8  # nothing was sent twice
    assert rows(out) == fifo_reference


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


def test_resume_reports_this_sessions_requests_apart_from_the_runs(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", count=8, chunk=4)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 0
    assert "(16 requests sent, 0 from cache, 0 failed)" in capsys.readouterr().out
    # What a kill during the last chunk leaves: chunk 0 finished, chunk 1's answers in the cache.
    (out / "manifest.json").unlink()
    (out / ".mmsynth" / "chunks" / "00001.json").unlink()
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "resumed at chunk 1: this session sent 0 requests (8 from cache, 0 failed)" in line, line
    assert line.endswith("the whole run: 16 requests, 8 sent over all sessions"), line


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
