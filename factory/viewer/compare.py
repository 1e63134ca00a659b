"""Two runs side by side: their records paired by (task, seed_id), the seeds both runs were given.

A seed can have several records in a run (n samples per seed); a pair shows all of each run's records
for that seed. The pairing is computed on the two indexes (no outputs read) and cached per run state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmsynth.factory.viewer.index import Snapshot
from mmsynth.factory.viewer.queries import MAX_PER_PAGE, QueryError, card, read_rows

COLUMNS = [
    "id", "task", "seed_id", "image", "output", "parsed", "accepted", "reject_reason", "verdicts",
    "sample_index", "template_id", "template_version", "model", "texts", "images",
]  # fmt: skip
STATUSES = ("same", "differ", "only_a", "only_b")
SEP = "\x1f"  # joins task and seed_id into one key; neither contains it


@dataclass(frozen=True)
class CompareQuery:
    task: str | None = None
    status: str | None = None  # one of STATUSES; "differ": the seed's accepted count differs
    page: int = 1
    per_page: int = 10


def _groups(snap: Snapshot) -> pa.Table:
    t = snap.table.select(["task", "seed_id", "seed_index", "accepted"])
    t = t.set_column(3, "accepted", pc.cast(t["accepted"], pa.int64()))
    g = t.group_by(["task", "seed_id"]).aggregate(
        [("seed_index", "min"), ("accepted", "sum"), ("accepted", "count")]
    )
    names = {"seed_index_min": "seed_index", "accepted_sum": "accepted", "accepted_count": "records"}
    return g.rename_columns([names.get(c, c) for c in g.column_names])


class Pairing:
    def __init__(self) -> None:
        self._key: tuple | None = None
        self._table: pa.Table | None = None
        self._lock = threading.Lock()

    def table(self, a: Snapshot, b: Snapshot) -> pa.Table:
        """One row per (task, seed_id) in either run: seed_index, accepted and records of each, status."""
        with self._lock:
            if self._key == (a.key, b.key) and self._table is not None:
                return self._table
        j = _groups(a).join(
            _groups(b), keys=["task", "seed_id"], join_type="full outer", left_suffix="_a", right_suffix="_b"
        )
        n_a = j["records_a"].fill_null(0).to_numpy()
        n_b = j["records_b"].fill_null(0).to_numpy()
        acc_a = j["accepted_a"].fill_null(0).to_numpy()
        acc_b = j["accepted_b"].fill_null(0).to_numpy()
        status = np.where(
            n_a == 0, "only_b", np.where(n_b == 0, "only_a", np.where(acc_a != acc_b, "differ", "same"))
        )
        seed_index = pc.coalesce(j["seed_index_a"], j["seed_index_b"])
        j = j.append_column("status", pa.array(status)).append_column("order", seed_index)
        j = j.sort_by([("task", "ascending"), ("order", "ascending"), ("seed_id", "ascending")])
        with self._lock:
            self._key, self._table = (a.key, b.key), j
        return j


def summary(pairs: pa.Table, task: str | None) -> dict[str, int]:
    t = pairs.filter(pc.equal(pairs["task"], task)) if task else pairs
    counts = {s: 0 for s in STATUSES}
    for d in pc.value_counts(t["status"]).to_pylist():
        counts[d["values"]] = d["counts"]
    return {"seeds": t.num_rows, **counts}


def compare_page(pairs: pa.Table, a: Snapshot, b: Snapshot, query: CompareQuery) -> dict[str, Any]:
    if query.status is not None and query.status not in STATUSES:
        raise QueryError(f"status is one of {', '.join(STATUSES)}, not {query.status!r}")
    if not 1 <= query.per_page <= MAX_PER_PAGE or query.page < 1:
        raise QueryError(f"page starts at 1 and per_page is 1..{MAX_PER_PAGE}")
    t = pairs
    if query.task:
        t = t.filter(pc.equal(t["task"], query.task))
    if query.status:
        t = t.filter(pc.equal(t["status"], query.status))
    pages = max(1, -(-t.num_rows // query.per_page))
    shown = t.slice((query.page - 1) * query.per_page, query.per_page).to_pylist()
    keys = [r["task"] + SEP + r["seed_id"] for r in shown]
    side_a, side_b = _records(a, keys), _records(b, keys)
    rows = [
        {
            "task": r["task"],
            "seed_id": r["seed_id"],
            "seed_index": r["order"],
            "status": r["status"],
            "a": side_a.get(k, []),
            "b": side_b.get(k, []),
        }
        for r, k in zip(shown, keys, strict=True)
    ]
    return {
        "total": t.num_rows,
        "page": query.page,
        "pages": pages,
        "per_page": query.per_page,
        "pairs": rows,
    }


def _records(snap: Snapshot, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Cards of the records of these (task, seed_id) keys, grouped by key, in sample order."""
    if not keys or snap.table.num_rows == 0:
        return {}
    joined = pc.binary_join_element_wise(snap.table["task"], snap.table["seed_id"], SEP)
    positions = np.flatnonzero(
        pc.is_in(joined, pa.array(keys)).fill_null(False).to_numpy(zero_copy_only=False)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for row in read_rows(snap, positions, COLUMNS):
        c = card(row)
        out.setdefault(row["task"] + SEP + row["seed_id"], []).append(c)
    for cards in out.values():
        cards.sort(key=lambda c: c.get("sample_index") or 0)
    return out
