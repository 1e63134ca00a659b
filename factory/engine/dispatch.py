"""Sends requests to one backend in batches, with bounded concurrency, and caches every answer."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from mmsynth.factory.engine.cache import ResponseCache
from mmsynth.factory.engine.meter import ModelMeter
from mmsynth.generators.types import Backend, Generation, GenerationRequest
from mmsynth.prompts.errors import MmsynthError

# Commits come at most this often: answers arriving meanwhile share one transaction (group commit).
# At thousands of answers a second a commit per batch costs more CPU than the requests; 50 commits a
# second at most cost little, and 20 ms more before a chunk sees its answers costs nothing.
_COMMIT_INTERVAL_S = 0.02


class BackendFailure(MmsynthError, RuntimeError):
    """The backend itself failed (model cannot load, server gone): the run stops, finished shards stay."""


class Dispatcher:
    """One per backend. `submit` takes a chunk's uncached requests and returns a future per request.

    Batches never span chunks and are formed in request order, so a resumed run forms the same batches
    as an uninterrupted one (in-process backends seed sampling per batch). Answered batches are
    committed to the cache together (one transaction for all batches answered since the last commit)
    before their futures resolve: an answer a chunk used is always on disk, and a batch is on disk
    whole or not at all. Every failure (the backend's, the cache's, the log's) reaches the futures of
    the batches it hit, so nothing waits forever.
    """

    def __init__(
        self,
        backend: Backend,
        cache: ResponseCache,
        log_path: Path | None = None,
        on_answer: Callable[[list[GenerationRequest], list[Generation]], None] | None = None,
        meter: ModelMeter | None = None,
    ):
        self.backend = backend
        self.cache = cache
        self.on_answer = on_answer
        self.meter = meter  # requests in flight, tokens and errors, for the live panel
        self.stopping = False
        self._log = RequestLog(log_path, backend.name)
        self._queue: asyncio.Queue[tuple[list[GenerationRequest], list[asyncio.Future]]] = asyncio.Queue()
        self._answered: list[tuple[list[GenerationRequest], list[Generation], list[asyncio.Future]]] = []
        self._wake = asyncio.Event()
        self._committer = asyncio.create_task(self._commit_loop())
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
            meter = self.meter
            if meter:
                meter.start(len(batch))
            try:
                self._log.add("sent", batch)
                gens = await self.backend.generate(batch)
                if len(gens) != len(batch):
                    raise BackendFailure(
                        f"backend {self.backend.name} returned {len(gens)} answers for {len(batch)} requests"
                    )
            except asyncio.CancelledError:
                if meter:
                    meter.cancel(len(batch))
                for f in futures:
                    f.cancel()
                raise
            except Exception as e:  # any exception here is the backend's, not a request's
                if meter:
                    meter.fail(len(batch))
                _fail(futures, self._failure(e))
                continue
            if meter:
                meter.finish(gens)
            self._answered.append((batch, gens, futures))
            self._wake.set()

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._commit()
            await asyncio.sleep(_COMMIT_INTERVAL_S)

    def _commit(self) -> None:
        """Store every answered batch in one transaction, then resolve their futures."""
        group, self._answered = self._answered, []
        if not group:
            return
        try:
            stamp = self.cache.put_many(
                (r.key, g) for batch, gens, _ in group for r, g in zip(batch, gens, strict=True)
            )
            for batch, _, _ in group:
                self._log.add("answered", batch)
            self._log.flush()
            if self.on_answer:
                for batch, gens, _ in group:
                    self.on_answer(batch, gens)
        except Exception as e:  # disk full, a closed database, a failing callback: the run ends cleanly
            err = BackendFailure(
                f"cannot store the answers of {self.backend.name} ({self.backend.model}): {e}"
            )
            for _, _, futures in group:
                _fail(futures, err)
            return
        for _, gens, futures in group:
            for f, g in zip(futures, gens, strict=True):
                if not f.done():
                    f.set_result((g, stamp))

    def _failure(self, e: Exception) -> BackendFailure:
        if isinstance(e, BackendFailure):
            return e
        return BackendFailure(f"{self.backend.name} ({self.backend.model}): {e}")

    def stop(self) -> None:
        """Stop starting new batches; batches already running finish and are cached."""
        self.stopping = True

    async def close(self) -> None:
        """Cancel the workers, commit what was answered, close the log."""
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._committer.cancel()
        await asyncio.gather(self._committer, return_exceptions=True)
        self._commit()
        self._log.close()


def _fail(futures: list[asyncio.Future], err: BaseException) -> None:
    for f in futures:
        if not f.done():
            f.set_exception(err)
            # The first awaiter reports it; the others of a failed run are never awaited, and asyncio
            # would print "Future exception was never retrieved" for each of them.
            f.exception()


_EVENTS = ("sent", "answered")
_KEYS = json.JSONEncoder()  # json.dumps's defaults, built once


class RequestLog:
    """requests.jsonl: one line per batch sent and per batch answered, written at each commit.

    Lines wait in memory and go out in one write() each flush, so a killed run never leaves half a
    line; an "answered" line is written only after its batch is in the cache.
    """

    def __init__(self, path: Path | None, backend: str) -> None:
        self.path = path
        self.backend = backend
        self._lines: list[str] = []
        self._fd: int | None = None
        # json.dumps's own layout, with the parts that never change encoded once: two lines per request
        # made with json.dumps cost more than the rest of the log's work.
        self._middle = {e: f', "event": "{e}", "backend": {json.dumps(backend)}, "keys": ' for e in _EVENTS}

    def add(self, event: str, batch: list[GenerationRequest]) -> None:
        if self.path is None:
            return
        keys = _KEYS.encode([r.key for r in batch])
        self._lines.append(f'{{"t": {round(time.time(), 3)!r}{self._middle[event]}{keys}}}\n')

    def flush(self) -> None:
        if not self._lines:
            return
        data = "".join(self._lines).encode()
        self._lines = []  # on a failure too: the caller reports it, and the lines never pile up
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        while data:
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
