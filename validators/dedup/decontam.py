"""Decontamination: reject records that share word n-grams or near-identical images with an evaluation set.

Each evaluation set named in the recipe is read once, when the validator is built: its text fields
become an `NgramIndex` of normalised lower-case word n-grams (13 by default), its images 64-bit
perceptual hashes. A candidate is contaminated when its output (and, by default, its prompt) shares
at least `min_hits` n-grams with a set, or one of its images is within `image_max_distance` bits of
an image of the set.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmsynth.prompts import rows
from mmsynth.prompts.media import ImageRef
from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.dedup.phash import phash
from mmsynth.validators.dedup.shingles import ngram_hashes, word_token_hashes
from mmsynth.validators.types import Candidate, Verdict


class NgramIndex:
    """A set of word n-grams (normalised, lower-case `\\w+` words), kept as a sorted uint64 array.

    8 bytes per distinct n-gram. `add` only queues; the queue is merged on the next query.
    """

    def __init__(self, n: int = 13) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self._grams = np.zeros(0, dtype=np.uint64)
        self._queued: list[np.ndarray] = []

    def add(self, text: str) -> None:
        """Add every n-gram of `text` (a text with fewer than n words adds none)."""
        self.add_many([text])

    def add_many(self, texts: Sequence[str]) -> None:
        """`add` for many texts, hashed in one vectorised pass."""
        grams, _ = ngram_hashes(*word_token_hashes(texts), self.n)
        if len(grams):
            self._queued.append(grams)

    def hits(self, text: str) -> int:
        """How many distinct n-grams of `text` are in the index."""
        return int(self.hits_many([text])[0])

    def hits_many(self, texts: Sequence[str]) -> np.ndarray:
        """`hits` for each text (int64 array)."""
        self._merge()
        grams, counts = ngram_hashes(*word_token_hashes(texts), self.n)
        out = np.zeros(len(texts), dtype=np.int64)
        if not len(grams) or not len(self._grams):
            return out
        owner = np.repeat(np.arange(len(texts)), counts)
        # Distinct (text, n-gram) pairs: a phrase repeated inside one text counts once.
        pairs = np.unique(np.stack([owner.astype(np.uint64), grams], axis=1), axis=0)
        pos = np.minimum(np.searchsorted(self._grams, pairs[:, 1]), len(self._grams) - 1)
        found = self._grams[pos] == pairs[:, 1]
        np.add.at(out, pairs[found, 0].astype(np.int64), 1)
        return out

    def __len__(self) -> int:
        self._merge()
        return len(self._grams)

    def _merge(self) -> None:
        if self._queued:
            self._grams = np.unique(np.concatenate([self._grams, *self._queued]))
            self._queued = []


class EvalSetSpec(BaseModel):
    """One evaluation set to keep out of the data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Benchmark name, used in the reject reason.")
    path: str = Field(
        min_length=1,
        description="A JSONL file, a Parquet file or folder of Parquet files, or a `datasets` folder (save_to_disk, or a local dataset folder load_dataset reads); every split is read. Relative to the working directory.",
    )
    text_fields: list[str] = Field(
        default_factory=list,
        description="Columns whose text is indexed (strings, or lists/dicts of strings, e.g. answer choices).",
    )
    image_field: str | None = Field(
        default=None,
        description="Column holding the images (a `datasets` Image, {bytes, path}, raw bytes or a file path relative to the set); null: no image check.",
    )

    @model_validator(mode="after")
    def _something_to_index(self) -> EvalSetSpec:
        if not self.text_fields and self.image_field is None:
            raise ValueError(f"eval set {self.name!r}: give `text_fields`, `image_field` or both")
        return self


class DecontaminationConfig(ValidatorConfig):
    type: Literal["decontamination"] = Field(
        default="decontamination", description="Registry key: 'decontamination'."
    )
    evals: list[EvalSetSpec] = Field(
        default_factory=list,
        description="Evaluation sets, each {name, path, text_fields, image_field}; an empty list keeps everything.",
    )
    ngram: int = Field(default=13, ge=1, le=64, description="Word n-gram length.")
    min_hits: int = Field(
        default=1, ge=1, description="Shared n-grams with one set at which a record is contaminated."
    )
    check: list[Literal["output", "prompt"]] = Field(
        default_factory=lambda: ["output", "prompt"],
        min_length=1,
        description="Texts of the record to check: the model's output, the prompt text, or both (the prompt may carry a benchmark question from the seeds).",
    )
    image_max_distance: int = Field(
        default=4,
        ge=0,
        le=32,
        description="Largest pHash Hamming distance (of 64 bits) at which a record image counts as an eval image.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> DecontaminationConfig:
        names = [e.name for e in self.evals]
        if len(set(names)) != len(names):
            raise ValueError(f"eval set names must be distinct, got {names}")
        return self


class _EvalSet:
    def __init__(self, name: str, ngrams: NgramIndex, phashes: np.ndarray) -> None:
        self.name, self.ngrams, self.phashes = name, ngrams, phashes


class DecontaminationValidator(ConfiguredValidator[DecontaminationConfig]):
    """Rejects records that overlap an evaluation set: `contaminated: <name> (<k> shared 13-grams)` or
    `contaminated: <name> (image pHash distance <d>)`. Eval sets are loaded when it is built; a
    missing or unreadable set is a ValueError then."""

    config_cls = DecontaminationConfig

    def __init__(self, config: DecontaminationConfig | None = None) -> None:
        super().__init__(config)
        self.sets = [self._load(spec) for spec in self.config.evals]

    def _load(self, spec: EvalSetSpec) -> _EvalSet:
        index = NgramIndex(self.config.ngram)
        hashes: list[int] = []
        texts: list[str] = []
        try:
            for row, base in iter_rows(
                Path(spec.path), [*spec.text_fields, *filter(None, [spec.image_field])]
            ):
                texts.extend(t for f in spec.text_fields for t in _strings(row.get(f)))
                if len(texts) >= 4096:
                    index.add_many(texts)
                    texts = []
                if spec.image_field is not None:
                    hashes.extend(phash(img) for img in _images(row.get(spec.image_field), base))
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{self.name}: cannot read eval set {spec.name!r} at {spec.path}: {e}") from e
        index.add_many(texts)
        return _EvalSet(spec.name, index, np.array(hashes, dtype=np.uint64))

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        if not self.sets:
            return [Verdict.ok(self.name) for _ in candidates]
        texts = [self._text_of(c) for c in candidates]
        hits = np.stack([s.ngrams.hits_many(texts) for s in self.sets], axis=1)  # candidates x sets
        verdicts = []
        for i, c in enumerate(candidates):
            best = int(np.argmax(hits[i]))
            if hits[i, best] >= self.config.min_hits:
                k = int(hits[i, best])
                reason = f"contaminated: {self.sets[best].name} ({k} shared {self.config.ngram}-grams)"
                verdicts.append(Verdict.reject(self.name, reason, score=float(k)))
                continue
            image_hit = self._image_hit(c)
            if image_hit is not None:
                name, d = image_hit
                verdicts.append(Verdict.reject(self.name, f"contaminated: {name} (image pHash distance {d})"))
                continue
            verdicts.append(Verdict.ok(self.name))
        return verdicts

    def _text_of(self, c: Candidate) -> str:
        # Joined by a newline: an n-gram may not run from the prompt into the output, and \n splits words.
        parts = {"output": c.text, "prompt": c.prompt_text}
        return "\n".join(parts[k] for k in self.config.check if parts[k])

    def _image_hit(self, c: Candidate) -> tuple[str, int] | None:
        if not c.images or not any(len(s.phashes) for s in self.sets):
            return None
        hashes = [phash(img.to_pil()) for img in c.images]
        for s in self.sets:
            if not len(s.phashes):
                continue
            for h in hashes:
                d = int(_popcount(s.phashes ^ np.uint64(h)).min())
                if d <= self.config.image_max_distance:
                    return s.name, d
        return None


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x) if hasattr(np, "bitwise_count") else _popcount_bytes(x)


def _popcount_bytes(x: np.ndarray) -> np.ndarray:
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8).reshape(-1, 8)].sum(axis=1)


# -- reading eval sets ---------------------------------------------------------------------------


def iter_rows(path: Path, columns: list[str]) -> Iterator[tuple[dict[str, Any], Path]]:
    """(row, folder that relative image paths resolve against) for every row of every split at `path`,
    read by the one row reader (mmsynth.prompts.rows); a local folder it has no layout for goes to
    `datasets.load_dataset`, a missing path is an error (an eval set is never fetched from the Hub)."""
    if not path.exists():
        raise ValueError("no such file or folder")
    for row, part in rows.iter_rows(path, columns=columns, hub=True):
        yield row, part.base_dir


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _images(value: Any, base: Path) -> Iterator[Any]:
    """PIL images of an eval set's image cell (see `ImageRef.from_cell`), or of a list of cells."""
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _images(v, base)
        return
    image = ImageRef.from_cell(value, base)
    if image is not None:
        yield image.to_pil()
