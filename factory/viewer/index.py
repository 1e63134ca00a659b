"""A run folder's shards as a small in-memory index, rebuilt shard by shard as a running run writes more.

The index holds only what filtering, sorting and paging need (ids, task, split, reasons, seed ids and
one keep/score pair per validator); outputs and images stay on disk and are read for one page at a time.
Shards are written atomically (temp file, rename), so every `*.parquet` present is complete.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Read from every shard once; no output text, no image bytes.
INDEX_COLUMNS = [
    "id",
    "task",
    "accepted",
    "reject_reason",
    "seed_id",
    "seed_index",
    "sample_index",
    "parent_id",
    "verdicts",
]
EMPTY = pa.schema(
    [
        ("id", pa.string()),
        ("task", pa.string()),
        ("accepted", pa.bool_()),
        ("reject_reason", pa.string()),
        ("seed_id", pa.string()),
        ("seed_index", pa.int64()),
        ("sample_index", pa.int32()),
        ("parent_id", pa.string()),
        ("row", pa.int32()),
        ("file", pa.int32()),
    ]
)
KEEP = "keep:"  # int8 column per validator: 1 kept, 0 rejected, -1 no verdict
SCORE = "score:"  # float64 column per validator: NaN when there is no score


@dataclass(frozen=True)
class Shard:
    path: Path
    task: str
    split: str  # "train" (accepted) or "rejected"
    mtime_ns: int
    size: int


@dataclass
class ShardIndex:
    shard: Shard
    table: pa.Table
    # (validator, keep, reason) -> count over the shard's verdicts: the per-validator pass rates and reasons.
    verdicts: Counter = field(default_factory=Counter)


@dataclass
class Snapshot:
    """The run as it was at one look: which shards, and their index rows concatenated (columns file, row)."""

    key: tuple
    shards: list[Shard]
    table: pa.Table
    validators: list[str]
    verdicts: list[Counter]  # per shard, aligned with `shards`
    _columns: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def column(self, name: str) -> np.ndarray:
        """A column as numpy (read-only, memoised); validator columns missing from some shards are filled."""
        if name not in self._columns:
            arr = self._column(name)
            arr.flags.writeable = False
            self._columns[name] = arr
        return self._columns[name]

    def _column(self, name: str) -> np.ndarray:
        if name not in self.table.column_names:
            fill = -1 if name.startswith(KEEP) else np.nan
            return np.full(self.table.num_rows, fill, np.int8 if name.startswith(KEEP) else np.float64)
        col = self.table[name]
        if name.startswith(KEEP):
            return col.fill_null(-1).to_numpy()
        if name.startswith(SCORE):
            return col.fill_null(np.nan).to_numpy()
        return col.to_numpy(zero_copy_only=False)


def list_shards(run: Path) -> list[Shard]:
    shards = []
    for p in sorted((run / "data").glob("*/*.parquet")):
        split = p.stem.rsplit("-", 1)[0]
        try:
            st = p.stat()
        except FileNotFoundError:  # a rerun with --fresh removed it meanwhile
            continue
        shards.append(Shard(p, p.parent.name, split, st.st_mtime_ns, st.st_size))
    return shards


def index_shard(shard: Shard) -> ShardIndex:
    t = pq.read_table(shard.path, columns=INDEX_COLUMNS)
    n = t.num_rows
    columns = {name: t[name] for name in INDEX_COLUMNS if name != "verdicts"}
    columns["row"] = pa.array(np.arange(n, dtype=np.int32))
    verdicts = t["verdicts"].combine_chunks()
    flat = pc.list_flatten(verdicts)
    parents = pc.list_parent_indices(verdicts).to_numpy()
    names = flat.field("validator")
    keeps = flat.field("keep").fill_null(False).to_numpy(zero_copy_only=False)
    scores = flat.field("score").fill_null(np.nan).to_numpy(zero_copy_only=False)
    counts: Counter = Counter()
    for name in pc.unique(names).to_pylist():
        if name is None:
            continue
        sel = pc.equal(names, name).to_numpy(zero_copy_only=False)
        keep = np.full(n, -1, np.int8)
        keep[parents[sel]] = keeps[sel]
        score = np.full(n, np.nan)
        score[parents[sel]] = scores[sel]
        columns[KEEP + name] = pa.array(keep)
        columns[SCORE + name] = pa.array(score)
    # Reasons are counted with pyarrow's group_by: a dedup validator's reasons can be as many as its rejects.
    grouped = (
        pa.table({"validator": names, "keep": flat.field("keep"), "reason": flat.field("reason")})
        .group_by(["validator", "keep", "reason"])
        .aggregate([([], "count_all")])
    )
    for v, k, r, c in zip(
        *(grouped[c].to_pylist() for c in ("validator", "keep", "reason", "count_all")), strict=True
    ):
        counts[(v, bool(k), r)] += c
    return ShardIndex(shard, pa.table(columns), counts)


class RunIndex:
    """One run folder. `snapshot()` re-lists the shards and indexes only new or changed ones."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._shards: dict[Path, ShardIndex] = {}
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        with self._lock:
            shards = list_shards(self.path)
            key = tuple((s.path.name, s.task, s.mtime_ns, s.size) for s in shards)
            if self._snapshot is not None and self._snapshot.key == key:
                return self._snapshot
            live = {s.path for s in shards}
            for p in [p for p in self._shards if p not in live]:
                del self._shards[p]
            parts = []
            for s in shards:
                known = self._shards.get(s.path)
                if known is None or known.shard != s:
                    known = self._shards[s.path] = index_shard(s)
                parts.append(known)
            self._snapshot = _concat(key, parts)
            return self._snapshot


def _concat(key: tuple, parts: list[ShardIndex]) -> Snapshot:
    validators = sorted({c[len(KEEP) :] for p in parts for c in p.table.column_names if c.startswith(KEEP)})
    tables = [
        p.table.append_column("file", pa.array(np.full(p.table.num_rows, i, np.int32)))
        for i, p in enumerate(parts)
    ]
    table = pa.concat_tables(tables, promote_options="default") if tables else EMPTY.empty_table()
    return Snapshot(key, [p.shard for p in parts], table, validators, [p.verdicts for p in parts])
