"""A persistent, content-addressed response cache (SQLite, one row per request key)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from mmsynth.generators.types import Generation

# One encoder for every row: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


class ResponseCache:
    """Maps a request key to the Generation a backend returned for it, with the time it arrived.

    Each `put_many` is one transaction in WAL mode (the dispatcher hands in every batch answered since
    its last commit: a group commit), so a kill -9 loses at most the answers not yet committed, never
    part of a batch; a response that reached the cache is never asked for again. Several connections
    (processes) may write one file: a writer waits up to `busy_timeout_s` for another's transaction.
    Failed generations are cached too (a context-too-long error will fail the same way next time);
    pass `retry_failed=True` to look past them.
    """

    def __init__(self, path: Path, retry_failed: bool = False, busy_timeout_s: float = 30.0):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.retry_failed = retry_failed
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
        )

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[Generation, float]]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, tuple[Generation, float]] = {}
        for i in range(0, len(keys), 500):  # SQLite caps bound parameters
            part = keys[i : i + 500]
            q = f"SELECT key, value, created FROM responses WHERE key IN ({','.join('?' * len(part))})"
            for key, value, created in self._db.execute(q, part):
                gen = Generation.from_json(json.loads(value))
                if gen.error is not None and self.retry_failed:
                    continue
                found[key] = (gen, created)
        return found

    def put_many(self, items: Iterable[tuple[str, Generation]]) -> float:
        """Store answers in one transaction, all or none; returns the timestamp they were stored with."""
        now = time.time()
        encode = _ENCODER.encode
        rows = [(k, encode(g.to_json()), now) for k, g in items]
        if rows:
            with self._db:  # commits, or rolls back when a row fails
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", rows)
        return now

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()
