"""Stable 64-bit hashes of word and character n-grams, vectorised over a batch of texts.

Dedup and decontamination state is rebuilt on resume, maybe in another process, so every hash here
is stable across processes and machines: words are hashed with blake2b (never Python's `hash`), and
n-grams combine them with fixed odd multipliers.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
_NON_WORD = re.compile(r"\W+")
# Bytes that are part of a word: ASCII [0-9A-Za-z_] and every byte of a multi-byte UTF-8 character
# (non-ASCII texts have their non-word characters replaced by spaces first, so these are \w too).
_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[list(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")] = True
_WORD_BYTE[0x80:] = True
_LANE = np.arange(8)
# Fixed odd 64-bit multipliers, one per n-gram position (splitmix64-style constants).
_POSITION = np.array(
    [(0x9E3779B97F4A7C15 * (2 * k + 1) + 0xBF58476D1CE4E5B9 * k) % (1 << 64) | 1 for k in range(64)],
    dtype=np.uint64,
)


def normalise(text: str, lowercase: bool = True) -> str:
    """NFKC, then case-folded when `lowercase`: the form every n-gram is taken from."""
    text = unicodedata.normalize("NFKC", text)
    return text.casefold() if lowercase else text


def words(text: str, lowercase: bool = True) -> list[str]:
    """The normalised `\\w+` words of `text` (punctuation and spacing do not count)."""
    return _WORD.findall(normalise(text, lowercase))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on a uint64 array (a new array): spreads every input bit."""
    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def stable_hash64(s: str) -> int:
    """A 64-bit hash of a string that is the same in every process."""
    return int.from_bytes(
        hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
    )


def word_token_hashes(texts: Sequence[str], lowercase: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every word of every text, concatenated; number of words per text).

    The words are those of `words()`, found and hashed with numpy over the UTF-8 bytes of the whole
    batch: per-word Python work would cost more than all the MinHash arithmetic.
    """
    parts = []
    for t in texts:
        if t.isascii():  # NFKC leaves ASCII alone; every ASCII non-word byte already splits words
            parts.append((t.lower() if lowercase else t).encode())
        else:
            parts.append(_NON_WORD.sub(" ", normalise(t, lowercase)).encode("utf-8", "surrogatepass"))
    sizes = np.fromiter((len(p) + 1 for p in parts), dtype=np.int64, count=len(parts))
    data = np.frombuffer(b" ".join(parts) + b" ", dtype=np.uint8)
    is_word = _WORD_BYTE[data]
    edges = np.diff(is_word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    first, end = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    length = (end - first).astype(np.uint64)
    # Hash 8 bytes of every word at a time; only long words take further rounds.
    window = np.lib.stride_tricks.sliding_window_view(np.concatenate([data, np.zeros(8, np.uint8)]), 8)
    tokens = np.zeros(len(first), dtype=np.uint64)
    active, offset = np.arange(len(first)), 0
    while len(active):
        left = (end[active] - first[active]) - offset
        chunk = np.where(left[:, None] > _LANE, window[first[active] + offset], 0).astype(np.uint8)
        tokens[active] = mix64(tokens[active] ^ chunk.view(np.uint64).ravel()) + np.uint64(offset + 1)
        active, offset = active[left > 8], offset + 8
    tokens = mix64(tokens + length * np.uint64(0x9E3779B97F4A7C15))
    text_starts = np.cumsum(sizes) - sizes
    bounds = np.searchsorted(first, np.append(text_starts, len(data)))
    return tokens, np.diff(bounds)


def char_token_hashes(texts: Sequence[str], lowercase: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every character of every text, whitespace runs collapsed to one space; characters per text)."""
    normed = [_SPACE.sub(" ", normalise(t, lowercase)).strip() for t in texts]
    lengths = np.fromiter((len(t) for t in normed), dtype=np.int64, count=len(normed))
    codepoints = np.frombuffer("".join(normed).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return mix64(codepoints.astype(np.uint64) + np.uint64(0x632BE59BD9B4E019)), lengths


def ngram_hashes(
    tokens: np.ndarray, lengths: np.ndarray, n: int, short_as_one: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the n-grams of each text, concatenated, and how many each text has.

    `tokens` holds the token hashes of all texts back to back (`lengths` tokens each). A text with
    fewer than `n` tokens has no n-gram, or with `short_as_one` one n-gram made of all its tokens
    (so that two equal short texts still match). No n-gram spans two texts.
    """
    if not 1 <= n <= len(_POSITION):
        raise ValueError(f"n-gram length must be in 1..{len(_POSITION)}, got {n}")
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    total = int(starts[-1])
    # Every window of n tokens in the concatenation; the ones that cross a text boundary are dropped below.
    width = max(total - n + 1, 0)
    acc = np.zeros(width, dtype=np.uint64)
    for k in range(n):
        acc += tokens[k : k + width] * _POSITION[k]
    counts = np.maximum(lengths - n + 1, 0)
    keep = np.zeros(width, dtype=bool)
    if width:
        # Window start p is valid when p + n <= end of its text: mark [start, start + count) of each text.
        owner_starts = np.repeat(starts[:-1], counts)
        offsets = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        keep[owner_starts + offsets] = True
    grams = acc[keep]
    if short_as_one:
        short = np.flatnonzero((lengths > 0) & (lengths < n))
        if len(short):
            whole = np.zeros(len(short), dtype=np.uint64)
            for k in range(int(lengths[short].max())):
                has = lengths[short] > k
                idx = starts[short[has]] + k
                whole[has] += tokens[idx] * _POSITION[k]
            # Insert each short text's single n-gram at its place, so the output stays in text order.
            at = np.cumsum(counts)[short] - counts[short]
            grams = np.insert(grams, at, whole)
            counts = counts.copy()
            counts[short] = 1
    return mix64(grams), counts
