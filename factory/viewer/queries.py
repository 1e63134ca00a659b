"""Filter, sort and page a run's records over its index; read the full rows of one page only.

Selection works on the in-memory index (numpy masks). Full-text search is the one filter that needs the
shards: it streams the `output` column of the shards left after the task/split filters, and its mask is
cached per query text so paging through the hits does not scan again.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmsynth.factory.viewer.index import KEEP, SCORE, Snapshot
from mmsynth.prompts.media import sniff_mime

MAX_PER_PAGE = 200
# What a gallery card shows; a record's own view adds the lineage columns.
CARD_COLUMNS = [
    "id",
    "task",
    "image",
    "output",
    "parsed",
    "accepted",
    "reject_reason",
    "verdicts",
    "seed_id",
    "seed_index",
    "sample_index",
    "template_id",
    "template_version",
    "model",
    "finish_reason",
    "parent_id",
    "texts",
    "images",
]
LINEAGE_COLUMNS = [
    "system",
    "prompt",
    "seed",
    "template_hash",
    "model_revision",
    "backend",
    "sampling",
    "sample_seed",
    "prompt_tokens",
    "completion_tokens",
    "request_key",
    "created_at",
    "generation",
]


class QueryError(ValueError):
    """A query the index cannot answer (unknown validator, bad range); shown to the user as it is."""


@dataclass(frozen=True)
class Query:
    task: str | None = None
    split: str | None = None  # "accepted" | "rejected" | None (both)
    validator: str | None = None  # records this validator judged; with `verdict`, only its keeps or rejects
    verdict: str | None = None  # "keep" | "reject"
    reason: str | None = None  # a record's reject_reason, or its group ("validator: reason" without detail)
    score_min: float | None = None  # on `validator`'s score
    score_max: float | None = None
    q: str | None = None  # case-insensitive substring of the output
    sort: str | None = None  # None (run order) | "score:<validator>" | "seed"
    order: str = "asc"
    page: int = 1
    per_page: int = 24

    def selection_key(self) -> tuple:
        """Everything but the page: the cache key of the ordered selection."""
        return (self.task, self.split, self.validator, self.verdict, self.reason,
                self.score_min, self.score_max, self.q, self.sort, self.order)  # fmt: skip


class Selector:
    """Ordered selections of one run's index, cached so that paging is a slice."""

    def __init__(self, cache_size: int = 16):
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()

    def select(self, snap: Snapshot, query: Query) -> np.ndarray:
        key = (snap.key, query.selection_key())
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        hits = _select(snap, query)
        with self._lock:
            self._cache[key] = hits
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return hits


def _select(snap: Snapshot, query: Query) -> np.ndarray:
    t = snap.table
    mask = np.ones(t.num_rows, bool)
    if query.task:
        mask &= pc.equal(t["task"], query.task).fill_null(False).to_numpy(zero_copy_only=False)
    if query.split:
        if query.split not in ("accepted", "rejected"):
            raise QueryError(f"split is 'accepted' or 'rejected', not {query.split!r}")
        accepted = t["accepted"].fill_null(False).to_numpy(zero_copy_only=False)
        mask &= accepted if query.split == "accepted" else ~accepted
    if query.reason:
        # The reason or its group: "heuristics: too short" matches "heuristics: too short: 2 < 8 chars".
        rr = t["reject_reason"]
        same = pc.or_(pc.equal(rr, query.reason), pc.starts_with(rr, query.reason + ":"))
        mask &= same.fill_null(False).to_numpy(zero_copy_only=False)
    if query.validator is not None:
        _known(snap, query.validator)
        keep = snap.column(KEEP + query.validator)
        if query.verdict is None:
            mask &= keep >= 0
        elif query.verdict in ("keep", "reject"):
            mask &= keep == (1 if query.verdict == "keep" else 0)
        else:
            raise QueryError(f"verdict is 'keep' or 'reject', not {query.verdict!r}")
    elif query.verdict is not None:
        raise QueryError("a verdict filter needs a validator (whose verdict to look at)")
    if query.score_min is not None or query.score_max is not None:
        if query.validator is None:
            raise QueryError("a score range needs a validator (whose score to compare)")
        score = snap.column(SCORE + query.validator)
        with np.errstate(invalid="ignore"):
            if query.score_min is not None:
                mask &= score >= query.score_min
            if query.score_max is not None:
                mask &= score <= query.score_max
    if query.q:
        mask &= _text_mask(snap, mask, query.q)
    hits = np.flatnonzero(mask)
    return _order(snap, hits, query)


def _known(snap: Snapshot, validator: str) -> None:
    if validator not in snap.validators:
        raise QueryError(
            f"no validator {validator!r} in this run; it has: {', '.join(snap.validators) or 'none'}"
        )


def _order(snap: Snapshot, hits: np.ndarray, query: Query) -> np.ndarray:
    if query.order not in ("asc", "desc"):
        raise QueryError(f"order is 'asc' or 'desc', not {query.order!r}")
    if not query.sort:
        return hits[::-1] if query.order == "desc" else hits
    if query.sort == "seed":
        seeds = snap.column("seed_index")[hits]
        samples = snap.column("sample_index")[hits]
        order = np.lexsort((samples, seeds))
        return hits[order[::-1] if query.order == "desc" else order]
    if query.sort.startswith("score:"):
        validator = query.sort[len("score:") :]
        _known(snap, validator)
        score = snap.column(SCORE + validator)[hits]
        # Records without a score go last in either direction; ties keep run order (stable sort).
        key = np.where(np.isnan(score), np.inf, -score if query.order == "desc" else score)
        return hits[np.argsort(key, kind="stable")]
    raise QueryError(f"sort is 'seed' or 'score:<validator>', not {query.sort!r}")


def _text_mask(snap: Snapshot, mask: np.ndarray, q: str) -> np.ndarray:
    """Rows whose output contains `q`, reading `output` only from shards that still have candidate rows."""
    out = np.zeros(len(mask), bool)
    files = snap.column("file")
    for i in np.unique(files[mask]):
        rows = np.flatnonzero(files == i)
        outputs = pq.read_table(snap.shards[i].path, columns=["output"])["output"]
        found = pc.match_substring(outputs, q, ignore_case=True).fill_null(False)
        # A shard's index rows are contiguous and in row order, so its mask drops straight in.
        out[rows] = found.to_numpy(zero_copy_only=False)
    return out


def read_rows(snap: Snapshot, positions: np.ndarray, columns: list[str]) -> list[dict[str, Any]]:
    """The rows at `positions` (index positions), in that order, with only `columns`, one read per shard."""
    files = snap.column("file")[positions]
    rows = snap.column("row")[positions]
    wanted: dict[int, list[int]] = defaultdict(list)
    for f, r in zip(files.tolist(), rows.tolist(), strict=True):
        wanted[f].append(r)
    got: dict[tuple[int, int], dict[str, Any]] = {}
    for f, rs in wanted.items():
        for r, row in zip(rs, _read_shard_rows(snap.shards[f].path, rs, columns), strict=True):
            got[(f, r)] = row
    return [got[(f, r)] for f, r in zip(files.tolist(), rows.tolist(), strict=True)]


def _read_shard_rows(path: Path, rows: list[int], columns: list[str]) -> list[dict[str, Any]]:
    """Only the row groups that hold `rows` are decoded (the writer makes one per shard today)."""
    pf = pq.ParquetFile(path)
    starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
    out: dict[int, dict[str, Any]] = {}
    by_group: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        by_group[int(np.searchsorted(starts, r, side="right") - 1)].append(r)
    for g, rs in by_group.items():
        table = pf.read_row_group(g, columns=columns)
        taken = table.take([r - starts[g] for r in rs]).to_pylist()
        out.update(zip(rs, taken, strict=True))
    return [out[r] for r in rows]


def page(snap: Snapshot, hits: np.ndarray, query: Query) -> tuple[np.ndarray, int]:
    """The index positions on `query.page` and the page count (at least 1)."""
    if not 1 <= query.per_page <= MAX_PER_PAGE:
        raise QueryError(f"per_page is 1..{MAX_PER_PAGE}, not {query.per_page}")
    pages = max(1, -(-len(hits) // query.per_page))
    if query.page < 1:
        raise QueryError(f"page starts at 1, not {query.page}")
    start = (query.page - 1) * query.per_page
    return hits[start : start + query.per_page], pages


def find(snap: Snapshot, record_id: str) -> int | None:
    """The index position of a record id (first match), or None."""
    found = np.flatnonzero(
        pc.equal(snap.table["id"], record_id).fill_null(False).to_numpy(zero_copy_only=False)
    )
    return int(found[0]) if len(found) else None


def children(snap: Snapshot, record_id: str, limit: int = 50) -> list[str]:
    """Ids of records made from this one (parent_id)."""
    if "parent_id" not in snap.table.column_names:
        return []
    sel = pc.equal(snap.table["parent_id"], record_id).fill_null(False)
    return snap.table["id"].filter(sel).slice(0, limit).to_pylist()


def data_url(image: dict[str, Any] | None) -> str | None:
    data = (image or {}).get("bytes")
    if not data:
        return None
    return f"data:{sniff_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def pretty_output(output: str | None, parsed: str | None) -> str | None:
    """The output as indented JSON when it is JSON (or was parsed to JSON); None when it is plain text."""
    for text in (output, parsed):
        if not text:
            continue
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, (dict, list)):
            return json.dumps(value, indent=2, ensure_ascii=False)
    return None


def card(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the page shows it: images as data URLs, JSON pretty-printed, documents as ordered items."""
    out = {k: v for k, v in row.items() if k not in ("image", "images", "texts", "parsed")}
    out["image"] = data_url(row.get("image"))
    out["pretty"] = pretty_output(row.get("output"), row.get("parsed"))
    texts, images = row.get("texts") or [], row.get("images") or []
    out["document"] = (
        [
            {"text": t} if t is not None else {"image": data_url(images[i] if i < len(images) else None)}
            for i, t in enumerate(texts)
        ]
        if texts or images
        else None
    )
    for name in ("seed", "sampling", "generation"):
        if name in row:
            out[name] = _loads(row[name])
    return out
