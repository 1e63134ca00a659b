"""The validator contract: a candidate in, a verdict out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mmsynth.prompts.media import ImageRef


@dataclass(frozen=True)
class Candidate:
    """What a validator sees of a record: the task, the prompt text, the model's output and its images.

    `parsed` is the decoded JSON output for structured tasks (None when not structured or not parsable;
    `parse_error` then says why). `seed` holds the seed's plain fields (e.g. a rendered scene's
    description), for grounding checks.
    """

    id: str
    task: str
    text: str
    finish_reason: str
    prompt_text: str = ""
    parsed: Any = None
    parse_error: str | None = None
    output_schema: dict[str, Any] | None = None
    images: tuple[ImageRef, ...] = ()
    seed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """Keep or reject, with a reason (always set on reject) and an optional score."""

    validator: str
    keep: bool
    reason: str | None = None
    score: float | None = None

    @classmethod
    def ok(cls, validator: str, score: float | None = None) -> Verdict:
        return cls(validator, True, None, score)

    @classmethod
    def reject(cls, validator: str, reason: str, score: float | None = None) -> Verdict:
        return cls(validator, False, reason, score)


@runtime_checkable
class Validator(Protocol):
    """Checks a batch of candidates and returns one verdict each, in order.

    Stateful validators (dedup) see in `check` the candidates of this batch in stream order and must
    treat an earlier one in the same batch as already seen; `remember` is then called for each
    candidate the whole stack accepted, and on resume for every accepted record of finished shards,
    so that state after a resume equals state in an uninterrupted run.
    """

    name: str
    # True when `remember` matters: a resume replays finished records only into stateful validators.
    stateful: bool

    def applies_to(self, task: str) -> bool:
        """Whether candidates of `task` are shown to this validator (its `tasks:` scope)."""
        ...

    def check(self, candidates: list[Candidate]) -> list[Verdict]: ...

    def remember(self, candidate: Candidate) -> None: ...

    def close(self) -> None:
        """Free models and connections (llm_judge, clip_score); a later `check` loads them again."""
        ...
