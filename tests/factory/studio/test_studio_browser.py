"""The studio end to end in headless Chromium: `mmsynth studio` serves, a person edits, runs, compares, saves.

Uses Debian's chromium through Playwright (never a downloaded browser). Outside CI a machine without
it skips; under CI=true a missing browser is a failure, like the vLLM tests. With
MMSYNTH_STUDIO_SCREENSHOTS=DIR the test also writes the README's screenshots there.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
# Without these Chromium waits on network services this closed machine cannot reach.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def sync_playwright():
    """Playwright's entry point, once the system browser is known to be there (checked before the server starts)."""
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`mmsynth studio` on a free port for a copy of the quickstart (tiny:vlm), so versions save under tmp_path."""
    recipe = tmp_path / "quickstart.yaml"
    shutil.copyfile(REPO / "recipes" / "quickstart.yaml", recipe)
    port = _free_port()
    log = open(tmp_path / "studio.log", "w")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mmsynth.factory.cli.main",
            "studio",
            "--recipe",
            str(recipe),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/api/tasks", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"the studio did not start:\n{(tmp_path / 'studio.log').read_text()}")
            time.sleep(0.3)
        yield url, recipe.parent
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_edit_preview_run_compare_and_save_in_chromium(sync_playwright, server):
    url, folder = server
    shots = os.environ.get("MMSYNTH_STUDIO_SCREENSHOTS")

    def shot(page, name: str) -> None:
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(shots) / f"studio-{name}.png"))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(90_000)
            page.goto(url + "/")
            assert page.locator("#tasks").inner_text().count("caption.short@1") == 1
            page.click("a[href='/tasks/captions']")

            # Live render: three samples, each with its image and the template's text.
            page.wait_for_function("document.querySelectorAll('#preview .rendered-sample').length === 3")
            assert page.locator("#preview img.inline-img").count() == 3
            assert "Write alt text for this image" in page.inner_text("#preview")
            # Highlighted: block names, and the variables the template reads.
            assert page.locator("#highlight .tok-block").all_inner_texts() == ["system", "user"]
            assert page.locator("#highlight .tok-out .tok-var").all_inner_texts() == ["image"]
            assert page.inner_text("#lint") == "No problems found."

            # An edit with a mistake: lint names it and its line, the gutter marks it.
            source = page.input_value("#editor")
            broken = source.replace("Reply with the sentence only.", "Reply in {{ language }}.")
            page.fill("#editor", broken)
            page.wait_for_function("document.querySelector('#lint').innerText.includes('language')")
            line = next(i for i, t in enumerate(broken.split("\n"), 1) if "{{ language }}" in t)
            assert f"line {line} · error" in page.inner_text("#lint")
            assert page.locator("#gutter .ln-error").inner_text() == str(line)

            # The real edit: the preview follows it.
            edited = source.replace("Write alt text for this image", "Name the colours in this image")
            page.fill("#editor", edited)
            page.wait_for_function(
                "document.querySelector('#preview').innerText.includes('Name the colours in this image')"
            )
            assert "Write alt text for this image" not in page.inner_text("#preview")
            assert page.inner_text("#lint") == "No problems found."
            shot(page, "editor")

            # Run on the samples with the tiny model: outputs next to their verdicts.
            page.click("#run-btn")
            page.wait_for_selector("#run-results .summary")
            assert page.locator("#run-results .run-sample").count() == 3
            outputs = page.locator("#run-results .output")
            assert outputs.count() == 6  # n=2
            for k in range(6):  # every output shows its verdicts; a rejected one ends with its reject
                verdicts = outputs.nth(k).locator(".verdicts li")
                assert verdicts.count() >= 1
                rejected = "rejected" in outputs.nth(k).get_attribute("class")
                assert ("reject" in verdicts.last.get_attribute("class")) == rejected
            kept = page.locator("#run-results .output.accepted").count()
            assert f"({kept}/6)" in page.inner_text("#run-results .summary")
            shot(page, "run")

            # Save: the diff first, then the file.
            page.click("#save-btn")
            page.wait_for_selector("#save-panel:not(.hidden)")
            diff = page.inner_text("#diff")
            assert "+version: 2" in diff and "+Name the colours in this image" in diff
            # The quickstart lists no template folder: the version goes to templates/ beside it.
            target = folder / "templates" / "caption.short@2.j2"
            assert not target.exists()
            shot(page, "save")
            page.click("#confirm-save-btn")
            page.wait_for_function("document.querySelector('#save-status').innerText.startsWith('Saved')")
            status = page.inner_text("#save-status")
            assert "Saved caption.short@2" in status and "add it under `templates:`" in status
            text = target.read_text()
            assert "version: 2" in text and "Name the colours in this image" in text
            assert page.input_value("#editor") == text
            assert page.inner_text("#base-ref") == "caption.short@2"

            # Compare version 1 with an unsaved edit that asks for JSON: same samples, side by side.
            page.fill(
                "#editor",
                text.replace("output_schema: null", "output_schema: {type: object, required: [caption]}"),
            )
            page.click("button[data-tab=compare]")
            page.select_option("#compare-a", "caption.short@1")
            page.select_option("#compare-b", "")
            page.click("#compare-btn")
            page.wait_for_selector("#compare-results table.compare")
            assert page.locator("#compare-results tbody tr").count() == 3
            rates = [r.strip() for r in page.locator("#compare-results .pass-rate").all_inner_texts()]
            assert re.fullmatch(r"pass rate \d+% \(\d/6\)", rates[0])
            assert rates[1] == "pass rate 0% (0/6)"  # the tiny model cannot write JSON
            assert page.locator("#compare-results td:nth-child(3) .output.rejected").count() == 6
            shot(page, "compare")
        finally:
            browser.close()
