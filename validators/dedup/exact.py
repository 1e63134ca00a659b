"""Exact deduplication on a normalised output, per task, remembered as 16-byte digests."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Literal

from pydantic import Field

from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.types import Candidate, Verdict

_SPACE = re.compile(r"\s+")


class ExactDedupConfig(ValidatorConfig):
    type: Literal["exact_dedup"] = Field(default="exact_dedup", description="Registry key: 'exact_dedup'.")
    key: Literal["text", "text+image"] = Field(
        default="text",
        description="What makes two records the same: 'text' (task + normalised output) or 'text+image' (also the input images' sha256, so equal captions of different images are kept).",
    )
    unicode_normalize: bool = Field(
        default=True, description="Apply Unicode NFKC normalisation before comparing."
    )
    lowercase: bool = Field(default=True, description="Compare case-insensitively.")
    strip_punctuation: bool = Field(
        default=True, description="Drop Unicode punctuation characters before comparing."
    )
    collapse_whitespace: bool = Field(
        default=True,
        description="Collapse runs of whitespace to one space and trim the ends before comparing.",
    )


class ExactDedupValidator(ConfiguredValidator[ExactDedupConfig]):
    """Rejects a candidate whose key was remembered, or seen earlier in the same `check` batch.

    `check` never changes memory; only `remember` does, so memory is exactly the keys of accepted
    records and a resumed run that remembers the finished shards' accepted records is in the same state.
    The key reads only id, task, text, parsed and image hashes: what a resume replays from the shards.
    Put it last in the stack: then every candidate it keeps is accepted, and verdicts do not depend on
    how the stream was cut into batches.
    """

    config_cls = ExactDedupConfig
    stateful = True

    def __init__(self, config: ExactDedupConfig | None = None) -> None:
        super().__init__(config)
        self._first: dict[bytes, str] = {}  # digest -> id of the first accepted record with that key

    def __len__(self) -> int:
        return len(self._first)

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        in_batch: dict[bytes, str] = {}
        verdicts = []
        for c in candidates:
            digest = self.digest(c)
            first = self._first.get(digest, in_batch.get(digest))
            if first is None:
                in_batch[digest] = c.id
                verdicts.append(Verdict.ok(self.name))
            else:
                verdicts.append(Verdict.reject(self.name, f"duplicate of: {first}"))
        return verdicts

    def remember(self, candidate: Candidate) -> None:
        self._first.setdefault(self.digest(candidate), candidate.id)

    def normalise(self, text: str) -> str:
        """The output text as compared, after the configured normalisations."""
        cfg = self.config
        if cfg.unicode_normalize:
            text = unicodedata.normalize("NFKC", text)
        if cfg.lowercase:
            text = text.casefold()
        if cfg.strip_punctuation:
            text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
        if cfg.collapse_whitespace:
            text = _SPACE.sub(" ", text).strip()
        return text

    def digest(self, c: Candidate) -> bytes:
        """16-byte blake2b of task, normalised output and (key 'text+image') the image hashes in order."""
        text = c.text
        if c.parsed is not None:
            # Same JSON, different fences or spacing: compare the decoded value. Decided on `parsed` alone,
            # not `output_schema`: a candidate replayed from a shard on resume has the one, not the other.
            text = json.dumps(c.parsed, sort_keys=True, ensure_ascii=False)
        parts = [c.task, self.normalise(text)]
        if self.config.key == "text+image":
            parts.extend(img.sha256 for img in c.images)
        # JSON of the parts, not a join: no separator a text could contain; ASCII escapes survive lone surrogates.
        return hashlib.blake2b(json.dumps(parts).encode(), digest_size=16).digest()
