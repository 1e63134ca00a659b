"""Near-duplicate images by perceptual hash, per task, with a multi-index so lookups are not O(n).

Each accepted image is remembered as its 64-bit pHash. Two images are near-duplicates when their hashes
differ in at most `max_distance` bits. The hash is cut into four 16-bit blocks, one table per block: if
two hashes differ in at most d bits, some block differs in at most d // 4 of them (pigeonhole), so a
lookup reads the entries whose block equals the query's or is within d // 4 bits of it, then checks
the full distance of what it found. Memory is about 48 bytes per image plus its record id's bytes.
"""

from __future__ import annotations

import logging
from array import array
from collections import OrderedDict
from itertools import combinations
from typing import Literal

import numpy as np
from pydantic import Field

from mmsynth.prompts.media import ImageRef
from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.dedup.phash import HASH_BITS, phash
from mmsynth.validators.image.checks import decode_error, image_name
from mmsynth.validators.types import Candidate, Verdict

log = logging.getLogger(__name__)

_BLOCKS = 4
_BLOCK_BITS = HASH_BITS // _BLOCKS
_BLOCK_MASK = (1 << _BLOCK_BITS) - 1
_HASH_CACHE = 4096  # images hashed by `check` and hashed again by `remember` right after


class ImageDedupConfig(ValidatorConfig):
    type: Literal["image_dedup"] = Field(default="image_dedup", description="Registry key: 'image_dedup'.")
    max_distance: int = Field(
        default=6,
        ge=0,
        le=15,
        description="Largest Hamming distance (of 64 bits) between two pHashes that still counts as a near-duplicate.",
    )
    allow_same_file: bool = Field(
        default=False,
        description="Do not count byte-identical images (same sha256) as duplicates, so several records of one seed image pass and only different files that look alike are rejected.",
    )
    across_tasks: bool = Field(
        default=False,
        description="Compare images across tasks (one memory for the run); default: each task has its own memory.",
    )


class PHashIndex:
    """Remembered pHashes with the id of their record, searchable by Hamming radius.

    Per block, the entries' block values sorted (uint16) with their slots (uint32): a probe is a binary
    search, and the entries it finds are checked together in numpy. New entries wait in a short
    unsorted tail, compared directly, and are sorted in once it grows past max(`tail`, n/32), so adding
    stays cheap (numpy sorts 16-bit keys by radix, in linear time). Memory: 8 (hash) + 8 (file key)
    + 4 x 6 (blocks) bytes per entry, plus the record id's UTF-8 bytes and an 8-byte offset.
    `max_distance` fixes the probe radius per block, so it is set once, for every search.
    """

    def __init__(self, max_distance: int, tail: int = 65536) -> None:
        self.max_distance = max_distance
        self.tail = tail  # the least the unsorted tail may grow to before it is sorted in
        radius = max_distance // _BLOCKS
        # Every 16-bit mask with at most `radius` bits set: XORed with a block, the neighbours to probe.
        self._probes = np.array(
            [
                sum(1 << b for b in bits)
                for r in range(radius + 1)
                for bits in combinations(range(_BLOCK_BITS), r)
            ],
            dtype=np.uint16,
        )
        self._n = 0
        self._hashes = np.zeros(1024, dtype=np.uint64)
        self._files = np.zeros(1024, dtype=np.uint64)  # first 8 bytes of each image's sha256
        self._id_bytes = bytearray()  # record ids, UTF-8, back to back
        self._id_ends = array("Q")
        self._sorted = 0  # entries [0, _sorted) are in the block tables; the rest is the tail
        self._keys = [np.zeros(0, dtype=np.uint16) for _ in range(_BLOCKS)]
        self._slots = [np.zeros(0, dtype=np.uint32) for _ in range(_BLOCKS)]

    def __len__(self) -> int:
        return self._n

    def add(self, h: int, file: int, record_id: str) -> None:
        if self._n == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
            self._files = np.concatenate([self._files, np.zeros_like(self._files)])
        self._hashes[self._n] = h
        self._files[self._n] = file
        self._n += 1
        self._id_bytes += record_id.encode()
        self._id_ends.append(len(self._id_bytes))
        if self._n - self._sorted > max(self.tail, self._n // 32):
            self._sort_in_tail()

    def _sort_in_tail(self) -> None:
        hashes = self._hashes[: self._n]
        slots = np.arange(self._n, dtype=np.uint32)
        for k in range(_BLOCKS):
            keys = ((hashes >> np.uint64(k * _BLOCK_BITS)) & np.uint64(_BLOCK_MASK)).astype(np.uint16)
            order = np.argsort(keys, kind="stable")
            self._keys[k], self._slots[k] = keys[order], slots[order]
        self._sorted = self._n

    def record_id(self, slot: int) -> str:
        start = self._id_ends[slot - 1] if slot else 0
        return self._id_bytes[start : self._id_ends[slot]].decode()

    def nearest(self, h: int, skip_file: int | None = None) -> tuple[str, int] | None:
        """(record id, distance) of the closest remembered hash within `max_distance`, earliest on ties.

        Entries whose file key equals `skip_file` are passed over.
        """
        parts = []
        for k in range(_BLOCKS if self._sorted else 0):  # a small index is all tail: nothing to probe
            keys, slots = self._keys[k], self._slots[k]
            probes = np.uint16(_block(h, k)) ^ self._probes
            lo = np.searchsorted(keys, probes, side="left")
            hi = np.searchsorted(keys, probes, side="right")
            parts.extend(slots[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True) if b > a)
        probed = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
        # The unsorted tail (at most n/32 entries) is compared whole, through a slice: no gather.
        q = np.uint64(h)
        d = np.concatenate(
            [_popcount(self._hashes[probed] ^ q), _popcount(self._hashes[self._sorted : self._n] ^ q)]
        )
        hit = d <= self.max_distance
        if not hit.any():
            return None
        slots = np.concatenate([probed, np.arange(self._sorted, self._n, dtype=np.uint32)])[hit]
        d = d[hit]
        if skip_file is not None:
            other = self._files[slots] != np.uint64(skip_file)
            slots, d = slots[other], d[other]
            if not len(slots):
                return None
        best = int(np.lexsort((slots, d))[0])  # smallest distance, then earliest slot
        return self.record_id(int(slots[best])), int(d[best])


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy >= 2 has it built in; a byte table otherwise)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _BYTE_BITS[x.view(np.uint8).reshape(-1, 8)].sum(axis=1)


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def _block(h: int, k: int) -> int:
    return (h >> (k * _BLOCK_BITS)) & _BLOCK_MASK


def _file_key(img: ImageRef) -> int:
    return int(img.sha256[:16], 16)


class ImageDedupValidator(ConfiguredValidator[ImageDedupConfig]):
    """Rejects a candidate with an image that looks like a remembered one, or like one earlier in its batch.

    Follows the exact_dedup rules: `check` never changes memory, `remember` adds the accepted
    candidate's images. A candidate is compared image by image; the first near-duplicate rejects it.
    Put it after the validators that can reject, and after `image_checks` (an image that does not decode
    is rejected here too, as it cannot be hashed).
    """

    config_cls = ImageDedupConfig
    stateful = True

    def __init__(self, config: ImageDedupConfig | None = None) -> None:
        super().__init__(config)
        self._memory: dict[str, PHashIndex] = {}
        self._cache: OrderedDict[str, int] = OrderedDict()  # sha256 -> pHash, most recent last
        self.unhashed = 0  # remembered images without pixels (replayed from a shard without bytes)

    def __len__(self) -> int:
        return sum(len(ix) for ix in self._memory.values())

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        batch: dict[str, PHashIndex] = {}
        verdicts = []
        for c in candidates:
            scope = self._scope(c)
            memory = self._memory.get(scope)
            in_batch = batch.setdefault(scope, PHashIndex(self.config.max_distance))
            reason, score, hashes = None, None, []
            for i, img in enumerate(c.images):
                try:
                    h = self.hash_image(img)
                except ValueError as e:
                    reason = f"undecodable image: {image_name(img, i)}: {decode_error(e)}"
                    break
                skip = _file_key(img) if self.config.allow_same_file else None
                found = [m for ix in (memory, in_batch) if ix is not None and (m := ix.nearest(h, skip))]
                if found:
                    first_id, d = min(found, key=lambda m: m[1])
                    reason, score = f"near-duplicate image of: {first_id} (hamming {d})", float(d)
                    break
                hashes.append((h, _file_key(img)))
            if reason is None:
                for h, file in hashes:
                    in_batch.add(h, file, c.id)
                verdicts.append(Verdict.ok(self.name))
            else:
                verdicts.append(Verdict.reject(self.name, reason, score))
        return verdicts

    def remember(self, candidate: Candidate) -> None:
        scope = self._scope(candidate)
        for img in candidate.images:
            try:
                h = self.hash_image(img)
            except ValueError:
                # A resume replays records from shards; an image stored there without its bytes cannot be
                # hashed, so memory misses it. Counted and logged rather than failing the run.
                self.unhashed += 1
                if self.unhashed == 1:
                    log.warning("image_dedup %r: cannot hash image %s; not remembered", self.name, img.sha256)
                continue
            if scope not in self._memory:
                self._memory[scope] = PHashIndex(self.config.max_distance)
            self._memory[scope].add(h, _file_key(img), candidate.id)

    def hash_image(self, img: ImageRef) -> int:
        """pHash of `img`, cached by sha256 (a caption task shows one image in several records)."""
        h = self._cache.get(img.sha256)
        if h is not None:
            self._cache.move_to_end(img.sha256)
            return h
        h = phash(img.to_pil())  # ValueError when the bytes are missing or not an image
        self._cache[img.sha256] = h
        if len(self._cache) > _HASH_CACHE:
            self._cache.popitem(last=False)
        return h

    def _scope(self, c: Candidate) -> str:
        return "" if self.config.across_tasks else c.task
