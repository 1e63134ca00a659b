"""The batching loop that in-process backends share: prepare each request, group compatible ones, run
each group once, and answer in request order."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from mmsynth.generators.types import Generation, GenerationRequest


def answer_in_groups(
    requests: Sequence[GenerationRequest],
    prepare: Callable[[int, GenerationRequest], Any],
    group_key: Callable[[GenerationRequest, Any], Hashable],
    run_group: Callable[[list[Any]], list[Generation]],
    batch_size: int | None = None,
) -> list[Generation]:
    """One Generation per request, in order.

    `prepare(i, request)` returns a job (with an `index` attribute: i) or, when the request cannot run
    (an undecodable image, a bad setting), the Generation that answers it. Jobs with equal
    `group_key` run together through `run_group`, in slices of `batch_size` when given.
    """
    results: list[Generation | None] = [None] * len(requests)
    groups: dict[Hashable, list[Any]] = {}
    for i, req in enumerate(requests):
        job = prepare(i, req)
        if isinstance(job, Generation):
            results[i] = job
        else:
            groups.setdefault(group_key(req, job), []).append(job)
    for jobs in groups.values():
        step = batch_size or len(jobs)
        for start in range(0, len(jobs), step):
            chunk = jobs[start : start + step]
            for job, gen in zip(chunk, run_group(chunk), strict=True):
                results[job.index] = gen
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]
