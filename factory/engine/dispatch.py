"""Sends requests to one backend in batches, with bounded concurrency, and caches every answer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from mmsynth.factory.engine.cache import ResponseCache
from mmsynth.generators.types import Backend, Generation, GenerationRequest
from mmsynth.prompts.errors import MmsynthError


class BackendFailure(MmsynthError, RuntimeError):
    """The backend itself failed (model cannot load, server gone): the run stops, finished shards stay."""


class Dispatcher:
    """One per backend. `submit` takes a chunk's uncached requests and returns a future per request.

    Batches never span chunks and are formed in request order, so a resumed run forms the same batches
    as an uninterrupted one (in-process backends seed sampling per batch). Each batch's answers are
    committed to the cache before its futures resolve: an answer a chunk used is always on disk.
    """

    def __init__(
        self,
        backend: Backend,
        cache: ResponseCache,
        log_path: Path | None = None,
        on_answer: Callable[[list[GenerationRequest], list[Generation]], None] | None = None,
    ):
        self.backend = backend
        self.cache = cache
        self.log_path = log_path
        self.on_answer = on_answer
        self.stopping = False
        self._queue: asyncio.Queue[tuple[list[GenerationRequest], list[asyncio.Future]]] = asyncio.Queue()
        self._workers = [asyncio.create_task(self._work()) for _ in range(max(1, backend.max_concurrency))]

    def submit(self, requests: list[GenerationRequest]) -> dict[str, asyncio.Future]:
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future] = {}
        unique: list[GenerationRequest] = []
        for r in requests:  # identical requests (same key) are sent once
            if r.key not in futures:
                futures[r.key] = loop.create_future()
                unique.append(r)
        size = max(1, self.backend.batch_size)
        for i in range(0, len(unique), size):
            batch = unique[i : i + size]
            self._queue.put_nowait((batch, [futures[r.key] for r in batch]))
        return futures

    async def _work(self) -> None:
        while True:
            batch, futures = await self._queue.get()
            if self.stopping:
                for f in futures:
                    f.cancel()
                continue
            self._log("sent", batch)
            try:
                gens = await self.backend.generate(batch)
                if len(gens) != len(batch):
                    raise BackendFailure(
                        f"backend {self.backend.name} returned {len(gens)} answers for {len(batch)} requests"
                    )
            except Exception as e:  # any exception here is the backend's, not a request's
                err = (
                    e
                    if isinstance(e, BackendFailure)
                    else BackendFailure(f"{self.backend.name} ({self.backend.model}): {e}")
                )
                for f in futures:
                    if not f.done():
                        f.set_exception(err)
                continue
            stamp = self.cache.put_many((r.key, g) for r, g in zip(batch, gens, strict=True))
            self._log("answered", batch)
            if self.on_answer:
                self.on_answer(batch, gens)
            for f, g in zip(futures, gens, strict=True):
                if not f.done():
                    f.set_result((g, stamp))

    def _log(self, event: str, batch: list[GenerationRequest]) -> None:
        # One line per batch: enough to answer "which requests went out, and which came back".
        if self.log_path is None:
            return
        line = json.dumps(
            {
                "t": round(time.time(), 3),
                "event": event,
                "backend": self.backend.name,
                "keys": [r.key for r in batch],
            }
        )
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def stop(self) -> None:
        """Stop starting new batches; batches already running finish and are cached."""
        self.stopping = True

    async def close(self) -> None:
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
