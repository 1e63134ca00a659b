"""`mmsynth publish --dry-run` on a real quickstart run: the folder loads with `datasets`, the card says
what the data is, incomplete runs are refused, and secrets stay out."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import DatasetCard
from PIL import Image

from mmsynth.factory.cli.main import main
from mmsynth.factory.publish.plan import PublishOptions, plan_publish, redact_secrets

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]
TOKEN = "hf_TESTtokenThatMustNeverLeak0123456789"


@pytest.fixture(scope="module")
def quick(tmp_path_factory, scene_vlm) -> Path:
    """The shipped quickstart on the teacher, run once (a subprocess, so its caches stay under the test's
    temp folder; `scene_vlm` has put the teacher in that MMSYNTH_HOME)."""
    base = tmp_path_factory.mktemp("quick")
    env = {
        **os.environ,
        "MMSYNTH_HOME": str(tmp_path_factory.getbasetemp() / "mmsynth_home"),
        "HF_HOME": str(tmp_path_factory.getbasetemp() / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "mmsynth.factory.cli.main", "run", str(REPO / "recipes/quickstart.yaml")]
    proc = subprocess.run(
        [*cmd, "--out", str(base / "run"), "-q"], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return base / "run"


def copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("cache"))
    return dst


def publish(*args: str) -> int:
    return main(["publish", *map(str, args)])


def test_dry_run_loads_every_config_and_split_with_images(quick, tmp_path, capsys):
    out = tmp_path / "hub"
    assert (
        publish(
            quick, "--repo", "me/quick", "--dry-run", out, "--include-rejects", "--max-shard-size", "60kB"
        )
        == 0
    )
    assert "nothing was uploaded" in capsys.readouterr().out
    stats = json.loads((quick / "stats.json").read_text())
    meta = DatasetCard((out / "README.md").read_text()).data.to_dict()
    assert [c["config_name"] for c in meta["configs"]] == ["captions", "qa"]
    run_features = datasets.Features.from_arrow_schema(
        pq.read_schema(next((quick / "data").glob("*/*.parquet")))
    )
    for name in ("captions", "qa"):
        ds = datasets.load_dataset(str(out), name=name)
        counts = stats["tasks"][name]
        assert {s: len(ds[s]) for s in ds} == {
            s: n for s, n in (("train", counts["accepted"]), ("rejected", counts["rejected"])) if n
        }
        split = next(iter(ds.values()))
        assert split.features == run_features
        assert split[0]["image"].size == (64, 64)  # embedded bytes, decoded
        assert set(split["task"]) == {name}
    # The 60 kB limit split the rejected records over several files, none far above it.
    files = sorted((out / "data" / "captions").glob("rejected-*.parquet"))
    assert len(files) > 1 and files[0].name == f"rejected-00000-of-{len(files):05d}.parquet"
    assert all(f.stat().st_size <= 60_000 + 20_000 for f in files)  # + the Parquet footer


def test_default_publishes_accepted_records_only(quick, tmp_path, capsys):
    out = tmp_path / "hub"
    assert publish(quick, "--repo", "me/quick", "--dry-run", out) == 0
    printed = capsys.readouterr().out
    stats = json.loads((quick / "stats.json").read_text())["tasks"]
    kept = sorted(name for name, c in stats.items() if c["accepted"])
    assert kept, "the teacher's quickstart keeps some records"
    for name, c in stats.items():
        if not c["accepted"]:
            assert f"{name}: not published: no accepted records" in printed
    published = sorted(p.relative_to(out).as_posix() for p in (out / "data").rglob("*.parquet"))
    assert published == [f"data/{name}/train-00000-of-00001.parquet" for name in kept]
    for name in kept:
        ds = datasets.load_dataset(str(out), name=name)
        assert list(ds) == ["train"] and all(ds["train"]["accepted"])
        assert len(ds["train"]) == stats[name]["accepted"]


def test_the_dry_run_is_exactly_the_plan_and_is_deterministic(quick, tmp_path):
    a = plan_publish(
        quick,
        tmp_path / "a",
        PublishOptions(include_rejects=True, max_shard_bytes=80_000, repo_id="me/quick"),
    )
    b = plan_publish(
        quick,
        tmp_path / "b",
        PublishOptions(include_rejects=True, max_shard_bytes=80_000, repo_id="me/quick"),
    )
    assert [(op.path_in_repo, op.sha256) for op in a.ops] == [(op.path_in_repo, op.sha256) for op in b.ops]
    out = tmp_path / "dry"
    assert (
        publish(
            quick, "--repo", "me/quick", "--dry-run", out, "--include-rejects", "--max-shard-size", "80kB"
        )
        == 0
    )
    on_disk = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {k: hashlib.sha256(v).hexdigest() for k, v in on_disk.items()} == {
        op.path_in_repo: op.sha256 for op in a.ops
    }
    assert a.ordered()[-1].path_in_repo == "README.md" and a.ordered()[0].path_in_repo.startswith("data/")


def test_card_tells_what_how_and_how_good(quick, tmp_path):
    run = copy_run(quick, tmp_path / "run")
    recipe = (run / "recipe.yaml").read_text()
    (run / "recipe.yaml").write_text(recipe.replace("seed: 0\n", "seed: 0\nlicense: cc-by-4.0\n", 1))
    (run / "gain").mkdir()
    (run / "gain" / "report.md").write_text("# Gain\n\nCIDEr +1.2 (95% CI 0.4 to 2.0) over 3 seeds.\n")
    (run / "gain" / "report.json").write_text("{}")
    (run / "gain" / "gain.png").write_bytes(b"\x89PNG fake")
    plan = plan_publish(run, tmp_path / "stage", PublishOptions(repo_id="me/quick"))
    card = DatasetCard(plan.card)
    meta = card.data.to_dict()
    # What the card must say is derived from the run itself, so it holds for whatever the teacher kept.
    stats = json.loads((run / "stats.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    kept = {name: c["accepted"] for name, c in stats["tasks"].items() if c["accepted"]}
    assert kept, "the teacher's quickstart keeps some records"
    assert meta["license"] == "cc-by-4.0"
    assert meta["size_categories"] == ["n<1K"] and sum(kept.values()) < 1000
    categories = {"captions": "image-to-text", "qa": "visual-question-answering"}
    assert set(meta["task_categories"]) == {categories[name] for name in kept}  # rejects are not published
    assert "synthetic" in meta["tags"]
    assert meta["configs"] == [
        {"config_name": name, "data_files": [{"split": "train", "path": f"data/{name}/train-*.parquet"}]}
        for name in kept
    ]
    infos = meta["dataset_info"] if isinstance(meta["dataset_info"], list) else [meta["dataset_info"]]
    assert {i["config_name"]: [(s["name"], s["num_examples"]) for s in i["splits"]] for i in infos} == {
        name: [("train", n)] for name, n in kept.items()
    }
    body = card.text
    rec = stats["records"]
    assert f"{rec['total']} records: {rec['accepted']} accepted and {rec['rejected']} rejected" in body
    for ref, h in manifest["lineage"]["templates"].items():
        tid, version = ref.split("@")
        assert f"| `{tid}` | {version} | `{h}` |" in body
    for m in manifest["lineage"]["models"].values():
        assert f"`{m['model']}` | `{m['revision']}` | {m['backend']}" in body
    for task in yaml.safe_load(recipe)["tasks"]:  # sampling per task
        assert f"`{json.dumps(task['sampling'], sort_keys=True)}`" in body
    order = [v["type"] for v in yaml.safe_load(recipe)["validators"]]
    for name in order:
        v = stats["validators"][name]
        row = f"| {name} | {v['seen']} | {v['kept']} | {v['rejected']} | {v['pass_rate']:.1%} |"
        assert row in body
    assert [body.index(f"| {name} |") for name in order] == sorted(
        body.index(f"| {name} |") for name in order
    )
    top_reason, top_n = min(stats["reject_reasons"].items(), key=lambda kv: (-kv[1], kv[0]))
    assert f"| {top_reason} | {top_n} |" in body
    assert "CIDEr +1.2" in body and "![gain](gain/gain.png)" in body
    # The model is a trained teacher and scene_grounding checked truth: the card must not call the text
    # gibberish, nor claim that nothing checked truth.
    assert "`tiny:scene-vlm`, a tiny teacher that mmsynth trains offline" in body
    limits = body[body.index("## Known limitations") : body.index("## How to reproduce")]
    assert "random-weight" not in limits and "gibberish" not in limits
    assert "`scene_grounding` checked the answers and the objects a caption names" in limits
    assert "not truth" not in limits
    assert "mmsynth run recipe.yaml" in body
    for name in kept:
        assert f'datasets.load_dataset("me/quick", name="{name}")' in body
    assert {"gain/gain.png", "gain/report.md", "gain/report.json", "recipe.yaml", "stats.json"} <= {
        op.path_in_repo for op in plan.ops
    }


def test_the_card_pictures_are_published_and_linked_from_the_card(quick, tmp_path):
    stats = json.loads((quick / "stats.json").read_text())
    scored = any((v.get("score") or {}).get("count") for v in stats["validators"].values())
    plan = plan_publish(quick, tmp_path / "stage", PublishOptions(repo_id="me/quick"))
    ops = {op.path_in_repo: op for op in plan.ops}
    pictures = ["images/samples.png"] + (["images/scores.png"] if scored else [])
    assert sorted(p for p in ops if p.startswith("images/")) == sorted(pictures)
    body = DatasetCard(plan.card).text
    for path in pictures:
        data = ops[path].read()
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG"
            img.verify()
        assert f"]({path})" in body
        assert (quick / path).exists() and f"]({path})" in (quick / "README.md").read_text()
    assert plan.ordered()[-1].path_in_repo == "README.md"  # the card goes after the pictures it shows
    # Rejected records are not published by default, and then the grid shows none: it is not the run
    # folder's drawing. With --include-rejects it is, byte for byte.
    assert ops["images/samples.png"].read() != (quick / "images/samples.png").read_bytes()
    with_rejects = plan_publish(
        quick, tmp_path / "stage2", PublishOptions(include_rejects=True, repo_id="me/quick")
    )
    grid = next(op for op in with_rejects.ops if op.path_in_repo == "images/samples.png")
    assert grid.read() == (quick / "images/samples.png").read_bytes()


def test_incomplete_and_damaged_runs_are_refused(quick, tmp_path, capsys):
    run = copy_run(quick, tmp_path / "run")
    (run / "manifest.json").unlink()
    assert publish(run, "--repo", "me/q", "--dry-run", tmp_path / "o1") == 2
    err = capsys.readouterr().err
    assert "not complete" in err and "manifest.json" in err and "3 chunk(s) finished" in err
    assert not (tmp_path / "o1").exists()

    run2 = copy_run(quick, tmp_path / "run2")
    (run2 / "data" / "qa" / "rejected-00001.parquet").unlink()
    recorded = json.loads((run2 / ".mmsynth" / "chunks" / "00001.json").read_text())["rejected"]["qa"]
    assert publish(run2, "--repo", "me/q", "--dry-run", tmp_path / "o2", "--include-rejects") == 2
    assert (
        f"data/qa/rejected-00001.parquet is missing (chunk 1 recorded {recorded} rejected records)"
        in capsys.readouterr().err
    )

    (tmp_path / "plain").mkdir()
    assert publish(tmp_path / "plain", "--repo", "me/q", "--dry-run", tmp_path / "o3") == 2
    assert "not an mmsynth run folder" in capsys.readouterr().err


def test_dry_run_refuses_a_foreign_folder_but_replaces_its_own(quick, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert publish(quick, "--repo", "me/q", "--dry-run", taken) == 2
    assert (taken / "notes.txt").read_text() == "mine"
    out = tmp_path / "hub"
    assert publish(quick, "--repo", "me/q", "--dry-run", out, "--include-rejects") == 0
    assert publish(quick, "--repo", "me/q", "--dry-run", out) == 0  # again, now without the rejects
    assert not list(out.rglob("rejected-*.parquet"))


def test_secrets_stay_out(quick, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = copy_run(quick, tmp_path / "run")
    recipe = (run / "recipe.yaml").read_text()
    recipe = recipe.replace(
        "    batch_size: 16\n", "    batch_size: 16\n    options: {api_key: sk-live-123, timeout: 5}\n"
    )
    (run / "recipe.yaml").write_text(recipe)
    out = tmp_path / "hub"
    assert publish(run, "--repo", "me/q", "--dry-run", out) == 0
    printed = capsys.readouterr()
    everything = (
        printed.out
        + printed.err
        + "".join(p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file())
    )
    assert TOKEN not in everything and "sk-live-123" not in everything
    published = yaml.safe_load((out / "recipe.yaml").read_text())
    assert published["models"]["vlm"]["options"] == {"api_key": "<redacted>", "timeout": 5}
    assert published["tasks"][0]["sampling"]["max_tokens"] == 24  # `max_tokens` is not a secret

    # The token itself inside a file that would be published: refused, and not echoed.
    (run / "recipe.yaml").write_text(recipe.replace("description:", f"description: see {TOKEN}", 1))
    assert publish(run, "--repo", "me/q", "--dry-run", tmp_path / "hub2") == 2
    err = capsys.readouterr().err
    assert "would contain your Hugging Face token" in err and TOKEN not in err


def test_redaction_keeps_ordinary_keys():
    text = "api_key: abc\nhf_token: 'x'\nmax_tokens: 5\nheaders: {Authorization: Bearer z, accept: json}\n"
    assert redact_secrets(text) == (
        'api_key: "<redacted>"\nhf_token: "<redacted>"\nmax_tokens: 5\n'
        'headers: {Authorization: "<redacted>", accept: json}\n'
    )


def test_same_named_folders_are_not_served_from_a_stale_cache(quick, tmp_path, monkeypatch):
    """`datasets` keys its cache on the folder name and patterns; the card's sizes make the key differ."""
    other = copy_run(quick, tmp_path / "other")
    shard = other / "data" / "captions" / "rejected-00000.parquet"
    pq.write_table(pq.read_table(shard).slice(0, 10), shard)
    marker = other / ".mmsynth" / "chunks" / "00000.json"
    info = json.loads(marker.read_text())
    dropped = info["rejected"]["captions"] - 10
    info["rejected"]["captions"] = 10
    marker.write_text(json.dumps(info))
    manifest = json.loads((other / "manifest.json").read_text())  # a run that wrote the shorter shard
    manifest["shards"]["data/captions/rejected-00000.parquet"] = hashlib.sha256(
        shard.read_bytes()
    ).hexdigest()
    (other / "manifest.json").write_text(json.dumps(manifest))
    shared = tmp_path / "shared_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", shared)
    rows = []
    for run, parent in ((quick, "a"), (other, "b")):
        out = tmp_path / parent / "hub"
        assert publish(run, "--repo", "me/q", "--dry-run", out, "--include-rejects") == 0
        rows.append(len(datasets.load_dataset(str(out), name="captions", split="rejected")))
    assert rows[0] - rows[1] == dropped > 0
