"""Small data builders for the trainer tests: scenes as images with exact captions, run folders, baselines."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mmsynth.factory.dataset.shards import SCHEMA
from mmsynth.generators.scenes.world import make_scene


def scene(i: int, max_objects: int = 1) -> tuple[bytes, str]:
    s = make_scene(3, i, max_objects=max_objects)
    return s["image"].data, s["description"]


def write_run_dir(run_dir: Path, task: str, rows: list[dict]) -> Path:
    """A run folder shard with the factory's real schema; columns not given are null."""
    full = [{name: row.get(name) for name in SCHEMA.names} for row in rows]
    path = run_dir / "data" / task / "train-00000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(full, schema=SCHEMA), path)
    return run_dir


def caption_rows(indices, max_objects: int = 1, captions=None) -> list[dict]:
    rows = []
    for n, i in enumerate(indices):
        img, desc = scene(i, max_objects)
        rows.append(
            {
                "id": f"syn-{i}",
                "task": "captions",
                "image": {"bytes": img, "path": None},
                "output": captions[n] if captions else desc,
                "accepted": True,
            }
        )
    return rows


def write_baseline(folder: Path, train_idx, test_idx, max_objects: int = 1) -> Path:
    """A dataset folder `datasets` loads: train.parquet and test.parquet with `image` and `caption`."""
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    folder.mkdir(parents=True, exist_ok=True)
    for split, idx in (("train", train_idx), ("test", test_idx)):
        pairs = [scene(i, max_objects) for i in idx]
        ds = datasets.Dataset.from_dict(
            {"image": [{"bytes": b, "path": None} for b, _ in pairs], "caption": [c for _, c in pairs]},
            features=feats,
        )
        ds.to_parquet(str(folder / f"{split}.parquet"))
    return folder


def png_bytes(colour=(200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, format="PNG")
    return buf.getvalue()
