"""The run panel's per-model row during a run against the real vLLM test server (issue 18's done-when):
`mmsynth run` with a `vllm-server` model, stderr not a terminal, so the panel comes as plain lines.

The plain line is written at most every PLAIN_EVERY_S seconds; the test sets that to 0 so that every
answered batch writes one, and the run's middle (requests on the wire, answers already counted) shows.

It uses the session's servers, which the last test of test_server.py stops: this file's name sorts
before it.
"""

from __future__ import annotations

import io
import json
import re
import sys
import textwrap
from pathlib import Path

import pytest

from mmsynth.factory.cli.main import main
from mmsynth.factory.engine import progress

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CONCURRENCY = 4
ROW = re.compile(
    r"model vlm: (\d+)/(\d+) in flight, tokens/s ([\d.]+) in ([\d.]+) out, (\d+) errors, (\d+) retries"
)


def write_recipe(path: Path, model: Path, url: str) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""\
            name: panel-vllm
            seed: 5
            seeds: {{type: scenes, count: 24, image_size: 64}}
            models:
              vlm:
                backend: vllm-server
                model: "{model}"
                batch_size: 2
                options: {{base_url: "{url}", max_concurrency: {CONCURRENCY}}}
            tasks:
              - name: captions
                template: caption.short
                model: vlm
                n: 2
                sampling: {{temperature: 0.8, max_tokens: 12}}
            validators:
              - {{type: heuristics, min_chars: 1, reject_truncated: false}}
            output: {{chunk_size: 8}}
            """
        )
    )
    return path


def test_the_plain_lines_carry_the_servers_row_with_throughput_during_the_run(
    vlm_pool, tiny_vlm, tmp_path, monkeypatch
):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    for k in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(k, raising=False)
    err = io.StringIO()  # not a terminal, whatever pytest's capture mode: the plain lines
    monkeypatch.setattr(sys, "stderr", err)
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_vlm, vlm_pool.urls[0])
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0, err.getvalue()[-3000:]

    lines = [line for line in err.getvalue().splitlines() if line.startswith("[mmsynth] requests")]
    assert len(lines) >= 3, err.getvalue()[-2000:]
    assert "\x1b" not in err.getvalue()
    rows = [ROW.search(line) for line in lines]
    assert all(rows), [line for line, m in zip(lines, rows, strict=True) if not m]
    rows = [tuple(float(x) for x in m.groups()) for m in rows]
    # The client's own numbers: requests on the wire, within its limiters' limit (at most max_concurrency).
    assert all(0 <= flight <= limit <= CONCURRENCY and limit >= 1 for flight, limit, *_ in rows)
    during = [r for r in rows if r[0] > 0 and r[2] > 0 and r[3] > 0]
    assert during, f"no line shows requests in flight and tokens/s above zero together: {lines}"
    print(
        f"\n{len(lines)} lines; one from the middle of the run:\n{lines[len(lines) // 2]}\nthe last:\n{lines[-1]}"
    )
    flight, _, tok_in, tok_out, errors, _ = rows[-1]
    assert flight == 0 and tok_in > 0 and tok_out > 0 and errors == 0

    # The same counters in stats.json: this session's rates, and the tokens the records carry.
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    rates = stats["throughput"]["models"]["vlm"]
    assert rates["requests_sent"] == 24 and rates["errors"] == 0  # one request per seed, n=2 in it
    assert rates["prompt_tokens_per_second"] > 0 and rates["completion_tokens_per_second"] > 0
    assert stats["models"]["vlm"]["tokens"] == stats["tokens"]
