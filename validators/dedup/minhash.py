"""Near-duplicate text dedup with MinHash LSH: streaming, vectorised per batch, memory bounded.

A text becomes a set of word (or character) n-grams; `num_perm` hash functions h(x) = (a*x + b) mod
2^64 (odd a; the top 32 bits kept) give its MinHash signature; the signature is cut into `bands` bands
of `rows` values, and each band becomes one 64-bit key. Two texts that share a band key are
candidates; with `verify` the candidate is confirmed on the Jaccard estimated from 8-bit sketches of
both signatures. Memory keeps only band keys (and the sketches with `verify`), never texts or full
signatures: see `MinHashDedupValidator.bytes_per_record`.

Why not datasketch's MinHash/MinHashLSH: on bench/dedup.py's 100,000 documents, at the same recall and
bands x rows, it was 6.5-7.6x slower (SHA-1 per shingle and numpy per document, from Python) and its
process grew about 7x more (Python objects per band key); figures in BENCHMARKS.md.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.dedup.shingles import (
    char_token_hashes,
    mix64,
    ngram_hashes,
    stable_hash64,
    word_token_hashes,
)
from mmsynth.validators.ids import IdTable
from mmsynth.validators.types import Candidate, Verdict

_MAX32 = np.uint64(0xFFFFFFFF)
# Shingles hashed per step: a (chunk x num_perm) uint64 block of ~4 MiB stays in cache.
_BLOCK_BYTES = 1 << 22
_SKETCH_COLLISION = 1 / 256  # two different 8-bit values are equal by chance this often


class MinHashDedupConfig(ValidatorConfig):
    type: Literal["minhash_dedup"] = Field(
        default="minhash_dedup", description="Registry key: 'minhash_dedup'."
    )
    shingle: Literal["word", "char"] = Field(
        default="word",
        description="N-grams of normalised words (`\\w+`, case-folded, punctuation dropped) or of characters (whitespace runs collapsed).",
    )
    ngram: int = Field(default=5, ge=1, le=64, description="Shingle length in words or characters.")
    lowercase: bool = Field(default=True, description="Case-fold the text before shingling.")
    num_perm: int = Field(default=128, ge=8, le=1024, description="Hash functions in each MinHash signature.")
    threshold: float = Field(
        default=0.7,
        gt=0,
        lt=1,
        description="Jaccard similarity (of the shingle sets) at or above which a text is a near-duplicate.",
    )
    bands: int | None = Field(
        default=None,
        ge=1,
        description="LSH bands; null (with `rows` null): the bands and rows that minimise the false positive plus false negative probability at `threshold` (datasketch's choice).",
    )
    rows: int | None = Field(
        default=None, ge=1, description="Signature values per band; set together with `bands`."
    )
    verify: bool = Field(
        default=True,
        description="Confirm every LSH candidate on the Jaccard estimated from 8-bit signature sketches (num_perm bytes per record) and reject only at or above `threshold`; false: any shared band rejects.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        description="Seed of the hash functions. Changing it changes which texts match: keep it across resumes.",
    )

    @model_validator(mode="after")
    def _bands_and_rows(self) -> MinHashDedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both `bands` and `rows`, or neither")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows ({self.bands} * {self.rows}) exceeds num_perm ({self.num_perm})")
        return self


@functools.lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows), bands * rows <= num_perm, minimising the mean of the false positive area below
    `threshold` and the false negative area above it under the LSH S-curve 1 - (1 - s^r)^b."""
    s_lo = np.linspace(0.0, threshold, 513)
    s_hi = np.linspace(threshold, 1.0, 513)
    best, best_err = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _trapezoid(1 - (1 - s_lo**r) ** b, s_lo)
            fn = _trapezoid((1 - s_hi**r) ** b, s_hi)
            err = 0.5 * fp + 0.5 * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


class BandIndex:
    """band key (uint64) -> index of the first record that had it.

    Keys live in one sorted array (12 bytes per key with the value) searched by `searchsorted`, plus
    a small dict of recent keys merged into the arrays once it grows past 1/8 of them, so that
    adding one record is a few dict inserts and the arrays are rebuilt O(log n) times in all.
    """

    def __init__(self) -> None:
        self._keys = np.zeros(0, dtype=np.uint64)
        self._vals = np.zeros(0, dtype=np.int32)
        self._recent: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._keys) + len(self._recent)

    def nbytes(self) -> int:
        return self._keys.nbytes + self._vals.nbytes

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Record index for each key (same shape), -1 where the key is unknown."""
        flat = keys.ravel()
        out = np.full(len(flat), -1, dtype=np.int64)
        if len(self._keys):
            pos = np.minimum(np.searchsorted(self._keys, flat), len(self._keys) - 1)
            found = self._keys[pos] == flat
            out[found] = self._vals[pos[found]]
        if self._recent:
            get = self._recent.get
            missing = np.flatnonzero(out < 0)
            out[missing] = [get(k, -1) for k in flat[missing].tolist()]
        return out.reshape(keys.shape)

    def add(self, keys: np.ndarray, records: np.ndarray) -> None:
        """Add band keys (records x bands) of records numbered `records`, in order; a key already
        present keeps its first record."""
        setdefault = self._recent.setdefault
        for row, record in zip(keys.tolist(), records.tolist(), strict=True):
            for k in row:
                setdefault(k, record)
        if len(self._recent) >= max(1 << 16, len(self._keys) // 8):
            self._merge()

    def _merge(self) -> None:
        new_keys = np.fromiter(self._recent.keys(), dtype=np.uint64, count=len(self._recent))
        new_vals = np.fromiter(self._recent.values(), dtype=np.int32, count=len(self._recent))
        self._recent = {}
        if len(self._keys):
            # Keys already in the arrays are older: they keep their record.
            pos = np.minimum(np.searchsorted(self._keys, new_keys), len(self._keys) - 1)
            fresh = self._keys[pos] != new_keys
            new_keys, new_vals = new_keys[fresh], new_vals[fresh]
        order = np.argsort(new_keys)
        new_keys, new_vals = new_keys[order], new_vals[order]
        at = np.searchsorted(self._keys, new_keys)
        self._keys = np.insert(self._keys, at, new_keys)
        self._vals = np.insert(self._vals, at, new_vals)


class _Batch:
    """What `check` computed for a batch: band keys, sketches, and which texts had no shingle."""

    def __init__(self, keys: np.ndarray, sketches: np.ndarray | None, empty: np.ndarray) -> None:
        self.keys, self.sketches, self.empty = keys, sketches, empty


class MinHashDedupValidator(ConfiguredValidator[MinHashDedupConfig]):
    """Rejects a candidate whose text is a near-duplicate of a remembered one or of an earlier kept
    candidate of the same batch, per task. Texts without a word (or character) are kept and not remembered.

    As in `exact_dedup`, `check` never changes memory and `remember` does; `remember` only queues the
    record, and the queue is hashed in one vectorised pass before the next `check` (records that the
    last `check` hashed are not hashed again).
    """

    config_cls = MinHashDedupConfig
    stateful = True

    def __init__(self, config: MinHashDedupConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg.bands is not None and cfg.rows is not None:
            self.bands, self.rows = cfg.bands, cfg.rows
        else:
            self.bands, self.rows = optimal_bands(cfg.threshold, cfg.num_perm)
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x6D696E68]))
        self._a = rng.integers(0, 1 << 64, size=cfg.num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
        self._b = rng.integers(0, 1 << 64, size=cfg.num_perm, dtype=np.uint64, endpoint=False)
        self._band_salt = mix64(np.arange(1, self.bands + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        self._row_mult = mix64(np.arange(1, self.rows + 1, dtype=np.uint64)) | np.uint64(1)
        self._task_salt: dict[str, np.uint64] = {}
        self._index = BandIndex()
        self._ids = IdTable()
        self._sketch_blocks: list[np.ndarray] = []  # verify: (records x num_perm) uint8, in blocks
        self._pending: list[Candidate] = []
        self._last: dict[str, tuple[str, str, np.ndarray, np.ndarray | None]] = {}

    # -- public -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Records remembered (texts without shingles are not)."""
        self._flush()
        return len(self._ids)

    @property
    def bytes_per_record(self) -> int:
        """Memory per remembered record, besides its id: 12 bytes per band, plus num_perm with `verify`."""
        return 12 * self.bands + (self.config.num_perm if self.config.verify else 0)

    def nbytes(self) -> int:
        """Bytes the remembered records take once their keys are merged into the sorted arrays: band
        keys and values, sketches and ids (the recent-keys dict, at most 65,536 keys or 1/8 of the
        arrays, takes about 100 bytes a key until the next merge)."""
        self._flush()
        n = len(self._ids)
        sketches = n * self.config.num_perm if self.config.verify else 0
        return 12 * len(self._index) + sketches + self._ids.nbytes()

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        self._flush()
        if not candidates:
            return []
        batch = self._hash([c.text for c in candidates], [c.task for c in candidates])
        self._last = {
            c.id: (c.text, c.task, batch.keys[i], None if batch.sketches is None else batch.sketches[i])
            for i, c in enumerate(candidates)
            if not batch.empty[i]
        }
        remembered = self._index.lookup(batch.keys)
        in_memory = (remembered >= 0).any(axis=1)
        # Candidates sharing a band key with another of this batch; the others skip the per-key work.
        _, inverse, counts = np.unique(batch.keys.ravel(), return_inverse=True, return_counts=True)
        shared = (counts[inverse] > 1).reshape(batch.keys.shape).any(axis=1)
        kept_keys: dict[int, int] = {}  # band key -> position of the first kept candidate of this batch
        verdicts = []
        for i in range(len(candidates)):
            if batch.empty[i] or not (in_memory[i] or shared[i]):
                verdicts.append(Verdict.ok(self.name))
                continue
            row = batch.keys[i].tolist() if shared[i] else []
            match = self._best_match(i, batch, remembered[i], [kept_keys.get(k) for k in row])
            if match is None:
                for k in row:
                    kept_keys.setdefault(k, i)
                verdicts.append(Verdict.ok(self.name))
            else:
                first, jaccard = match
                first_id = candidates[first].id if first >= 0 else self._ids[-first - 1]
                verdicts.append(
                    Verdict.reject(
                        self.name, f"near-duplicate of: {first_id} (jaccard~{jaccard:.2f})", score=jaccard
                    )
                )
        return verdicts

    def remember(self, candidate: Candidate) -> None:
        self._pending.append(candidate)
        if len(self._pending) >= 4096:
            self._flush()

    # -- internals ----------------------------------------------------------------------------

    def _best_match(
        self, i: int, batch: _Batch, remembered: np.ndarray, in_batch: list[int | None]
    ) -> tuple[int, float] | None:
        """(match, estimated Jaccard) for candidate i, or None. A match >= 0 is a position in the batch;
        a remembered record r is -(r + 1)."""
        matches: dict[int, int] = {}  # match -> bands shared
        for r in remembered[remembered >= 0].tolist():
            matches[-r - 1] = matches.get(-r - 1, 0) + 1
        for pos in in_batch:
            if pos is not None:
                matches[pos] = matches.get(pos, 0) + 1
        if not matches:
            return None
        if not self.config.verify:
            # The share of equal bands estimates s^rows.
            best = max(matches, key=lambda m: (matches[m], -m if m >= 0 else m))
            return best, (matches[best] / self.bands) ** (1 / self.rows)
        assert batch.sketches is not None
        mine = batch.sketches[i]
        best_match, best_j = None, -1.0
        for m in sorted(matches, key=lambda m: (m >= 0, m)):  # remembered (oldest first), then in batch
            other = batch.sketches[m] if m >= 0 else self._sketch(-m - 1)
            j = _jaccard(mine, other)
            if j > best_j:
                best_match, best_j = m, j
        if best_match is None or best_j < self.config.threshold:
            return None
        return best_match, best_j

    def _sketch(self, record: int) -> np.ndarray:
        block, row = divmod(record, len(self._sketch_blocks[0]))
        return self._sketch_blocks[block][row]

    def _flush(self) -> None:
        """Add the queued records to memory, in order."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        todo = [c for c in pending if self._cached(c) is None]
        fresh: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        if todo:
            batch = self._hash([c.text for c in todo], [c.task for c in todo])
            for k, c in enumerate(todo):
                if not batch.empty[k]:
                    fresh[id(c)] = (batch.keys[k], None if batch.sketches is None else batch.sketches[k])
        rows, records = [], []
        for c in pending:
            got = self._cached(c) or fresh.get(id(c))
            if got is None:
                continue  # no shingle: nothing to remember
            keys, sketch = got
            record = self._ids.append(c.id)
            rows.append(keys)
            records.append(record)
            if sketch is not None:
                self._store_sketch(record, sketch)
        if rows:
            self._index.add(np.stack(rows), np.array(records))

    def _cached(self, c: Candidate) -> tuple[np.ndarray, np.ndarray | None] | None:
        hit = self._last.get(c.id)
        if hit is None or hit[0] != c.text or hit[1] != c.task:
            return None
        return hit[2], hit[3]

    def _store_sketch(self, record: int, sketch: np.ndarray) -> None:
        rows = 65536
        block, row = divmod(record, rows)
        if block == len(self._sketch_blocks):
            self._sketch_blocks.append(np.zeros((rows, self.config.num_perm), dtype=np.uint8))
        self._sketch_blocks[block][row] = sketch

    def _hash(self, texts: Sequence[str], tasks: Sequence[str]) -> _Batch:
        sig, empty = self.signatures(texts)
        keys = self._band_keys(sig, tasks)
        sketches = (sig & 0xFF).astype(np.uint8) if self.config.verify else None
        return _Batch(keys, sketches, empty)

    def signatures(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(MinHash signatures, texts x num_perm uint32; True for texts without any token)."""
        cfg = self.config
        tokenise = word_token_hashes if cfg.shingle == "word" else char_token_hashes
        tokens, lengths = tokenise(texts, cfg.lowercase)
        grams, counts = ngram_hashes(tokens, lengths, cfg.ngram, short_as_one=True)
        n_docs, n_perm = len(texts), cfg.num_perm
        sig = np.full((n_docs, n_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
        starts = np.zeros(n_docs + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        chunk = max(1, _BLOCK_BYTES // (8 * n_perm))
        a, b = self._a[:, None], self._b[:, None]
        buffer = np.empty(
            (n_perm, chunk), dtype=np.uint64
        )  # reused: a fresh 4 MiB array per chunk costs page faults
        for c0 in range(0, len(grams), chunk):
            c1 = min(c0 + chunk, len(grams))
            # (num_perm x chunk): the min runs along the contiguous axis, several times faster than across it.
            block = buffer[:, : c1 - c0]
            np.multiply(a, grams[None, c0:c1], out=block)
            block += b
            # Texts whose shingles meet this chunk: each covers one contiguous segment of it.
            d0 = int(np.searchsorted(starts, c0, side="right")) - 1
            d1 = int(np.searchsorted(starts, c1, side="left"))
            has = counts[d0:d1] > 0
            seg = np.maximum(starts[d0:d1], c0) - c0
            mins = np.minimum.reduceat(block, seg[has], axis=1).T
            docs = np.arange(d0, d1)[has]
            sig[docs] = np.minimum(sig[docs], mins)
        return (sig >> np.uint64(32)).astype(np.uint32), counts == 0

    def _band_keys(self, sig: np.ndarray, tasks: Sequence[str]) -> np.ndarray:
        """(texts x bands) uint64: each band's rows folded into one key, salted by band and task."""
        b, r = self.bands, self.rows
        rows = sig[:, : b * r].reshape(len(sig), b, r).astype(np.uint64)
        folded = (rows * self._row_mult).sum(axis=2, dtype=np.uint64)
        salts = np.array([self._salt(t) for t in tasks], dtype=np.uint64)
        return mix64(folded + self._band_salt[None, :] + salts[:, None])

    def _salt(self, task: str) -> np.uint64:
        salt = self._task_salt.get(task)
        if salt is None:
            salt = self._task_salt[task] = np.uint64(stable_hash64("task:" + task))
        return salt


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard estimated from two 8-bit sketches (b-bit MinHash, corrected for chance equality)."""
    equal = float(np.count_nonzero(a == b)) / len(a)
    return max(0.0, (equal - _SKETCH_COLLISION) / (1 - _SKETCH_COLLISION))
