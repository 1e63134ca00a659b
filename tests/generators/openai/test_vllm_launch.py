"""ServerPool with a stand-in server: start, health, restart of a dead replica, stop, and no orphans.

The stand-in is a stdlib HTTP server installed as a fake `vllm.entrypoints.openai.api_server` module
on PYTHONPATH, so the pool runs exactly the command it runs for vLLM. It answers /health, /v1/models
and /v1/chat/completions, and starts a sleeping child, like vLLM's engine core process, so the tests
see that a server's whole process group goes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from mmsynth.generators.openai.backend import OpenAIBackend
from mmsynth.generators.openai.launch import LaunchError, ServerPool, tagged_pids

FAKE_SERVER = r"""
import argparse, json, os, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

p = argparse.ArgumentParser()
p.add_argument("--model"); p.add_argument("--host"); p.add_argument("--port", type=int)
p.add_argument("--served-model-name"); p.add_argument("--fail-at-start", action="store_true")
p.add_argument("--never-healthy", action="store_true"); p.add_argument("--chat-delay", type=float, default=0.0)
p.add_argument("--startup-delay", type=float, default=0.0)
a, _ = p.parse_known_args()
print("fake vllm server starting on port", a.port, flush=True)
if a.fail_at_start:
    print("ValueError: this model is broken (fake)", flush=True)
    sys.exit(3)
time.sleep(a.startup_delay)
# Like vLLM's engine core: a child process in the same group.
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
name = a.served_model_name or a.model

class H(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path == "/health":
            return self.reply(503 if a.never_healthy else 200, {})
        if self.path == "/v1/models":
            return self.reply(200, {"object": "list", "data": [{"id": name, "max_model_len": 512}]})
        self.reply(404, {"error": {"message": "no route"}})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        time.sleep(a.chat_delay)
        text = body["messages"][-1]["content"]
        choices = [{"index": i, "message": {"role": "assistant", "content": f"echo {i}: {text}"},
                    "finish_reason": "stop"} for i in range(body.get("n", 1))]
        self.reply(200, {"model": name, "choices": choices,
                         "usage": {"prompt_tokens": 3, "completion_tokens": 2 * len(choices)}})

ThreadingHTTPServer((a.host, a.port), H).serve_forever()
"""


@pytest.fixture(scope="module")
def fake_vllm(tmp_path_factory) -> Path:
    """A folder to put on PYTHONPATH: `python -m vllm.entrypoints.openai.api_server` runs the stand-in."""
    root = tmp_path_factory.mktemp("fake_vllm")
    pkg = root / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (root / "vllm", root / "vllm" / "entrypoints", pkg):
        (d / "__init__.py").write_text("")
    (pkg / "api_server.py").write_text(FAKE_SERVER)
    return root


def make_pool(fake_vllm: Path, tmp_path: Path, **kw) -> ServerPool:
    kw.setdefault("startup_timeout_s", 20)
    return ServerPool(
        "fake-model",
        python=sys.executable,
        env={"PYTHONPATH": str(fake_vllm)},
        log_dir=tmp_path / "logs",
        stop_grace_s=3,
        **kw,
    )


def wait_until(cond, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_start_serves_on_free_ports_and_stop_leaves_nothing(fake_vllm, tmp_path):
    pool = make_pool(
        fake_vllm, tmp_path, replicas=2, engine_args={"max_model_len": 512, "enforce-eager": True}
    )
    urls = pool.start()
    try:
        assert len(urls) == 2 and len(set(urls)) == 2
        assert all(u.startswith("http://127.0.0.1:") and u.endswith("/v1") for u in urls)
        for u in urls:
            assert httpx.get(f"{u}/models").json()["data"][0]["id"] == "fake-model"
        assert len(tagged_pids(pool.tag)) == 4  # two servers and their children
        cmd = pool.command(8000)
        assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
        assert cmd[-3:] == ["--max-model-len", "512", "--enforce-eager"]
        assert "start #1 of replica 0" in pool.log_tail(0)
    finally:
        pool.stop()
    assert tagged_pids(pool.tag) == []
    pool.stop()  # idempotent


def test_engine_args_render_as_flags():
    pool = ServerPool(
        "m",
        python="py",
        served_model_name="served",
        engine_args={"limit-mm-per-prompt": {"image": 1}, "trust_remote_code": True, "quantization": None},
        log_dir="/nonexistent",
    )
    assert pool.command(9) == [
        "py",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "m",
        "--host",
        "127.0.0.1",
        "--port",
        "9",
        "--served-model-name",
        "served",
        "--limit-mm-per-prompt",
        '{"image": 1}',
        "--trust-remote-code",
    ]
    with pytest.raises(ValueError, match="may not set 'port'"):
        ServerPool("m", engine_args={"port": 1})


def test_a_server_that_exits_at_start_raises_with_its_log(fake_vllm, tmp_path):
    pool = make_pool(fake_vllm, tmp_path, engine_args={"fail-at-start": True})
    with pytest.raises(LaunchError) as err:
        pool.start()
    msg = str(err.value)
    assert "exited with code 3 during start-up" in msg
    assert "this model is broken (fake)" in msg  # the log tail
    assert tagged_pids(pool.tag) == []


def test_a_server_that_never_gets_healthy_times_out_and_is_stopped(fake_vllm, tmp_path):
    pool = make_pool(fake_vllm, tmp_path, engine_args={"never-healthy": True}, startup_timeout_s=1.5)
    with pytest.raises(LaunchError, match=r"did not answer /health within 1.5 s") as err:
        pool.start()
    assert "fake vllm server starting" in str(err.value)
    assert wait_until(lambda: tagged_pids(pool.tag) == [])


def test_a_port_in_use_is_refused(fake_vllm, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        pool = make_pool(fake_vllm, tmp_path, ports=[s.getsockname()[1]])
        with pytest.raises(LaunchError, match="already in use"):
            pool.start()


def test_restart_dead_restarts_only_the_dead_replica_on_its_port(fake_vllm, tmp_path):
    pool = make_pool(fake_vllm, tmp_path, replicas=2)
    urls = pool.start()
    try:
        assert pool.restart_dead() == []
        old = pool.pids()
        os.kill(old[1], signal.SIGKILL)  # a crash: the leader dies, its child is left behind
        assert wait_until(lambda: pool._replicas[1].proc.poll() is not None)
        assert pool.restart_dead() == [1]
        new = pool.pids()
        assert new[0] == old[0] and new[1] != old[1]
        assert pool.urls == urls
        assert httpx.get(f"{urls[1]}/models").status_code == 200
        # the crashed server's orphaned child is gone: two servers, two children
        assert wait_until(lambda: len(tagged_pids(pool.tag)) == 4)
        assert "start #2 of replica 1" in pool.log_tail(1)
    finally:
        pool.stop()
    assert tagged_pids(pool.tag) == []


PARENT = textwrap.dedent(
    """
    import sys, time
    from mmsynth.generators.openai.launch import ServerPool
    pool = ServerPool("fake-model", python=sys.executable, env={{"PYTHONPATH": {fake!r}}},
                      log_dir={logs!r}, startup_timeout_s=20, stop_grace_s=2)
    urls = pool.start()
    try:
        print(pool.tag, urls[0], flush=True)
        time.sleep(600)
    except KeyboardInterrupt:
        import httpx  # Ctrl-C reached us, not the server: it still answers while we drain
        print("drained", httpx.get(urls[0] + "/models").status_code, flush=True)
    """
)


def spawn_parent(fake_vllm: Path, tmp_path: Path) -> tuple[subprocess.Popen, str, str]:
    code = PARENT.format(fake=str(fake_vllm), logs=str(tmp_path / "logs"))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    tag, url = proc.stdout.readline().split()
    assert len(tagged_pids(tag)) == 2
    return proc, tag, url


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_orphans_when_the_parent_is_killed(fake_vllm, tmp_path, sig):
    proc, tag, _ = spawn_parent(fake_vllm, tmp_path)
    proc.send_signal(sig)
    proc.communicate(timeout=10)
    assert wait_until(lambda: tagged_pids(tag) == [], timeout_s=15), tagged_pids(tag)


def test_ctrl_c_reaches_the_parent_not_the_server_and_exit_stops_it(fake_vllm, tmp_path):
    proc, tag, _ = spawn_parent(fake_vllm, tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the foreground group
    out, _ = proc.communicate(timeout=15)
    assert "drained 200" in out
    assert wait_until(lambda: tagged_pids(tag) == [], timeout_s=10)


def test_backend_launches_balances_and_survives_a_killed_replica(fake_vllm, tmp_path, make_request):
    backend = OpenAIBackend(
        "fake-model",
        batch_size=8,
        max_retries=3,
        backoff_initial_s=0.05,
        launch={
            "replicas": 2,
            "python": sys.executable,
            "env": {"PYTHONPATH": str(fake_vllm)},
            "engine_args": {"chat-delay": 0.3},
            "startup_timeout_s": 20,
            "log_dir": str(tmp_path / "logs"),
        },
    )
    backend.load()
    pool = backend._pool
    try:
        requests = [make_request(f"q{i}", temperature=0.0, n=2) for i in range(8)]

        async def run():
            task = asyncio.create_task(backend.generate(requests))
            await asyncio.sleep(0.15)  # requests in flight on both replicas
            os.kill(pool.pids()[0], signal.SIGKILL)
            return await task

        gens = asyncio.run(run())
        assert [g.error for g in gens] == [None] * 8
        assert [g.outputs[1].text for g in gens] == [f"echo 1: q{i}" for i in range(8)]
        assert {g.extra["replica"] for g in gens} <= set(pool.urls)
        assert max(g.extra["attempts"] for g in gens) >= 2  # some were retried after the kill
        assert pool._replicas[0].starts == 2  # restarted
        assert backend.stats["retries"] >= 1
    finally:
        backend.close()
    assert backend._pool is None
    assert wait_until(lambda: tagged_pids(pool.tag) == [])


def test_launch_names_a_missing_python(tmp_path, monkeypatch):
    from mmsynth.generators.openai.backend import ServerError

    monkeypatch.chdir(tmp_path)
    backend = OpenAIBackend("m", launch={})
    with pytest.raises(
        ServerError, match=r"no Python at .*/\.venv-vllm/bin/python; build the vLLM environment"
    ):
        backend.load()
