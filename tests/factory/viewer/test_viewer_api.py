"""The viewer's JSON API over small runs written with the factory's own shard writer.

Expected numbers come from reading the shards with pyarrow directly, not from the viewer's index.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from viewer_runs import write_run

from mmsynth.factory.cli.main import main
from mmsynth.factory.dataset.records import Record
from mmsynth.factory.dataset.shards import shard_path, write_shard
from mmsynth.factory.viewer.app import create_app
from mmsynth.validators import reason_key
from mmsynth.validators.types import Verdict

BASE = "http://127.0.0.1:7861"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer_runs")
    return write_run(root / "a"), write_run(root / "b", variant="b")


@pytest.fixture(scope="module")
def rows(runs):
    """Every row of run a, straight from the shards (no images)."""
    out = []
    for f in sorted((runs[0] / "data").glob("*/*.parquet")):
        out += pq.read_table(
            f, columns=["id", "task", "accepted", "reject_reason", "verdicts", "output"]
        ).to_pylist()
    return out


@pytest.fixture(scope="module")
def client(runs):
    with TestClient(create_app(list(runs)), base_url=BASE) as c:
        yield c


def get(client, path, **params):
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def all_records(client, **params):
    """Every record of a query, paging with a small page size."""
    out, page = [], 1
    while True:
        data = get(client, "/api/records", page=page, per_page=7, **params)
        out += data["records"]
        if page >= data["pages"]:
            return out, data
        page += 1


def judge(rec):
    return next((v for v in rec["verdicts"] if v["validator"] == "judge"), None)


def test_runs_and_facets_describe_the_folders(client, rows):
    runs = get(client, "/api/runs")
    assert [r["key"] for r in runs] == ["a", "b"]
    assert runs[0]["name"] == "viewer-a" and runs[0]["complete"]
    assert runs[0]["tasks"] == ["captions", "documents", "qa"]
    assert runs[0]["validators"] == ["heuristics", "json_schema", "judge"]
    assert runs[0]["records"] == len(rows)
    facets = get(client, "/api/facets")
    assert facets["tasks"] == {"captions": 24, "documents": 4, "qa": 12}
    # Grouped as stats.json groups them: "validator: reason", without the detail.
    assert dict(facets["reasons"]) == Counter(
        reason_key(x["reject_reason"], 2) for x in rows if not x["accepted"]
    )
    assert dict(facets["reasons"])["heuristics: too short"] == 1


def test_paging_visits_every_record_once(client, rows):
    got, data = all_records(client)
    assert data["total"] == len(rows)
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in rows)


def test_split_task_and_reason_filters(client, rows):
    rejected, _ = all_records(client, split="rejected")
    assert {r["id"] for r in rejected} == {x["id"] for x in rows if not x["accepted"]}
    assert all(not r["accepted"] and r["reject_reason"] for r in rejected)
    qa, _ = all_records(client, task="qa", split="accepted")
    assert {r["id"] for r in qa} == {x["id"] for x in rows if x["task"] == "qa" and x["accepted"]}
    # A reason filter is the reject reason or its group.
    short = get(client, "/api/records", reason="heuristics: too short")
    assert [r["id"] for r in short["records"]] == ["captions-00003-1"]
    assert short["records"][0]["reject_reason"] == "heuristics: too short: 2 < 8 chars"
    exact = get(client, "/api/records", reason="heuristics: too short: 2 < 8 chars")
    assert [r["id"] for r in exact["records"]] == ["captions-00003-1"]
    assert get(client, "/api/records", reason="heuristics: too")["total"] == 0  # a group, not any prefix


def test_validator_verdict_and_score_range(client, rows):
    rejected_by_judge, _ = all_records(client, validator="judge", verdict="reject")
    expected = {
        x["id"] for x in rows if any(v["validator"] == "judge" and not v["keep"] for v in x["verdicts"])
    }
    assert expected and {r["id"] for r in rejected_by_judge} == expected
    judged, _ = all_records(client, validator="judge")
    assert len(judged) == 24  # only captions are judged
    ranged, _ = all_records(client, validator="judge", score_min=0.5, score_max=0.7)
    assert ranged and all(0.5 <= judge(r)["score"] <= 0.7 for r in ranged)
    assert len(ranged) == sum(1 for r in judged if 0.5 <= judge(r)["score"] <= 0.7)


def test_sort_by_a_validator_score(client, rows):
    desc, _ = all_records(client, sort="score:judge", order="desc")
    scores = [judge(r)["score"] for r in desc if judge(r)]
    assert len(scores) == 24 and scores == sorted(scores, reverse=True)
    # Records without a judge score come after every scored one.
    assert all(judge(r) for r in desc[:24]) and not any(judge(r) for r in desc[24:])
    asc, _ = all_records(client, sort="score:judge")
    assert [judge(r)["score"] for r in asc[:24]] == sorted(scores)


def test_full_text_search_of_outputs(client, rows):
    red, _ = all_records(client, q="RED square")
    expected = {x["id"] for x in rows if "red square" in x["output"].lower()}
    assert expected and {r["id"] for r in red} == expected
    both = get(client, "/api/records", q="red square", split="rejected")
    assert {r["id"] for r in both["records"]} == {
        x["id"] for x in rows if x["id"] in expected and not x["accepted"]
    }
    assert get(client, "/api/records", q="nothing says this")["total"] == 0


def test_cards_carry_images_pretty_json_and_documents(client):
    qa = get(client, "/api/records", task="qa", split="accepted", per_page=1)["records"][0]
    assert qa["image"].startswith("data:image/png;base64,")
    assert json.loads(qa["pretty"])["pairs"][0]["type"] == "counting" and "\n  " in qa["pretty"]
    doc = get(client, "/api/records", task="documents", per_page=1)["records"][0]
    kinds = ["text" if "text" in item else "image" for item in doc["document"]]
    assert kinds == ["text", "image", "text", "image"]
    assert doc["document"][0]["text"] == "Document 0: a title."
    assert all(item["image"].startswith("data:image/png") for item in doc["document"] if "image" in item)


def test_a_record_with_its_lineage_parent_and_children(client):
    rec = get(client, "/api/records/documents-00003-0")
    assert rec["template_ref"] == "doc.interleaved@1" and not rec["template_saved"]
    assert rec["parent"] == {"id": "captions-00003-0", "in_run": True}
    assert rec["generation"] == {"guidance": 1.0, "steps": 4}
    parent = get(client, "/api/records/captions-00003-0")
    assert parent["children"] == ["documents-00003-0"]
    assert parent["template_ref"] == "caption.short@1" and parent["template_saved"]
    assert parent["template_hash"].startswith("9a75")
    assert parent["prompt"] == "<image>\nDescribe it." and parent["system"] == "You describe images."
    assert parent["sampling"] == {"max_tokens": 24, "temperature": 0.8}
    assert parent["sample_seed"] == 1030 and parent["model_revision"] == "local-123"
    assert parent["seed"] == {"description": "scene 3"}
    source = client.get("/api/template", params={"ref": parent["template_ref"]})
    assert source.status_code == 200 and "id: caption.short" in source.text
    assert client.get("/api/template", params={"ref": "../manifest"}).status_code == 404
    assert client.get("/api/records/nope").status_code == 404
    # The same id in run b is run b's record.
    assert "(b)" in get(client, "/api/records/captions-00003-0", run="b")["output"]


def test_stats_pass_rates_reasons_and_histograms(client, rows):
    stats = get(client, "/api/stats")
    assert stats["records"] == {
        "total": len(rows),
        "accepted": sum(r["accepted"] for r in rows),
        "rejected": sum(not r["accepted"] for r in rows),
    }
    verdicts = [v for r in rows for v in r["verdicts"]]
    for name, v in stats["validators"].items():
        mine = [x for x in verdicts if x["validator"] == name]
        assert v["seen"] == len(mine) and v["kept"] == sum(x["keep"] for x in mine)
        assert v["pass_rate"] == round(v["kept"] / v["seen"], 4)
    h = stats["validators"]["judge"]["histogram"]
    assert sum(h["kept"]) + sum(h["rejected"]) == 24 and len(h["edges"]) == len(h["kept"]) + 1
    assert sum(h["rejected"]) == stats["validators"]["judge"]["rejected"]
    assert stats["validators"]["json_schema"]["histogram"] is None
    assert stats["validators"]["judge"]["reasons"] == [
        ["low score", stats["validators"]["judge"]["rejected"]]
    ]
    qa = get(client, "/api/stats", task="qa")
    assert qa["records"]["total"] == 12 and qa["validators"]["judge"]["seen"] == 0


def test_compare_pairs_the_same_seeds(client):
    data = get(client, "/api/compare", task="qa", per_page=50)
    s = data["summary"]
    assert s["seeds"] == 12 and s["only_a"] == s["only_b"] == 0
    # Run a rejects the QA of every fifth seed (not JSON); run b accepts all.
    assert s["differ"] == 3 and s["same"] == 9
    differ = get(client, "/api/compare", task="qa", status="differ")
    assert [p["seed_index"] for p in differ["pairs"]] == [0, 5, 10]
    pair = differ["pairs"][0]
    assert [r["accepted"] for r in pair["a"]] == [False] and [r["accepted"] for r in pair["b"]] == [True]
    assert pair["a"][0]["seed_id"] == pair["b"][0]["seed_id"] == pair["seed_id"]
    captions = get(client, "/api/compare", task="captions", per_page=3)["pairs"][0]
    assert [r["sample_index"] for r in captions["a"]] == [0, 1] and len(captions["b"]) == 2
    assert get(client, "/api/stats", run="b")["records"]["total"] == 40


def test_bad_queries_answer_400_with_the_reason(client):
    bad = [
        {"validator": "nope"},
        {"score_min": 0.5},
        {"split": "maybe"},
        {"sort": "score:nope"},
        {"validator": "judge", "verdict": "perhaps"},
        {"verdict": "reject"},
        {"per_page": 1000},
    ]
    for params in bad:
        r = client.get("/api/records", params=params)
        assert r.status_code == 400 and r.json()["error"], params
    assert client.get("/api/records", params={"run": "c"}).status_code == 422


def test_one_run_has_no_compare_and_no_run_b(runs):
    with TestClient(create_app([runs[0]]), base_url=BASE) as c:
        assert c.get("/api/compare").status_code == 400
        assert c.get("/api/records", params={"run": "b"}).status_code == 404
        assert c.get("/").status_code == 200 and "Compare" not in c.get("/").text
    with TestClient(create_app([runs[0]]), base_url="http://evil.example") as c:
        assert c.get("/api/runs").status_code == 400


def test_a_running_run_shows_shards_as_they_land(tmp_path):
    run = write_run(tmp_path / "live", seeds=6)
    with TestClient(create_app([run]), base_url=BASE) as c:
        before = get(c, "/api/records")["total"]
        extra = Record(
            **{
                **get_record_fields(),
                "id": "late-1",
                "verdicts": [Verdict("heuristics", False, "too short: 1 < 8 chars")],
            }
        )
        write_shard(shard_path(run, "captions", "rejected", 9), [extra])
        after = get(c, "/api/records", reason="heuristics: too short: 1 < 8 chars")
        assert get(c, "/api/records")["total"] == before + 1
        assert [r["id"] for r in after["records"]] == ["late-1"]


def get_record_fields() -> dict:
    return dict(
        task="captions", seed_id="seed09999", seed_index=9999, seed={}, images=(), system="", prompt="",
        output="x", parsed=None, parse_error=None, finish_reason="stop", prompt_tokens=1, completion_tokens=1,
        template_id="caption.short", template_version=1, template_hash="h", model="m", model_revision="r",
        backend="transformers", sampling={}, sample_seed=None, sample_index=0, request_key="k",
        created_at="2026-12-03T12:00:00+00:00",
    )  # fmt: skip


def test_view_command_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["view", str(tmp_path)]) == 2
    assert "not an mmsynth run folder" in capsys.readouterr().err


def test_a_run_that_has_not_written_a_shard_yet(tmp_path, runs):
    (tmp_path / "new" / ".mmsynth").mkdir(parents=True)
    with TestClient(create_app([tmp_path / "new", runs[1]]), base_url=BASE) as c:
        assert get(c, "/api/runs")[0] | {"path": None} == {
            "key": "a", "name": "new", "path": None, "complete": False, "shards": 0, "records": 0,
            "tasks": [], "validators": [], "lineage": {},
        }  # fmt: skip
        assert get(c, "/api/records", q="x", sort="seed")["total"] == 0
        assert get(c, "/api/stats")["records"] == {"total": 0, "accepted": 0, "rejected": 0}
        # Every seed of run b is then a seed only b has.
        summary = get(c, "/api/compare")["summary"]
        assert summary["seeds"] == summary["only_b"] == 28
