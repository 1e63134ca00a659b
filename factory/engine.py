"""The chunk loop: seeds -> requests -> responses -> records -> verdicts -> shards.

Seeds are cut into chunks of `chunk_size`. A chunk's requests go to the backends as soon as it is
read (up to `lookahead` chunks ahead, so backends never idle at a chunk boundary), but chunks are
finalized strictly in order: validate, write its shards, then write its marker. Finished chunks are
therefore always a prefix, which is what makes resume exact.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mmsynth.factory.assemble import assemble_records
from mmsynth.factory.cache import ResponseCache
from mmsynth.factory.dispatch import Dispatcher
from mmsynth.factory.plan import Plan, TaskPlan, build_request
from mmsynth.factory.records import Record
from mmsynth.factory.run_dir import RunDir, write_json_atomic
from mmsynth.factory.seeds.base import Seed
from mmsynth.factory.shards import SPLITS, shard_path, write_shard
from mmsynth.factory.stats import ChunkStats, reason_key
from mmsynth.generators.types import GenerationRequest
from mmsynth.validators import ValidatorStats, remember_accepted, run_stack, tally


@dataclass
class Item:
    """One (seed, task) pair on its way through the chunk."""

    seed: Seed
    task: TaskPlan
    request: GenerationRequest | None = None
    error: str | None = None
    answer: Any = None  # (Generation, timestamp) once known
    future: asyncio.Future | None = None


@dataclass
class ChunkWork:
    index: int
    items: list[Item]
    started: float
    stats: ChunkStats = field(default_factory=ChunkStats)


class Interrupted(Exception):
    """Ctrl-C: in-flight work was drained and cached; rerun the same command to resume."""


@dataclass
class Progress:
    """Counters the display reads; the engine only increments them."""

    requests_total: int = 0
    requests_done: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    chunks_done: int = 0
    on_change: Callable[[Progress], None] | None = None

    def bump(self, **kw: int) -> None:
        for k, v in kw.items():
            setattr(self, k, getattr(self, k) + v)
        if self.on_change:
            self.on_change(self)


def chunked(seeds: Iterator[Seed], size: int, first: int) -> Iterator[tuple[int, list[Seed]]]:
    it = iter(seeds)
    for index in itertools.count(first):
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield index, chunk


async def run_engine(
    plan: Plan,
    run_dir: RunDir,
    cache: ResponseCache,
    seeds: Iterator[Seed],
    first_chunk: int,
    progress: Progress,
    stop_event: asyncio.Event,
    lookahead: int = 2,
) -> int:
    """Process chunks from `first_chunk` on; returns the number of chunks finished in this session."""
    dispatchers = {
        name: Dispatcher(
            b,
            cache,
            run_dir.requests_log,
            on_answer=lambda batch, gens: progress.bump(requests_done=len(batch)),
        )
        for name, b in plan.backends.items()
    }
    pending: list[ChunkWork] = []
    finished = 0
    try:
        for index, chunk_seeds in chunked(seeds, plan.recipe.output.chunk_size, first_chunk):
            pending.append(_start_chunk(plan, index, chunk_seeds, cache, dispatchers, progress))
            while len(pending) > lookahead or (pending and _ready(pending[0])):
                await _finish_chunk(plan, run_dir, pending.pop(0), progress, stop_event)
                finished += 1
            if stop_event.is_set():
                raise Interrupted
        while pending:
            await _finish_chunk(plan, run_dir, pending.pop(0), progress, stop_event)
            finished += 1
    except Interrupted:
        for d in dispatchers.values():
            d.stop()
        # Let running batches land in the cache, so the rerun does not ask for them again.
        running = [i.future for w in pending for i in w.items if i.future is not None and not i.future.done()]
        if running:
            await asyncio.wait(running, timeout=600)
        raise
    finally:
        for d in dispatchers.values():
            await d.close()
    return finished


def _ready(work: ChunkWork) -> bool:
    return all(i.future is None or i.future.done() for i in work.items)


def _start_chunk(
    plan: Plan, index: int, seeds: list[Seed], cache: ResponseCache, dispatchers, progress: Progress
) -> ChunkWork:
    work = ChunkWork(index, [], time.monotonic())
    work.stats.seeds = len(seeds)
    for seed in seeds:
        for task in plan.tasks:
            item = Item(seed, task)
            if seed.error:
                item.error = f"seed: {seed.error}"
            else:
                try:
                    _, item.request = build_request(task, seed.fields, seed.id, plan.recipe.seed)
                except Exception as e:  # a render error is this seed's problem, not the run's
                    item.error = f"render: {e}"
            work.items.append(item)
    requests = [i for i in work.items if i.request is not None]
    work.stats.requests = len(requests)
    cached = cache.get_many(i.request.key for i in requests)
    by_model: dict[str, list[GenerationRequest]] = {}
    for item in requests:
        if item.request.key in cached:
            item.answer = cached[item.request.key]
            work.stats.requests_cached += 1
        else:
            by_model.setdefault(item.task.model_name, []).append(item.request)
    futures = {}
    for model_name, reqs in by_model.items():
        futures.update(dispatchers[model_name].submit(reqs))
    for item in requests:
        if item.answer is None:
            item.future = futures[item.request.key]
    progress.bump(requests_total=len(requests), requests_done=work.stats.requests_cached)
    return work


async def _finish_chunk(
    plan: Plan, run_dir: RunDir, work: ChunkWork, progress: Progress, stop_event: asyncio.Event
) -> None:
    for item in work.items:
        if item.future is not None:
            try:
                item.answer = await item.future
            except asyncio.CancelledError:
                raise Interrupted from None
    if stop_event.is_set() and not _ready(work):
        raise Interrupted
    records = [
        r
        for item in work.items
        for r in assemble_records(item.seed, item.task, item.request, item.answer, item.error, work.stats)
    ]
    live = [r for r in records if r.error is None]
    candidates = [r.candidate() for r in live]
    verdict_lists = run_stack(plan.validators, candidates)
    for rec, verdicts in zip(live, verdict_lists, strict=True):
        rec.verdicts = list(verdicts)
    remember_accepted(plan.validators, candidates, verdict_lists)
    _count(plan, work.stats, records, verdict_lists)

    for task in plan.tasks:
        for split in SPLITS:
            rows = [r for r in records if r.task == task.name and r.accepted == (split == "train")]
            if rows:
                write_shard(shard_path(run_dir.path, task.name, split, work.index), rows)
    work.stats.seconds = round(time.monotonic() - work.started, 4)
    write_json_atomic(run_dir.chunk_marker(work.index), work.stats.to_dict())
    acc = sum(r.accepted for r in records)
    progress.bump(accepted=acc, rejected=len(records) - acc, chunks_done=1, failed=work.stats.requests_failed)


def _count(plan: Plan, stats: ChunkStats, records: list[Record], verdict_lists) -> None:
    acc, rej, reasons = Counter(), Counter(), Counter()
    for r in records:
        (acc if r.accepted else rej)[r.task] += 1
        if not r.accepted:
            reasons[reason_key(r.reject_reason or "unknown")] += 1
    stats.accepted, stats.rejected, stats.reasons = dict(acc), dict(rej), dict(reasons)
    per = tally(verdict_lists, {v.name: ValidatorStats(v.name) for v in plan.validators})
    stats.validators = {name: vs.to_dict() for name, vs in per.items()}
