"""Parquet shards that `datasets.load_dataset(RUN_DIR)` reads directly, written atomically."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from mmsynth.factory.dataset.records import Record
from mmsynth.prompts.files import atomic_open

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "task": datasets.Value("string"),
        "image": datasets.Image(),
        "image_sha256": datasets.List(datasets.Value("string")),
        "system": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "output": datasets.Value("string"),
        "parsed": datasets.Value("string"),
        "accepted": datasets.Value("bool"),
        "reject_reason": datasets.Value("string"),
        "verdicts": datasets.List(
            {
                "validator": datasets.Value("string"),
                "keep": datasets.Value("bool"),
                "reason": datasets.Value("string"),
                "score": datasets.Value("float64"),
            }
        ),
        "seed_id": datasets.Value("string"),
        "seed_index": datasets.Value("int64"),
        "seed": datasets.Value("string"),
        "template_id": datasets.Value("string"),
        "template_version": datasets.Value("int32"),
        "template_hash": datasets.Value("string"),
        "model": datasets.Value("string"),
        "model_revision": datasets.Value("string"),
        "backend": datasets.Value("string"),
        "sampling": datasets.Value("string"),
        "sample_seed": datasets.Value("int64"),
        "sample_index": datasets.Value("int32"),
        "finish_reason": datasets.Value("string"),
        "prompt_tokens": datasets.Value("int64"),
        "completion_tokens": datasets.Value("int64"),
        "request_key": datasets.Value("string"),
        "created_at": datasets.Value("string"),
        "parent_id": datasets.Value("string"),
        "generation": datasets.Value("string"),
        # Interleaved documents (OBELICS layout): texts[i] and images[i], exactly one of them set. Empty
        # lists for every other task, whose single image is in `image`.
        "texts": datasets.List(datasets.Value("string")),
        "images": datasets.List(datasets.Image()),
    }
)
# The schema carries the `datasets` features in its metadata, so Image columns load as images.
SCHEMA: pa.Schema = FEATURES.arrow_schema

SPLITS = ("train", "rejected")

# Columns needed to replay accepted records into stateful validators on resume (no image bytes).
REPLAY_COLUMNS = [
    "id",
    "task",
    "seed_index",
    "sample_index",
    "output",
    "parsed",
    "finish_reason",
    "prompt",
    "image_sha256",
    "image",  # the first image's bytes: image_dedup needs pixels, not only hashes, to rebuild its state
    "seed",
]


def shard_path(run_dir: Path, task: str, split: str, chunk: int) -> Path:
    return run_dir / "data" / task / f"{split}-{chunk:05d}.parquet"


def write_shard(path: Path, records: Sequence[Record]) -> int:
    """Write records to `path` atomically (temp file, fsync, rename); returns bytes written.

    Never called with no records: `datasets` cannot read a zero-row Parquet file.
    """
    assert records, "empty shards are not written"
    table = pa.Table.from_pylist([r.to_row() for r in records], schema=SCHEMA)
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f, compression="zstd")
    return path.stat().st_size


def write_chunk(
    run_dir: Path, chunk: int, records: Sequence[Record], subsets: Sequence[str]
) -> dict[tuple[str, bool], list[Record]]:
    """Write one chunk's records into their shards, subset by subset (train: accepted, rejected: the
    rest; a shard with no record is not written); returns the records grouped by (task, accepted)."""
    groups: dict[tuple[str, bool], list[Record]] = {}
    for r in records:  # one pass: `accepted` is worked out from the verdicts each time it is read
        groups.setdefault((r.task, r.accepted), []).append(r)
    for subset in subsets:
        for split in SPLITS:
            rows = groups.get((subset, split == "train"))
            if rows:
                write_shard(shard_path(run_dir, subset, split, chunk), rows)
    return groups


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shard_hashes(run_dir: Path) -> dict[str, str]:
    """{"data/<task>/<split>-<chunk>.parquet": sha256} for every shard of the run: the manifest's
    "shards", so that publishing can tell a shard from another with the same row count."""
    files = sorted((run_dir / "data").glob("*/*.parquet"))
    return {f.relative_to(run_dir).as_posix(): file_sha256(f) for f in files}


def read_replay_rows(path: Path) -> list[dict]:
    return pq.read_table(path, columns=REPLAY_COLUMNS).to_pylist()
