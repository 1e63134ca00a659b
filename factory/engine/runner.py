"""Runs a recipe into a run folder: claim the folder, load models, run the chunk loop, finish."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsynth.factory.dataset.card import write_card
from mmsynth.factory.dataset.pictures import write_pictures
from mmsynth.factory.dataset.records import candidate_from_row
from mmsynth.factory.dataset.run_dir import RunDir, write_json_atomic
from mmsynth.factory.dataset.shards import read_replay_rows, shard_hashes, shard_path
from mmsynth.factory.engine.cache import ResponseCache
from mmsynth.factory.engine.chunks import Interrupted, Progress, run_engine
from mmsynth.factory.engine.interrupts import draining, handling, write_stderr
from mmsynth.factory.engine.plan import Plan, build_plan, load_backends
from mmsynth.factory.engine.progress import show_progress
from mmsynth.factory.engine.stats import merge_chunks
from mmsynth.factory.recipe import read_recipe
from mmsynth.factory.seeds import count_seeds, iter_seeds
from mmsynth.validators import remember_accepted

if TYPE_CHECKING:
    from mmsynth.factory.executors.ray import RayOptions


@dataclass
class RunResult:
    run_dir: Path
    stats: dict[str, Any]  # the whole run, over every session that worked on the folder
    already_complete: bool = False
    resumed_at: int = 0  # the first chunk this process ran; 0 for a run from the start
    session: dict[str, Any] | None = None  # the same totals for the chunks this process finished


def run_recipe(
    recipe_path: str | Path,
    out: str | Path,
    fresh: bool = False,
    progress: bool = True,
    ray: RayOptions | None = None,
) -> RunResult:
    """Run (or resume) `recipe_path` into `out`. Raises RecipeError/RunDirError before writing anything
    when the recipe or the folder is wrong, Interrupted on Ctrl-C (after draining), BackendFailure when
    a model fails as a whole. `ray`: serve the models from Ray actors (docs/ray.md); the output is the same."""
    with handling():  # Ctrl-C: see factory/engine/interrupts.py
        recipe = read_recipe(recipe_path)  # build_plan reports all of its problems at once
        if ray is None:
            return _run_plan(build_plan(recipe), out, fresh, progress, load_backends)
        from mmsynth.factory.executors.ray import ray_executor, recipe_checks

        plan = build_plan(recipe, [recipe_checks(ray)])  # the Ray checks reported with the others
        with ray_executor(plan, ray) as load:
            return _run_plan(plan, out, fresh, progress, load)


def _run_plan(
    plan: Plan, out: str | Path, fresh: bool, progress: bool, load: Callable[[Plan], None]
) -> RunResult:
    run_dir = RunDir(Path(out).resolve())
    run_dir.open(plan.fingerprint(), plan.describe(), fresh=fresh)  # takes the folder's lock
    try:
        return _run_open(plan, run_dir, progress, load)
    finally:
        run_dir.close()


def _run_open(plan: Plan, run_dir: RunDir, progress: bool, load: Callable[[Plan], None]) -> RunResult:
    recipe = plan.recipe
    if run_dir.complete:
        return RunResult(run_dir.path, merge_chunks(_chunk_infos(run_dir), 0.0), already_complete=True)

    started = time.monotonic()
    first = run_dir.finished_chunks()
    run_dir.discard_unfinished(first)
    cache_dir = Path(recipe.cache.path) if recipe.cache.path else run_dir.state / "cache"
    cache = ResponseCache(cache_dir / "responses.sqlite")
    try:
        load(plan)
        _replay_accepted(plan, run_dir, first)
        chunk_size = recipe.output.chunk_size
        seeds = iter_seeds(recipe.seeds, recipe.source_path.parent, start=first * chunk_size)
        total = count_seeds(recipe.seeds, recipe.source_path.parent)
        counter = Progress()
        with (
            show_progress(
                counter,
                None if total is None else max(total - first * chunk_size, 0),
                len(plan.tasks),
                enabled=progress,
                chunk_size=chunk_size,
                name=recipe.name,
            ),
            _collector_tuned(),
        ):
            try:
                asyncio.run(_run_async(plan, run_dir, cache, seeds, first, counter))
            finally:
                counter.meter.stop()  # the last frame and stats.json's rates: the same elapsed time
    finally:
        cache.close()
        for b in plan.backends.values():
            b.close()
        for v in plan.validators:
            v.close()  # validators with models (llm_judge, clip_score) free them here
    wall = time.monotonic() - started
    infos = _chunk_infos(run_dir)
    stats = merge_chunks(infos, wall)
    # This session's per-model rates (the live panel's numbers) sit with the other last-session timings.
    stats["throughput"]["models"] = counter.meter.model_rates()
    _finish(plan, run_dir, stats)
    return RunResult(run_dir.path, stats, resumed_at=first, session=merge_chunks(infos[first:], wall))


@contextlib.contextmanager
def _collector_tuned():
    """The garbage collector set for the engine, and put back after. Everything alive at the start
    (modules, the plan, models) lives as long as the run: frozen, the full passes skip it (unfrozen,
    they scanned the whole heap a few times per 10,000 requests: a fifth of a fast run's CPU). The
    youngest generation is collected every 50,000 net allocations instead of 700: a request makes and
    drops hundreds of objects, and the frequent passes cost another tenth. Memory stays flat: what a
    request keeps is freed by reference counting, and cycles are still collected."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], 50_000), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


class _Stop(asyncio.Event):
    """The engine's stop event, also set by a plain flag: the signal handler may run while the loop is
    blocked in synchronous code (reading a seed), and the engine must see the stop at its next check
    without waiting for the loop to run the wake-up callback."""

    requested = False

    def is_set(self) -> bool:
        return self.requested or super().is_set()


async def _run_async(plan: Plan, run_dir: RunDir, cache, seeds, first: int, counter: Progress) -> None:
    stop = _Stop()
    loop = asyncio.get_running_loop()

    def on_first() -> None:  # runs in the signal handler: no locks, no print
        stop.requested = True
        with contextlib.suppress(RuntimeError):  # the loop is already closing
            loop.call_soon_threadsafe(stop.set)
        write_stderr(
            "\n[mmsynth] stopping: finishing the requests in flight (Ctrl-C again to quit at once)\n"
        )

    with draining(on_first):
        await run_engine(plan, run_dir, cache, seeds, first, counter, stop)


def _chunk_infos(run_dir: RunDir) -> list[dict[str, Any]]:
    return [run_dir.chunk_info(k) for k in range(run_dir.finished_chunks())]


def _replay_accepted(plan: Plan, run_dir: RunDir, finished: int) -> None:
    """Give stateful validators (dedup) the accepted records of finished chunks, in stream order,
    so their state equals that of an uninterrupted run."""
    stateful = [v for v in plan.validators if v.stateful]
    if not stateful:
        return
    order = {name: i for i, name in enumerate(plan.subsets)}
    for k in range(finished):
        rows = []
        for subset in plan.subsets:
            path = shard_path(run_dir.path, subset, "train", k)
            if path.exists():
                rows.extend(read_replay_rows(path))
        # Live runs remember in (seed, task, sample) order; shards are per task, so restore that order.
        rows.sort(key=lambda r: (r["seed_index"], order[r["task"]], r["sample_index"]))
        remember_accepted(stateful, [candidate_from_row(r) for r in rows])


def _finish(plan: Plan, run_dir: RunDir, stats: dict[str, Any]) -> None:
    recipe = plan.recipe
    write_json_atomic(run_dir.path / "stats.json", stats)
    shutil.copyfile(recipe.source_path, run_dir.path / "recipe.yaml")
    tdir = run_dir.path / "templates"
    tdir.mkdir(exist_ok=True)
    for t in plan.templates:
        shutil.copyfile(t.path, tdir / f"{t.ref}.j2")
    lineage = {
        "recipe": recipe.name,
        "fingerprint": plan.fingerprint(),
        "templates": {t.ref: t.hash for t in plan.templates},
        "models": {
            name: {"model": b.model, "revision": b.revision, "backend": b.name}
            for name, b in plan.backends.items()
        },
    }
    pictures = write_pictures(run_dir.path, plan.subsets, stats)
    write_card(run_dir.path, recipe.name, plan.subsets, stats, lineage, pictures)
    # Written last: its existence means the run completed. "shards": the content hash of every shard,
    # checked by `mmsynth publish` (a new key: readers of the other keys see the same manifest).
    manifest = {"complete": True, "records": stats["records"], "lineage": lineage, "format": 1}
    write_json_atomic(run_dir.manifest, {**manifest, "shards": shard_hashes(run_dir.path)})


__all__ = ["Interrupted", "RunResult", "run_recipe"]
