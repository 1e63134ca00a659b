"""An exact set of seed ids that keeps no id strings: a 64-bit hash, the first line and that line's
byte offset per id, in numpy arrays (about 32 bytes an id, where a dict of strings takes ~120).

A hash match is only a candidate: the caller's `read_id(offset)` reads the earlier line's id again
and the strings are compared. Different ids with the same hash (a collision) are then kept exactly,
in a small dict for that hash, so a collision is never reported as a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

MASK64 = (1 << 64) - 1
REHASH_CHUNK = 1 << 16


def blake64(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest())


def _slot_dtype(capacity: int) -> type:
    return np.uint32 if capacity < 1 << 32 else np.uint64


class IdIndex:
    """`first_line(id, line, offset)`: the line `id` was first used on, recording it when new
    (dict.setdefault on the ids, without holding them)."""

    def __init__(self, read_id: Callable[[int], str | None], hash_id: Callable[[str], int] = blake64):
        self._read_id = read_id  # the id on the line starting at this byte offset (None: none there)
        self._hash = hash_id
        self._n = 0
        # open addressing, linear probing: 1 + an index into the dense arrays, 0 for an empty slot
        self._slots = np.zeros(16, np.uint32)
        self._hashes = np.zeros(8, np.uint64)
        self._lines = np.zeros(8, np.uint64)
        self._offsets = np.zeros(8, np.uint64)
        self._exact: dict[int, dict[str, int]] = {}  # hashes shared by different ids -> id -> line

    def __len__(self) -> int:
        return self._n + sum(len(ids) - 1 for ids in self._exact.values())

    @property
    def nbytes(self) -> int:
        """Bytes in the arrays (the exact dicts of colliding ids, normally empty, not counted)."""
        return sum(a.nbytes for a in (self._slots, self._hashes, self._lines, self._offsets))

    def first_line(self, id: str, line: int, offset: int) -> int:
        h = self._hash(id) & MASK64
        exact = self._exact.get(h)
        if exact is not None:
            return exact.setdefault(id, line)
        slots, mask = self._slots, len(self._slots) - 1
        i = h & mask
        while s := int(slots[i]):
            k = s - 1
            if int(self._hashes[k]) == h:
                first = int(self._lines[k])
                earlier = self._read_id(int(self._offsets[k]))
                if earlier == id:
                    return first
                # a collision: from now on the ids with this hash are compared as strings
                self._exact[h] = {id: line} if earlier is None else {earlier: first, id: line}
                return line
            i = (i + 1) & mask
        k = self._n
        if k == len(self._hashes):  # double in place (realloc): old and new copies are never both held
            for a in (self._hashes, self._lines, self._offsets):
                a.resize(2 * k, refcheck=False)  # no views of these arrays outlive a call
        self._hashes[k], self._lines[k], self._offsets[k] = h, line, offset
        slots[i] = k + 1
        self._n = k + 1
        if 2 * self._n > len(slots):  # load over 0.5: double
            capacity = 2 * len(slots)
            del slots
            self._rehash(capacity)
        return line

    def _rehash(self, capacity: int) -> None:
        """Place every id in a new table of `capacity` slots (the old one is dropped first: the dense
        arrays hold the hashes). Vectorised in chunks, to keep the temporaries small: each round, of
        the ids whose probe position is empty, the first per position takes it; the rest move on."""
        self._slots = np.zeros(0, np.uint32)
        slots = np.zeros(capacity, _slot_dtype(capacity))
        mask = np.uint64(capacity - 1)
        for lo in range(0, self._n, REHASH_CHUNK):
            pending = np.arange(lo, min(lo + REHASH_CHUNK, self._n), dtype=np.uint64)
            pos = self._hashes[pending] & mask
            while pending.size:
                free = slots[pos] == 0
                taken, first = np.unique(pos[free], return_index=True)
                slots[taken] = pending[free][first] + 1
                placed = np.zeros(pending.size, bool)
                placed[np.flatnonzero(free)[first]] = True
                pending, pos = pending[~placed], (pos[~placed] + np.uint64(1)) & mask
        self._slots = slots
