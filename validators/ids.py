"""Append-only storage of record ids for memory-bounded dedup: one UTF-8 blob plus 8-byte offsets."""

from __future__ import annotations

import numpy as np


class IdTable:
    """Record ids by insertion index, at (id length + 8) bytes each instead of a Python str per record."""

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = np.zeros(1024, dtype=np.int64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, record_id: str) -> int:
        """Store `record_id`; returns its index."""
        self._blob += record_id.encode("utf-8", "surrogatepass")
        if self._n == len(self._ends):
            # Grow by half: a doubling would briefly hold twice the offsets of millions of records.
            self._ends = np.concatenate([self._ends, np.zeros(len(self._ends) // 2 + 1, dtype=np.int64)])
        self._ends[self._n] = len(self._blob)
        self._n += 1
        return self._n - 1

    def __getitem__(self, index: int) -> str:
        if not 0 <= index < self._n:
            raise IndexError(index)
        start = int(self._ends[index - 1]) if index else 0
        return self._blob[start : int(self._ends[index])].decode("utf-8", "surrogatepass")

    def nbytes(self) -> int:
        return len(self._blob) + 8 * self._n
