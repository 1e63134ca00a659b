"""The browser tests' shared set-up: an `mmsynth studio` or `mmsynth view` server as a subprocess on a
free port, and Debian's Chromium through Playwright (never a downloaded browser). A missing browser or
Playwright skips, and is a failure under CI=true, like the vLLM tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Without these Chromium waits on network services a closed machine cannot reach.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def playwright_or_skip():
    """Playwright's `sync_playwright`, once the system browser is known to be there."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[dev]')"
    if problem is None and not CHROMIUM.exists():
        problem = f"no {CHROMIUM}: apt-get install -y chromium"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return sync_playwright


def launch_chromium(playwright):
    """The system Chromium, headless, with the flags that keep it off the network."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mmsynth_server(
    args: list[str], log_path: Path, ready: str, timeout: float = 120
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run `mmsynth ARGS --port P` until the caller is done; yields (base URL, process) once GET `ready`
    answers 200. Its output goes to `log_path`, shown in the failure when it does not start."""
    port = free_port()
    cmd = [sys.executable, "-m", "mmsynth.factory.cli.main", *map(str, args), "--port", str(port)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if httpx.get(url + ready, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"mmsynth {args[0]} did not start:\n{log_path.read_text()}")
                time.sleep(0.3)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def studio_server(recipe: Path, log_path: Path, timeout: float = 120) -> Iterator[str]:
    """Serve `mmsynth studio --recipe RECIPE` on a free port; yields its base URL, stops it after."""
    with mmsynth_server(["studio", "--recipe", recipe], log_path, "/api/tasks", timeout) as (url, _):
        yield url
