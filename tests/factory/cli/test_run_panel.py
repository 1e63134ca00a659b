"""`mmsynth run`'s live panel through a real pseudo-terminal, its plain lines when piped, silence with
--quiet; and what the same counters leave in the run folder: stats.json per model and per stage, the
card's pictures linked from README.md.

Slow: three real runs of a small scene recipe on the random tiny VLM, as subprocesses.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COMMAND = [sys.executable, "-m", "mmsynth.factory.cli.main", "run"]


def write_recipe(folder: Path) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: panel
            seed: 3
            seeds: {{type: scenes, count: 8, image_size: 64}}
            models:
              vlm: {{backend: transformers, model: "tiny:vlm", batch_size: 4, device: cpu}}
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
            validators:
              - {{type: heuristics, min_chars: 4, reject_truncated: false}}
              - {{type: json_schema}}
            output: {{chunk_size: 4}}
            cache: {{path: {folder / "cache"}}}
            """
        )
    )
    return path


def env() -> dict[str, str]:
    e = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "COLUMNS", "LINES"):
        e.pop(k, None)
    return e


def run_in_pty(recipe: Path, out: Path, timeout: float = 600) -> tuple[int, str]:
    """Run on a 140x40 pseudo-terminal (stdout and stderr both on it); the exit code and all it wrote."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    proc = subprocess.Popen(
        [*COMMAND, str(recipe), "--out", str(out)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**env(), "TERM": "xterm-256color"},
        close_fds=True,
    )
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
    finally:
        os.close(master)
        proc.wait(timeout=60)
    return proc.returncode, b"".join(chunks).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("panel")
    recipe = write_recipe(base)
    code, screen = run_in_pty(recipe, base / "tty")
    assert code == 0, screen[-3000:]
    # Piped: the same recipe with the answers now cached, so these two only load the model and write.
    piped = subprocess.run(
        [*COMMAND, str(recipe), "--out", str(base / "piped")], capture_output=True, text=True, env=env()
    )
    assert piped.returncode == 0, piped.stderr
    quiet = subprocess.run(
        [*COMMAND, str(recipe), "--out", str(base / "quiet"), "--quiet"],
        capture_output=True,
        text=True,
        env=env(),
    )
    assert quiet.returncode == 0, quiet.stderr
    return {"base": base, "screen": screen, "piped": piped, "quiet": quiet}


def frames(screen: str) -> list[str]:
    """The panel's frames, escape codes removed: each starts at its title line."""
    text = ANSI.sub("", screen)
    return ["mmsynth run panel" + part for part in text.split("mmsynth run panel")[1:]]


def test_the_panel_is_redrawn_in_place_with_a_row_per_task_and_per_model(runs):
    screen = runs["screen"]
    assert "\x1b[1A" in screen and "\x1b[2K" in screen  # cursor up, erase line: redrawn in place
    shown = frames(screen)
    assert len(shown) >= 2  # the first frame and the last at least
    last = shown[-1]
    for column in ("records/s", "top reject reason", "in flight", "limit", "tokens/s in", "tokens/s out"):
        assert column in last
    assert "errors" in last and "retries" in last and "ETA" in last
    assert "chunks 2/2" in last and "requests 16/16" in last
    rows = last.splitlines()
    (captions,) = [r for r in rows if re.search(r"\bcaptions\s+16\b", r)]  # 8 seeds x 2 samples
    (qa,) = [r for r in rows if re.search(r"\bqa\s+8\b", r)]
    (vlm,) = [r for r in rows if re.search(r"\bvlm\s+transformers\b", r)]
    assert re.search(r"\d+%", captions) and re.search(r"\d+%", qa)
    # in flight 0 at the end, limit 4 (batch_size 4, one batch at a time), tokens/s in and out, 0 errors
    assert re.search(r"transformers\s+0\s+4\s+[\d.]+\s+[\d.]+\s+0\s+0\b", vlm), vlm
    assert "wrote " in ANSI.sub("", screen)  # the result line comes after the panel


def test_piped_output_is_plain_lines_without_escape_codes(runs):
    piped = runs["piped"]
    assert "\x1b" not in piped.stderr and "\x1b" not in piped.stdout
    lines = [ln for ln in piped.stderr.splitlines() if ln.startswith("[mmsynth] requests")]
    assert lines, piped.stderr
    last = lines[-1]
    assert "chunks 2/2" in last and "task captions: 16 records" in last and "task qa: 8 records" in last
    assert re.search(r"model vlm: 0/4 in flight, tokens/s [\d.]+ in [\d.]+ out, 0 errors, 0 retries", last)
    assert piped.stdout.startswith(f"wrote {runs['base'] / 'piped'}")  # stdout keeps the result only


def test_quiet_prints_no_progress(runs):
    quiet = runs["quiet"]
    assert "[mmsynth]" not in quiet.stderr and "mmsynth run panel" not in quiet.stderr
    assert quiet.stdout.startswith("wrote ")


def test_stats_json_has_tokens_per_model_and_time_per_stage(runs):
    stats = json.loads((runs["base"] / "tty" / "stats.json").read_text())
    vlm = stats["models"]["vlm"]
    assert vlm["requests"] == stats["requests"]["total"] == 16
    assert vlm["tokens"] == stats["tokens"] and vlm["tokens"]["completion"] > 0
    assert set(stats["time_per_stage"]) == {"generate", "validate", "write"}
    assert all(v["seconds"] >= 0 for v in stats["time_per_stage"].values())
    session = stats["throughput"]["models"]["vlm"]
    assert session["requests_sent"] == 16 and session["errors"] == 0
    assert session["completion_tokens_per_second"] > 0
    # The piped run answered everything from the cache: the whole run's counts are the same, none sent.
    cached = json.loads((runs["base"] / "piped" / "stats.json").read_text())
    assert cached["models"] == stats["models"]
    assert cached["throughput"]["models"]["vlm"]["requests_sent"] == 0


def test_the_run_card_shows_its_pictures_and_the_same_run_draws_the_same_bytes(runs):
    tty, piped = runs["base"] / "tty", runs["base"] / "piped"
    readme = (tty / "README.md").read_text()
    pictures = sorted(p.relative_to(tty).as_posix() for p in (tty / "images").glob("*.png"))
    assert "images/samples.png" in pictures
    for rel in pictures:
        assert f"]({rel})" in readme
        with Image.open(tty / rel) as img:
            assert img.format == "PNG"
            img.verify()
        assert (tty / rel).read_bytes() == (piped / rel).read_bytes()
