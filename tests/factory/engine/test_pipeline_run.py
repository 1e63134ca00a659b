"""End to end on the CPU: a three-stage pipeline (idea -> prompt -> images -> captions) and a mixture."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections import Counter
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from mmsynth.factory.cli.main import main
from mmsynth.factory.engine.stages import mixture_task

pytestmark = pytest.mark.slow

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


def rows(run: Path, subset: str, split: str = "train") -> list[dict]:
    out = []
    for f in sorted((run / "data" / subset).glob(f"{split}-*.parquet")):
        out.extend(pq.read_table(f).to_pylist())
    return out


def all_ids(run: Path) -> list[str]:
    return sorted(
        r["id"]
        for f in (run / "data").glob("*/*.parquet")
        for r in pq.read_table(f, columns=["id"]).to_pylist()
    )


@pytest.fixture(scope="module")
def images_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("images") / "run"
    assert main(["run", str(RECIPES / "images.yaml"), "--out", str(out), "-q"]) == 0
    return out


def test_every_stage_writes_its_subset_with_lineage(images_run: Path):
    prompts = {r["id"]: r for r in rows(images_run, "prompts")}
    images = rows(images_run, "images")
    captions = rows(images_run, "recaptions") + rows(images_run, "recaptions", "rejected")
    assert prompts and images and captions
    for img in images:
        # Each image comes from an accepted prompt, rendered from that prompt's text.
        parent = prompts[img["parent_id"]]
        assert img["output"].strip() == parent["output"].strip() and img["image"]["bytes"]
        gen = json.loads(img["generation"])
        assert {gen["width"], gen["height"]} == {64} and gen["steps"] == 4 and gen["scheduler"]
        assert json.loads(img["seed"])["idea"]  # the root seed's fields travel down the stages
    # n: 2 -> two images per prompt, with consecutive recorded seeds.
    by_prompt: dict[str, list[int]] = {}
    for img in images + rows(images_run, "images", "rejected"):
        by_prompt.setdefault(img["parent_id"], []).append(json.loads(img["generation"])["seed"])
    for seeds in by_prompt.values():
        assert len(seeds) == 2 and max(seeds) - min(seeds) == 1
    image_ids = {r["id"] for r in images}
    assert all(c["parent_id"] in image_ids for c in captions)
    # What the stack guarantees, whatever the random model writes: the recaption validators run in
    # recipe order and stop at the first reject, so every recaption that got past heuristics and
    # exact_dedup was scored by caption_consistency (whether any did depends on the model's text).
    stack = ["heuristics", "exact_dedup", "caption_consistency"]
    for c in captions:
        names = [v["validator"] for v in c["verdicts"]]
        assert names == stack[: len(names)], names
        assert all(v["keep"] for v in c["verdicts"][:-1])
        if c["accepted"]:
            assert names == stack
        else:
            assert names and not c["verdicts"][-1]["keep"] and c["reject_reason"]
        for v in c["verdicts"]:
            if v["validator"] == "caption_consistency":
                assert 0.0 <= v["score"] <= 1.0


def test_the_pipeline_run_loads_with_datasets_per_subset(images_run: Path):
    ds = datasets.load_dataset(str(images_run), "images", split="train")
    assert len(ds) == len(rows(images_run, "images")) and ds[0]["image"].size == (64, 64)


def test_a_crash_between_chunks_resumes_every_stage_from_the_cache(images_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(images_run, run)
    before = all_ids(run)
    # The state a kill leaves after chunk 0: chunk 1's marker and shards gone, its answers in the cache.
    (run / ".mmsynth" / "chunks" / "00001.json").unlink()
    (run / "manifest.json").unlink()
    for f in (run / "data").glob("*/*-00001.parquet"):
        f.unlink()
    log = run / ".mmsynth" / "requests.jsonl"
    sent_before = log.read_text().count('"sent"')
    assert main(["run", str(RECIPES / "images.yaml"), "--out", str(run), "-q"]) == 0
    assert all_ids(run) == before
    assert log.read_text().count('"sent"') == sent_before  # every stage answered from the cache


def test_a_mixture_splits_the_seeds_between_root_tasks(tmp_path: Path):
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(
        textwrap.dedent(
            """\
            name: mix
            seeds: {type: scenes, count: 20, image_size: 32}
            models: {vlm: {backend: transformers, model: tiny:vlm, batch_size: 16, device: cpu}}
            tasks:
              - {name: short, template: caption.short, model: vlm, sampling: {max_tokens: 4}}
              - {name: dense, template: caption.dense, model: vlm, sampling: {max_tokens: 4}}
            mixture: {short: 3, dense: 1}
            output: {chunk_size: 10}
            """
        )
    )
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 0
    made = Counter(
        r["task"]
        for f in (out / "data").glob("*/*.parquet")
        for r in pq.read_table(f, columns=["task"]).to_pylist()
    )
    # Exactly the deterministic assignment, and within one seed of the 3:1 shares.
    assert made == Counter(mixture_task(i, {"short": 3, "dense": 1}) for i in range(20))
    assert abs(made["short"] - 15) <= 1 and made["short"] + made["dense"] == 20
    seeds = {
        t: {r["seed_index"] for r in rows(out, t) + rows(out, t, "rejected")} for t in ("short", "dense")
    }
    assert not seeds["short"] & seeds["dense"] and len(seeds["short"] | seeds["dense"]) == 20


def test_show_prints_a_record_and_draws_it(images_run: Path, tmp_path: Path, capsys):
    from PIL import Image

    png = tmp_path / "rec.png"
    assert main(["show", str(images_run), "images", "--png", str(png)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["task"] == "images" and shown["generation"]["steps"] == 4  # JSON columns come decoded
    assert shown["image"].startswith("<image, ")
    with Image.open(png) as im:
        assert im.width == 520 and im.height > 256  # the 64 px image drawn at 4x, then its text
    assert main(["show", str(images_run), "nope"]) == 2
    assert "subsets: images, prompts, recaptions" in capsys.readouterr().err
    assert main(["show", str(images_run), "images", "--index", "999"]) == 2
