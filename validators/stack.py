"""Running a stack of validators over a batch: short-circuit, task scoping, and what to remember."""

from __future__ import annotations

from collections.abc import Sequence

from mmsynth.validators.types import Candidate, Validator, Verdict


def run_stack(validators: Sequence[Validator], candidates: Sequence[Candidate]) -> list[list[Verdict]]:
    """Verdicts for each candidate, in validator order; a rejected candidate is not shown to later validators.

    Each validator is called once, on the still-alive candidates of its tasks, in stream order. A
    candidate's list ends with its reject if it was rejected; an empty list means no validator applied.
    """
    verdicts: list[list[Verdict]] = [[] for _ in candidates]
    alive = list(range(len(candidates)))
    for validator in validators:
        shown = [i for i in alive if validator.applies_to(candidates[i].task)]
        if not shown:
            continue
        got = validator.check([candidates[i] for i in shown])
        if len(got) != len(shown):
            raise RuntimeError(
                f"validator {validator.name!r} returned {len(got)} verdicts for {len(shown)} candidates"
            )
        dropped = set()
        for i, verdict in zip(shown, got, strict=True):
            verdicts[i].append(verdict)
            if not verdict.keep:
                dropped.add(i)
        alive = [i for i in alive if i not in dropped]
    return verdicts


def is_accepted(verdicts: Sequence[Verdict]) -> bool:
    return all(v.keep for v in verdicts)


def remember_accepted(
    validators: Sequence[Validator],
    candidates: Sequence[Candidate],
    verdict_lists: Sequence[Sequence[Verdict]] | None = None,
) -> None:
    """Call `remember` of each validator that applies, for each accepted candidate, in order.

    With `verdict_lists` None every candidate counts as accepted: that is the resume path, fed the
    accepted records of finished shards, so that it reaches the same state as the live path.
    """
    if verdict_lists is not None and len(verdict_lists) != len(candidates):
        raise ValueError(f"{len(verdict_lists)} verdict lists for {len(candidates)} candidates")
    for k, c in enumerate(candidates):
        if verdict_lists is not None and not is_accepted(verdict_lists[k]):
            continue
        for validator in validators:
            if validator.applies_to(c.task):
                validator.remember(c)
