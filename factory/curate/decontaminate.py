"""Synthetic training examples checked against an evaluation set before any training (13-gram overlap)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_contamination(
    synthetic: Sequence[Any], eval_examples: Sequence[Any], n: int = 13
) -> tuple[list[int], int]:
    """Indices of synthetic examples sharing a word n-gram with any evaluation text; and the index size.

    Examples are anything with `texts() -> list[str]` (the trainer's Example).
    """
    from mmsynth.validators.dedup.decontam import NgramIndex

    index = NgramIndex(n=n)
    index.add_many([t for ex in eval_examples for t in ex.texts()])
    if not len(index):
        return [], 0
    texts = [" \n ".join(ex.texts()) for ex in synthetic]
    hits = index.hits_many(texts) if texts else []
    return [i for i, h in enumerate(hits) if h > 0], len(index)
