"""From the studio to the viewer: each Run and Compare writes its samples as a run folder (samples.py),
and the studio serves the viewer over them at /view/ and /view-compare/, linked from its answers."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from studio_helpers import with_schema, write_recipe

from mmsynth.factory.studio.app import create_app
from mmsynth.factory.studio.preview import StudioSession, read_source
from mmsynth.factory.studio.samples import RUN, SampleFolders
from mmsynth.prompts import TemplateRegistry


@pytest.fixture(scope="module")
def session(tmp_path_factory, tiny_vlm):
    s = StudioSession(write_recipe(tmp_path_factory.mktemp("studio"), tiny_vlm))
    yield s
    s.close()


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> SampleFolders:
    return SampleFolders(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def client(session, samples):
    with TestClient(create_app(session, hosts=["testserver"], samples=samples)) as c:
        yield c


def caption_source() -> str:
    return read_source(TemplateRegistry().get("caption.short@1"))


def test_a_run_opens_in_the_viewer_served_by_the_studio(client, samples):
    source = caption_source().replace("Write alt text for this image", "Name the shapes")
    report = client.post("/api/run", json={"task": "captions", "source": source, "samples": 3}).json()
    assert report["viewer"] == "/view/"
    page = client.get("/view/")
    assert page.status_code == 200
    assert 'data-base="/view"' in page.text and 'src="/view/static/viewer.js"' in page.text
    assert client.get("/view/static/viewer.js").status_code == 200
    assert client.get("/view/static/studio/studio.css").status_code == 200
    records = client.get("/view/api/records", params={"per_page": 50}).json()
    assert records["total"] == report["total"] == 6  # 3 samples x n=2
    outputs = sorted(o["text"] for s in report["samples"] for o in s["outputs"])
    assert sorted(r["output"] for r in records["records"]) == outputs
    assert all(r["image"].startswith("data:image/png;base64,") for r in records["records"])
    one = client.get(f"/view/api/records/{records['records'][0]['id']}").json()
    assert one["template_saved"] and one["template_ref"] == "caption.short@1"
    saved = client.get("/view/api/template", params={"ref": "caption.short@1"}).text
    assert saved == source  # the text that was run, editor edits included
    assert (samples.path(RUN) / "data" / "captions" / "train-00000.parquet").exists()


def test_the_next_run_replaces_the_samples(client, samples):
    source = with_schema(caption_source())  # the tiny model cannot write JSON: every output is rejected
    report = client.post("/api/run", json={"task": "captions", "source": source, "samples": 2}).json()
    assert report["accepted"] == 0
    stats = client.get("/view/api/stats").json()
    assert stats["records"] == {"total": 4, "accepted": 0, "rejected": 4}
    shards = sorted(p.name for p in (samples.path(RUN) / "data").glob("*/*.parquet"))
    assert shards == ["rejected-00000.parquet"]  # the earlier run's accepted shard is gone
    rows = pq.read_table(samples.path(RUN) / "data" / "captions" / "rejected-00000.parquet").num_rows
    assert rows == 4


def test_a_compare_opens_both_sides_in_the_viewer(client):
    a = {"task": "captions", "ref": "caption.short@1"}
    b = {"task": "captions", "source": with_schema(caption_source())}
    data = client.post("/api/compare", json={"task": "captions", "a": a, "b": b, "samples": 2}).json()
    assert data["viewer"] == "/view-compare/#compare"
    runs = client.get("/view-compare/api/runs").json()
    assert [r["records"] for r in runs] == [data["a"]["total"], data["b"]["total"]]
    summary = client.get("/view-compare/api/compare").json()["summary"]
    assert summary["seeds"] == 2 and summary["only_a"] == summary["only_b"] == 0


def test_without_sample_folders_there_is_no_viewer(session):
    with TestClient(create_app(session, hosts=["testserver"])) as c:
        report = c.post("/api/run", json={"task": "captions", "ref": "caption.short@1", "samples": 1}).json()
        assert report["viewer"] is None
        assert c.get("/view/").status_code == 404


def test_owned_folders_are_removed_on_close():
    owned = SampleFolders()
    assert (owned.path(RUN) / "data").is_dir()
    owned.close()
    assert not owned.root.exists()


@pytest.mark.slow
def test_the_run_tab_links_to_the_viewer_in_chromium(tmp_path):
    """`mmsynth studio` itself: Run on samples, follow the link, the viewer's gallery shows them."""
    from studio_browser import launch_chromium, playwright_or_skip, studio_server

    sync_playwright = playwright_or_skip()
    recipe = write_recipe(tmp_path / "r", "tiny:vlm")
    with studio_server(recipe, tmp_path / "studio.log") as url, sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(90_000)
            page.goto(url + "/tasks/captions")
            page.fill("#samples", "3")
            page.click("#run-btn")
            link = page.locator("#run-results a.viewer-link")
            link.wait_for()
            with page.context.expect_page() as opened:
                link.click()
            viewer = opened.value
            viewer.wait_for_selector("#gallery .rec")
            assert viewer.url == url + "/view/"
            assert viewer.locator("#gallery .rec").count() == 6  # 3 samples x n=2
            assert "6 records" in viewer.locator("#status").inner_text()
        finally:
            browser.close()
