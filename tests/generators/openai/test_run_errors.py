"""`mmsynth run` against a server that fails as a whole (401, 500): one clean message, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from chat_server import ChatServer, error

pytestmark = pytest.mark.slow  # two `mmsynth run` subprocesses: about 20 s each on a busy 2-core machine

RECIPE = """\
name: failing-server
seeds: {{type: jsonl, path: {ideas}, id_field: id}}
models:
  lm:
    backend: vllm-server
    model: {model}
    options: {{base_url: "{url}", max_retries: 1, backoff_initial_s: 0.01, backoff_max_s: 0.02}}
tasks:
  - {{name: expand, template: t2i.expand, model: lm, sampling: {{temperature: 0.0, max_tokens: 8}}}}
output: {{chunk_size: 4}}
"""


@pytest.mark.parametrize(
    ("status", "message"),
    [(401, "401: invalid api key"), (500, "gave up after 2 attempts: http://127.0.0.1:")],
)
def test_a_failing_server_ends_the_run_with_one_clean_message(tmp_path, status, message):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    ideas = tmp_path / "ideas.jsonl"
    ideas.write_text("".join(f'{{"id": "i{i}", "idea": "idea {i}"}}\n' for i in range(12)))
    text = "invalid api key" if status == 401 else "engine crashed"
    server = ChatServer(chat=lambda body, r: error(status, text), models=[str(model)])
    try:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(RECIPE.format(ideas=ideas, model=model, url=server.url))
        cmd = [
            sys.executable,
            "-m",
            "mmsynth.factory.cli.main",
            "run",
            str(recipe),
            "--out",
            str(tmp_path / "out"),
        ]
        p = subprocess.run([*cmd, "-q"], capture_output=True, text=True, timeout=120, cwd=Path.cwd())
    finally:
        server.close()
    assert p.returncode == 1
    err = p.stderr
    assert f"a model backend failed: vllm-server ({model}): " in err
    assert message in err and text in err
    assert err.count(text) == 1, err  # printed once
    assert err.count(f"vllm-server ({model})") == 1, err  # the prefix once
    assert "never retrieved" not in err and "Traceback" not in err, err
