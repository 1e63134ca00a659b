"""`mmsynth view A B` in headless Chromium: filter by a reject reason, open a record's lineage and its
parent, read the stats charts, compare the two runs by seed.

Uses Debian's chromium through Playwright (never a downloaded browser), as the studio's browser test
does: outside CI a machine without it skips, under CI=true that is a failure. Screenshots go to
MMSYNTH_VIEWER_SCREENSHOTS=DIR when set (docs/img for the docs), else to the test's tmp folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from studio_browser import launch_chromium, mmsynth_server, playwright_or_skip
from viewer_runs import write_run

pytestmark = pytest.mark.slow


@pytest.fixture
def sync_playwright():
    return playwright_or_skip()


@pytest.fixture
def server(tmp_path):
    """`mmsynth view A B` on a free port, over two small runs that differ on known seeds."""
    a = write_run(tmp_path / "run-a")
    b = write_run(tmp_path / "run-b", variant="b")
    with mmsynth_server(["view", a, b], tmp_path / "view.log", "/api/runs") as (url, _):
        yield url


def test_filter_lineage_stats_and_compare_in_chromium(sync_playwright, server, tmp_path):
    url = server
    shots = Path(os.environ.get("MMSYNTH_VIEWER_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> None:
        page.screenshot(path=str(shots / f"viewer-{name}.png"))

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.wait_for_selector("#gallery .rec")
            assert page.locator("#gallery .rec").count() == 24  # the first page
            assert "40 records" in page.locator("#status").inner_text()
            assert "undefined" not in page.locator("#gallery").inner_text()
            shot(page, "records")

            # Filter by a reject reason: the one caption the heuristics found too short.
            page.select_option("#filters select[name=reason]", "heuristics: too short")
            page.wait_for_function("document.querySelectorAll('#gallery .rec').length === 1")
            card = page.locator("#gallery .rec")
            assert card.get_attribute("data-id") == "captions-00003-1"
            assert "heuristics: too short" in card.inner_text()
            assert "reason=heuristics" in page.url

            # Its lineage, one click away: template (and its saved source), model, sampling, prompt.
            card.locator(".lineage-link").click()
            modal = page.locator("#record-modal")
            modal.locator("h2", has_text="Record captions-00003-1").wait_for()
            text = modal.inner_text()
            for expected in (
                "caption.short@1",
                "tiny:vlm",
                "local-123",
                "temperature",
                "Describe it.",
                "1031",
            ):
                assert expected in text, expected
            modal.locator(".template-link").click()
            modal.locator(".template-source", has_text="id: caption.short").wait_for()
            shot(page, "lineage")
            modal.locator("button.close").click()
            modal.wait_for(state="hidden")

            # An interleaved document: texts and images in order; its parent one click away.
            page.click("#reset")
            page.wait_for_function("document.querySelectorAll('#gallery .rec').length === 24")
            page.select_option("#filters select[name=task]", "documents")
            page.wait_for_function("document.querySelectorAll('#gallery .rec').length === 4")
            doc = page.locator("#gallery .rec").first
            assert doc.locator(".doc img").count() == 2 and doc.locator(".doc-text").count() == 2
            doc.locator(".parent-link").click()
            modal.locator("h2", has_text="Record captions-00000-0").wait_for()
            assert modal.locator(".child-link").count() == 1
            modal.locator("button.close").click()
            modal.wait_for(state="hidden")

            # Stats of both runs, drawn as SVG.
            page.click("#tabs button[data-view=stats]")
            page.wait_for_selector(".stats-card[data-run=b] svg.histogram")
            for run in ("a", "b"):
                stats = page.locator(f".stats-card[data-run={run}]")
                assert stats.locator("svg.chart").count() >= 3  # pass rates, reasons, judge histogram
                assert "judge" in stats.inner_text()
            shot(page, "stats")

            # Compare by seed: only the seeds whose accepted count differs.
            page.click("#tabs button[data-view=compare]")
            page.wait_for_selector("#pairs tr.pair")
            page.select_option("#compare-task", "qa")
            page.locator("#compare-summary", has_text="12 seeds: 9 same, 3 differ").wait_for()
            assert page.locator("#pairs tr.pair").count() == 10  # a page
            page.select_option("#compare-status", "differ")
            page.wait_for_function("document.querySelectorAll('#pairs tr.pair').length === 3")
            first = page.locator("#pairs tr.pair").first
            assert first.locator(".side-a .rec.rejected").count() == 1
            assert first.locator(".side-b .rec.accepted").count() == 1
            assert "output is not valid JSON" in first.locator(".side-a").inner_text()
            assert "undefined" not in page.locator("#pairs").inner_text()
            shot(page, "compare")
            assert not errors, errors
        finally:
            browser.close()
    for name in ("records", "lineage", "stats", "compare"):
        assert (shots / f"viewer-{name}.png").stat().st_size > 10_000
