"""The shipped interleaved-documents recipe, end to end against the real vLLM test server.

Guided decoding (xgrammar, bounded string lengths in the recipe's doc.plan template) makes even the
random tiny LM write valid plans, so documents really get assembled: plan -> image prompts -> tiny SD
images -> tiny VLM captions -> OBELICS-style rows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from mmsynth.factory.cli.main import main

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def rows(run: Path, subset: str, split: str) -> list[dict]:
    return [
        r
        for f in sorted((run / "data" / subset).glob(f"{split}-*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]


@pytest.fixture(scope="module")
def interleaved_run(lm_pool, tiny_lm, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recipes")
    shutil.copytree(RECIPES / "data", folder / "data")
    shutil.copytree(RECIPES / "templates", folder / "templates")
    recipe = yaml.safe_load((RECIPES / "interleaved.yaml").read_text())
    # The session's server already runs the tiny LM with the recipe's structured-output settings.
    recipe["models"]["llm"] = {
        "backend": "vllm-server",
        "model": str(tiny_lm),
        "options": {"base_url": lm_pool.urls[0], "max_concurrency": 16},
    }
    # Random text trips the character-set heuristic on most slots; drop it so whole documents survive.
    recipe["validators"] = [v for v in recipe["validators"] if v["type"] != "heuristics"]
    path = folder / "interleaved.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = folder / "run"
    assert main(["run", str(path), "--out", str(out), "-q"]) == 0
    return out


def test_plans_are_valid_json_and_fan_out_one_prompt_per_image_slot(interleaved_run: Path):
    plans = rows(interleaved_run, "plan", "train")
    assert plans, "guided decoding should give at least one valid plan"
    prompts = rows(interleaved_run, "image_prompts", "train") + rows(
        interleaved_run, "image_prompts", "rejected"
    )
    for plan in plans:
        segments = json.loads(plan["parsed"])["segments"]
        slots = [i for i, s in enumerate(segments) if s["type"] == "image"]
        mine = sorted(json.loads(p["seed"])["item_index"] for p in prompts if p["parent_id"] == plan["id"])
        assert mine == slots


def test_documents_are_aligned_and_load_with_datasets(interleaved_run: Path):
    docs = rows(interleaved_run, "documents", "train")
    assert docs, "at least one document should have every slot filled"
    for doc in docs:
        assert len(doc["texts"]) == len(doc["images"]) >= 2
        assert all((t is None) != (img is None) for t, img in zip(doc["texts"], doc["images"], strict=True))
        assert json.loads(doc["parsed"])["alt_texts"]
    ds = datasets.load_dataset(str(interleaved_run), "documents", split="train")
    first = ds[0]
    assert [img is not None for img in first["images"]] == [t is None for t in first["texts"]]
    assert next(img for img in first["images"] if img is not None).size == (64, 64)


def test_rejected_documents_say_which_slot_failed(interleaved_run: Path):
    for doc in rows(interleaved_run, "documents", "rejected"):
        assert doc["reject_reason"].startswith(("slot ", "structure"))
