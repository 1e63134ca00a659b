"""The studio end to end in headless Chromium on the trained teacher: `mmsynth studio` serves, a person
edits, runs, saves, and compares the edit with the version the teacher was trained on.

Uses Debian's chromium through Playwright (tests/helpers/studio_browser.py). With
MMSYNTH_STUDIO_SCREENSHOTS=DIR the test also writes docs/studio.md's screenshots there.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from studio_browser import launch_chromium, playwright_or_skip, studio_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
SAMPLES = 8  # seeds per run: 16 captions (n=2), enough for the two versions' pass rates to differ


@pytest.fixture
def sync_playwright():
    return playwright_or_skip()


@pytest.fixture
def server(tmp_path, scene_vlm):
    """`mmsynth studio` on a free port for a copy of the quickstart (on the teacher, which `scene_vlm` put
    in the session's MMSYNTH_HOME), so versions save under tmp_path."""
    recipe = tmp_path / "quickstart.yaml"
    shutil.copyfile(REPO / "recipes" / "quickstart.yaml", recipe)
    with studio_server(recipe, tmp_path / "studio.log") as url:
        yield url, recipe.parent


def pass_rate(text: str) -> tuple[int, int]:
    """'pass rate 56% (9/16)' -> (9, 16)."""
    m = re.search(r"pass rate \d+% \((\d+)/(\d+)\)", text)
    assert m, text
    return int(m.group(1)), int(m.group(2))


def test_edit_preview_run_compare_and_save_in_chromium(sync_playwright, server):
    url, folder = server
    shots = os.environ.get("MMSYNTH_STUDIO_SCREENSHOTS")

    def shot(page, name: str) -> None:
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(shots) / f"studio-{name}.png"))

    with sync_playwright() as p:
        browser = launch_chromium(p)
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

            # Run the edit on more samples with the teacher: outputs next to their verdicts.
            page.fill("#samples", str(SAMPLES))
            page.click("#run-btn")
            page.wait_for_selector("#run-results .summary")
            assert page.locator("#run-results .run-sample").count() == SAMPLES
            outputs = page.locator("#run-results .output")
            assert outputs.count() == 2 * SAMPLES  # n=2
            for k in range(
                2 * SAMPLES
            ):  # every output shows its verdicts; a rejected one ends with its reject
                verdicts = outputs.nth(k).locator(".verdicts li")
                assert verdicts.count() >= 1
                rejected = "rejected" in outputs.nth(k).get_attribute("class")
                assert ("reject" in verdicts.last.get_attribute("class")) == rejected
            kept = page.locator("#run-results .output.accepted").count()
            assert pass_rate(page.inner_text("#run-results .summary")) == (kept, 2 * SAMPLES)
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

            # Compare the version the teacher was trained on with the saved edit, on the same samples:
            # off its training prompt the teacher writes long captions that name things the scene lacks.
            page.click("button[data-tab=compare]")
            page.select_option("#compare-a", "caption.short@1")
            page.select_option("#compare-b", "caption.short@2")
            page.click("#compare-btn")
            page.wait_for_selector("#compare-results table.compare")
            assert page.locator("#compare-results tbody tr").count() == SAMPLES
            a, b = (pass_rate(r) for r in page.locator("#compare-results .pass-rate").all_inner_texts())
            print(f"\ncompare on the teacher, {SAMPLES} seeds: caption.short@1 {a}, caption.short@2 {b}")
            assert a[1] == b[1] == 2 * SAMPLES
            assert a[0] > b[0], (a, b)  # the template it learned beats the edit
            for col, kept in ((2, a[0]), (3, b[0])):
                assert page.locator(f"#compare-results td:nth-child({col}) .output.accepted").count() == kept
            # The rejected samples say why: B's hallucinations, each naming what the scene has instead.
            reasons = page.locator("#compare-results td:nth-child(3) .output.rejected .verdicts li.reject")
            texts = reasons.all_inner_texts()
            assert len(texts) == 2 * SAMPLES - b[0]
            hallucinations = [t for t in texts if t.startswith("✗ scene_grounding: hallucination")]
            assert hallucinations and all("the scene has" in t for t in hallucinations)
            shot(page, "compare")
        finally:
            browser.close()
