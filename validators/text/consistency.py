"""Round-trip consistency: does the text recovered from an image still say what the image was made from?

In the text -> image -> caption round trip, the caption a VLM writes for a generated image is compared
with the text the image came from (the idea, or the text-to-image prompt). The score is the F1 of their
content words (lower-cased, stop words and one-letter tokens dropped), a cheap, model-free proxy that
is 1 for the same bag of words and 0 for no word in common. The score is recorded on every verdict, so
the histogram in stats.json shows how far the round trip drifts, whatever the threshold.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

from pydantic import Field

from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.types import Candidate, Verdict

_WORD = re.compile(r"[^\W_]+")
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "with",
        "by",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "into",
        "onto",
        "over",
        "under",
        "near",
        "next",
        "some",
        "two",
        "one",
        "three",
        "image",
        "picture",
        "photo",
        "shows",
        "showing",
        "which",
        "while",
        "who",
        "whose",
    ]
)


def content_words(text: str) -> Counter[str]:
    """The multiset of content words in `text`."""
    words = (w.lower() for w in _WORD.findall(text))
    return Counter(w for w in words if len(w) > 1 and w not in STOP_WORDS)


def word_f1(a: str, b: str) -> float:
    """F1 overlap of the content words of `a` and `b` (0 when either has none)."""
    wa, wb = content_words(a), content_words(b)
    common = sum((wa & wb).values())
    if not common:
        return 0.0
    precision, recall = common / sum(wa.values()), common / sum(wb.values())
    return 2 * precision * recall / (precision + recall)


class CaptionConsistencyConfig(ValidatorConfig):
    type: Literal["caption_consistency"] = Field(
        default="caption_consistency", description="Registry key: 'caption_consistency'."
    )
    reference_field: str = Field(
        default="idea",
        description="Seed field holding the original text (any field of the root seed or of an earlier stage).",
    )
    min_score: float = Field(
        default=0.1, ge=0, le=1, description="Reject when the content-word F1 is below this."
    )


class CaptionConsistencyValidator(ConfiguredValidator[CaptionConsistencyConfig]):
    """Scores each caption against the text its image came from; rejects drift below `min_score`."""

    config_cls = CaptionConsistencyConfig

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        field = self.config.reference_field
        verdicts = []
        for c in candidates:
            reference = c.seed.get(field)
            if not isinstance(reference, str):
                verdicts.append(Verdict.reject(self.name, f"no reference: seed field '{field}' is missing"))
                continue
            score = round(word_f1(c.text, reference), 4)
            if score < self.config.min_score:
                verdicts.append(
                    Verdict.reject(
                        self.name, f"inconsistent: word F1 {score:.2f} < {self.config.min_score}", score
                    )
                )
            else:
                verdicts.append(Verdict.ok(self.name, score))
        return verdicts
