"""Validating a batch: the one path by which `mmsynth run`, `mmsynth validate` and the studio get verdicts.

A batch goes through the stack in stream order (`run_stack`), then, in a run, its accepted candidates
are remembered by the stateful validators (dedup), so the next batch is checked against them. The studio
judges each preview as the first batch of a run: it does not remember, so previews do not see each other.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmsynth.factory.dataset.records import Record
from mmsynth.validators import Candidate, Validator, Verdict, remember_accepted, run_stack


def validate_batch(
    validators: Sequence[Validator], candidates: Sequence[Candidate], *, remember: bool = True
) -> list[list[Verdict]]:
    """Each candidate's verdicts, in validator order; with `remember`, the accepted ones are remembered after."""
    verdict_lists = run_stack(validators, candidates)
    if remember:
        remember_accepted(validators, candidates, verdict_lists)
    return verdict_lists


def validate_records(
    validators: Sequence[Validator], records: Sequence[Record], *, remember: bool = True
) -> None:
    """Set `verdicts` on every record that has an output; failed records (`error` set) are not shown."""
    live = [r for r in records if r.error is None]
    verdict_lists = validate_batch(validators, [r.candidate() for r in live], remember=remember)
    for record, verdicts in zip(live, verdict_lists, strict=True):
        record.verdicts = list(verdicts)


def close_validators(validators: Sequence[Validator]) -> None:
    """Free what validators hold (llm_judge's and clip_score's models); each is closed even if one fails."""
    errors = []
    for v in validators:
        try:
            v.close()
        except Exception as e:  # close the others first; the first failure is raised after
            errors.append(e)
    if errors:
        raise errors[0]
