"""The chunk loop: seeds -> requests -> responses -> records -> verdicts -> shards.

Seeds are cut into chunks of `chunk_size`. A chunk's requests go to the backends as soon as it is
read (up to `lookahead` chunks ahead, so backends never idle at a chunk boundary), but chunks are
finalized strictly in order: write its shards, then its marker. Finished chunks are therefore
always a prefix, which is what makes resume exact.

Tasks with `from` form stages: a chunk's runner awaits stage s, validates it, and sends stage s+1
for the records it accepted, so a whole pipeline (plan -> prompts -> images -> captions -> documents)
finishes inside one chunk. Validation is serialized per stage in chunk order (see Turns).

For backends with a server-side prefix cache (the vLLM ones), each submitted list goes out in cache
order (order.py: grouped by image, then by the text before it); everything else stays in stream order.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mmsynth.factory.dataset.records import Record
from mmsynth.factory.dataset.run_dir import RunDir, write_json_atomic
from mmsynth.factory.dataset.shards import write_chunk
from mmsynth.factory.engine.answers import assemble_records
from mmsynth.factory.engine.cache import ResponseCache
from mmsynth.factory.engine.dispatch import Dispatcher
from mmsynth.factory.engine.documents import assemble_documents
from mmsynth.factory.engine.meter import RunMeter
from mmsynth.factory.engine.order import order_requests
from mmsynth.factory.engine.plan import Plan, TaskPlan, build_request
from mmsynth.factory.engine.stages import derived_seeds, mixture_task
from mmsynth.factory.engine.stats import ChunkStats
from mmsynth.factory.engine.validate import validate_records
from mmsynth.factory.seeds.base import Seed
from mmsynth.generators.types import GenerationRequest
from mmsynth.prompts.limits import fixed_limits


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
    records: list[Record] = field(default_factory=list)
    runner: asyncio.Task | None = None  # runs the chunk's stages up to validated records


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
    meter: RunMeter = field(default_factory=RunMeter)  # per task and per model, for the live panel

    def bump(self, **kw: int) -> None:
        for k, v in kw.items():
            setattr(self, k, getattr(self, k) + v)
        if self.on_change:
            self.on_change(self)


class Turns:
    """Chunk k validates stage s only after chunk k-1 has, so stateful validators (dedup) see every
    task's records in stream order, whatever order the answers come back in."""

    def __init__(self, first: int) -> None:
        self.first = first
        self._done: dict[tuple[int, int], asyncio.Event] = defaultdict(asyncio.Event)

    async def wait(self, chunk: int, stage: int) -> None:
        if chunk > self.first:
            await self._done[(chunk - 1, stage)].wait()
            self._done.pop((chunk - 1, stage), None)

    def done(self, chunk: int, stage: int) -> None:
        self._done[(chunk, stage)].set()


@dataclass
class _Context:
    plan: Plan
    cache: ResponseCache
    dispatchers: dict[str, Dispatcher]
    progress: Progress
    turns: Turns


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
            meter=progress.meter.model(name, b),
        )
        for name, b in plan.backends.items()
    }
    ctx = _Context(plan, cache, dispatchers, progress, Turns(first_chunk))
    pending: list[ChunkWork] = []
    finished = 0
    try:
        for index, chunk_seeds in chunked(seeds, plan.recipe.output.chunk_size, first_chunk):
            pending.append(_start_chunk(ctx, index, chunk_seeds))
            # Let the dispatchers send this chunk before the next one is read and rendered: at the
            # start of a run that is several chunks of rendering, with nothing on the wire meanwhile.
            await asyncio.sleep(0)
            while len(pending) > lookahead or (pending and pending[0].runner.done()):
                await _finish_chunk(plan, run_dir, pending.pop(0), progress)
                finished += 1
            if stop_event.is_set():
                raise Interrupted
        while pending:
            await _finish_chunk(plan, run_dir, pending.pop(0), progress)
            finished += 1
            if stop_event.is_set() and pending:
                raise Interrupted
    except Interrupted:
        for d in dispatchers.values():
            d.stop()
        # Let running batches land in the cache, so the rerun does not ask for them again.
        running = [i.future for w in pending for i in w.items if i.future is not None and not i.future.done()]
        if running:
            await asyncio.wait(running, timeout=600)
        raise
    finally:
        runners = [w.runner for w in pending if w.runner is not None]
        for r in runners:
            r.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        for d in dispatchers.values():
            await d.close()
    return finished


def _start_chunk(ctx: _Context, index: int, seeds: list[Seed]) -> ChunkWork:
    """Make and send the chunk's first-stage requests now (so backends never idle at a chunk boundary);
    the later stages run in the chunk's runner task as their inputs are accepted."""
    plan = ctx.plan
    work = ChunkWork(index, [], time.monotonic())
    work.stats.seeds = len(seeds)
    roots = [t for t in plan.tasks if t.source is None]
    mixture = plan.recipe.mixture
    with fixed_limits():  # the template limits read once for the chunk, not once per render
        for seed in seeds:
            for task in roots:
                if mixture and task.name in mixture and mixture_task(seed.index, mixture) != task.name:
                    continue
                work.items.append(_make_item(plan, seed, task))
    _submit(ctx, work, work.items)
    work.runner = asyncio.create_task(_run_stages(ctx, work))
    return work


def _make_item(plan: Plan, seed: Seed, task: TaskPlan) -> Item:
    item = Item(seed, task)
    if seed.error:
        item.error = f"seed: {seed.error}"
    else:
        try:
            _, item.request = build_request(task, seed.fields, seed.id, plan.recipe.seed)
        except Exception as e:  # a render error is this seed's problem, not the run's
            item.error = f"render: {e}"
    return item


def _submit(ctx: _Context, work: ChunkWork, items: list[Item]) -> None:
    """Answer items from the cache where possible and send the rest to their model's dispatcher."""
    requests = [i for i in items if i.request is not None]
    work.stats.requests += len(requests)
    cached = ctx.cache.get_many(i.request.key for i in requests)
    by_model: dict[str, list[GenerationRequest]] = {}
    hits = 0
    for item in requests:
        if item.request.key in cached:
            item.answer = cached[item.request.key]
            hits += 1
        else:
            by_model.setdefault(item.task.model_name, []).append(item.request)
    work.stats.requests_cached += hits
    futures = {}
    for model_name, reqs in by_model.items():
        dispatcher = ctx.dispatchers[model_name]
        if getattr(dispatcher.backend, "prefix_cache", False):
            # A server with a prefix cache gets each image's requests together (order.py); the items
            # keep stream order, so only the send order changes, never a record.
            reqs = order_requests(reqs)
        futures.update(dispatcher.submit(reqs))
    for item in requests:
        if item.answer is None:
            item.future = futures[item.request.key]
    ctx.progress.bump(requests_total=len(requests), requests_done=hits)


async def _run_stages(ctx: _Context, work: ChunkWork) -> None:
    """Stage by stage: await answers, build records, validate them in stream order, derive the next stage."""
    plan = ctx.plan
    seed_of: dict[str, Seed] = {}  # record id -> the seed it was made from, for deriving the next stage
    for stage in range(plan.stages):
        items = [i for i in work.items if i.task.level == stage]
        waited = time.monotonic()
        for item in items:
            if item.future is not None:
                try:
                    item.answer = await item.future
                except asyncio.CancelledError:
                    raise Interrupted from None
        work.stats.add_time("generate", waited)
        records = []
        for item in items:
            for r in assemble_records(
                item.seed, item.task, item.request, item.answer, item.error, work.stats
            ):
                records.append(r)
                seed_of[r.id] = item.seed
        await ctx.turns.wait(work.index, stage)
        checked = time.monotonic()
        # In a worker thread: validators may block or run a model.
        await asyncio.to_thread(validate_records, plan.validators, records)
        work.stats.add_time("validate", checked)
        ctx.turns.done(work.index, stage)
        work.records.extend(records)
        nxt = [t for t in plan.tasks if t.level == stage + 1]
        if nxt:
            with fixed_limits():
                new = [
                    _make_item(plan, s, t)
                    for t in nxt
                    for r in records
                    if r.task == t.source and r.accepted
                    for s in derived_seeds(t, r, seed_of[r.id])
                ]
            work.items.extend(new)
            _submit(ctx, work, new)
    if plan.recipe.documents:
        stage = plan.stages
        docs = [d for spec in plan.recipe.documents for d in assemble_documents(spec, work.records)]
        await ctx.turns.wait(work.index, stage)
        checked = time.monotonic()
        await asyncio.to_thread(validate_records, plan.validators, docs)
        work.stats.add_time("validate", checked)
        ctx.turns.done(work.index, stage)
        work.records.extend(docs)


async def _finish_chunk(plan: Plan, run_dir: RunDir, work: ChunkWork, progress: Progress) -> None:
    """Write the chunk's shards, then its marker; strictly in chunk order."""
    await work.runner
    records = work.records
    work.stats.count(records, [v.name for v in plan.validators])
    written = time.monotonic()
    shards = write_chunk(run_dir.path, work.index, records, plan.subsets)
    work.stats.add_time("write", written)
    work.stats.seconds = round(time.monotonic() - work.started, 4)
    write_json_atomic(run_dir.chunk_marker(work.index), work.stats.to_dict())
    acc = sum(len(rows) for (_, accepted), rows in shards.items() if accepted)
    progress.meter.add_records(records)
    progress.bump(accepted=acc, rejected=len(records) - acc, chunks_done=1, failed=work.stats.requests_failed)
