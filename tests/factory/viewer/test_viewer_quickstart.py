"""The viewer over a real run: the quickstart (on the trained teacher) run once, its stats from the shards equal
the engine's stats.json, and every record pages through with its lineage.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mmsynth.factory.viewer.app import create_app

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, scene_vlm) -> Path:
    """The shipped quickstart, run once on the session's teacher build (`scene_vlm` put it in MMSYNTH_HOME)."""
    out = tmp_path_factory.mktemp("qs") / "run"
    subprocess.run(
        [sys.executable, "-m", "mmsynth.factory.cli.main", "run", str(REPO / "recipes" / "quickstart.yaml"),
         "--out", str(out), "--quiet"],
        check=True,
        cwd=REPO,
    )  # fmt: skip
    return out


def test_stats_from_the_shards_match_stats_json(quickstart):
    engine = json.loads((quickstart / "stats.json").read_text())
    with TestClient(create_app([quickstart]), base_url="http://127.0.0.1:7861") as c:
        mine = c.get("/api/stats").json()
        assert mine["complete"] and mine["file"] == engine
        assert mine["records"] == engine["records"]
        assert mine["tasks"] == {t: v["accepted"] + v["rejected"] for t, v in engine["tasks"].items()}
        for name, v in engine["validators"].items():
            assert mine["validators"][name]["kept"] == v["kept"], name
            assert mine["validators"][name]["rejected"] == v["rejected"], name
            assert mine["validators"][name]["pass_rate"] == v["pass_rate"], name
            assert dict(mine["validators"][name]["reasons"]) == v["reasons"], name
            if v["score"]:
                assert mine["validators"][name]["histogram"]["count"] == v["score"]["count"], name
        # Every record pages through once, and each one's lineage names a template the run saved.
        seen, page = [], 1
        while True:
            data = c.get("/api/records", params={"page": page, "per_page": 50}).json()
            seen += data["records"]
            if page == data["pages"]:
                break
            page += 1
        assert len({r["id"] for r in seen}) == engine["records"]["total"]
        rec = c.get(f"/api/records/{seen[-1]['id']}").json()
        models = json.loads((quickstart / "manifest.json").read_text())["lineage"]["models"]
        assert rec["model"] == models["vlm"]["model"] == "tiny:scene-vlm"
        assert rec["template_saved"] and rec["image"].startswith("data:image/png")
        assert c.get("/api/template", params={"ref": rec["template_ref"]}).status_code == 200
