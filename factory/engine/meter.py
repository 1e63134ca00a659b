"""Live counters of one session of a run, per task and per model: what the terminal panel shows and what
stats.json keeps as the last session's rates (`throughput.models`).

The engine adds to them on its event loop; the panel reads them from rich's refresh thread. One lock
makes every read see whole updates, and `snapshot()` hands the reader plain values, so no dict changes
size under it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmsynth.generators.types import Generation
from mmsynth.validators import RECORD_REASON_FIELDS, reason_key


@dataclass(frozen=True)
class TaskRow:
    """One task so far in this session: its finished records and the reason most of its rejects share."""

    name: str
    accepted: int
    rejected: int
    top_reason: str | None
    top_count: int

    @property
    def records(self) -> int:
        return self.accepted + self.rejected


@dataclass(frozen=True)
class ModelRow:
    """One model so far in this session. `in_flight` and `limit` are the backend's own when it keeps them
    (the vllm-server backend: requests on the wire, its limiters' current limit); otherwise requests handed
    to the backend and not answered yet, and the most it takes at once (batch size x batches at once)."""

    name: str
    backend: str
    model: str
    in_flight: int
    limit: int
    sent: int  # requests sent to the backend (cached answers are not sent)
    answered: int
    prompt_tokens: int
    completion_tokens: int
    errors: int  # requests answered with an error, and the requests of a batch whose backend call failed
    retries: int  # the backend's own retries (vllm-server: transient HTTP errors), 0 when it keeps none


@dataclass(frozen=True)
class MeterSnapshot:
    elapsed: float  # seconds since the meter started (after the models loaded)
    tasks: list[TaskRow]
    models: list[ModelRow]


@dataclass
class _Task:
    accepted: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)


class ModelMeter:
    """One model's requests as its dispatcher sees them: it calls `start` before `backend.generate` and
    `finish`, `fail` or `cancel` after."""

    def __init__(self, name: str, backend: Any, lock: threading.Lock) -> None:
        self.name = name
        self.backend = backend
        self._lock = lock
        self.sent = self.answered = self.waiting = 0
        self.prompt_tokens = self.completion_tokens = self.errors = 0

    def start(self, n: int) -> None:
        with self._lock:
            self.sent += n
            self.waiting += n

    def finish(self, gens: Sequence[Generation]) -> None:
        with self._lock:
            self.waiting -= len(gens)
            self.answered += len(gens)
            for g in gens:
                self.prompt_tokens += g.prompt_tokens
                self.completion_tokens += g.completion_tokens
                self.errors += g.error is not None

    def fail(self, n: int) -> None:
        with self._lock:
            self.waiting -= n
            self.errors += n

    def cancel(self, n: int) -> None:
        with self._lock:
            self.waiting -= n

    def row(self) -> ModelRow:
        b = self.backend
        own = getattr(b, "in_flight", None)
        conc = getattr(b, "concurrency", None)
        stats = getattr(b, "stats", None)
        return ModelRow(
            name=self.name,
            backend=str(getattr(b, "name", "?")),
            model=str(getattr(b, "model", "?")),
            in_flight=own if isinstance(own, int) else self.waiting,
            limit=conc
            if isinstance(conc, int)
            else max(1, getattr(b, "batch_size", 1)) * max(1, getattr(b, "max_concurrency", 1)),
            sent=self.sent,
            answered=self.answered,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            errors=self.errors,
            retries=int(stats.get("retries", 0)) if isinstance(stats, dict) else 0,
        )


class RunMeter:
    """Per task and per model counters of this session; `snapshot()` is what a reader sees."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.stopped: float | None = None  # set by `stop()`: the elapsed time stays there
        self._lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}
        self._models: dict[str, ModelMeter] = {}

    def model(self, name: str, backend: Any) -> ModelMeter:
        """The meter of model `name` (made on first call), for its dispatcher."""
        with self._lock:
            if name not in self._models:
                self._models[name] = ModelMeter(name, backend, self._lock)
            return self._models[name]

    def add_records(self, records: Iterable[Any]) -> None:
        """Count finished records (anything with `task`, `accepted` and `reject_reason`)."""
        with self._lock:
            for r in records:
                t = self._tasks.setdefault(r.task, _Task())
                if r.accepted:
                    t.accepted += 1
                else:
                    t.rejected += 1
                    t.reasons[reason_key(r.reject_reason or "unknown", RECORD_REASON_FIELDS)] += 1

    def stop(self) -> None:
        """The session's work is done: rates from here on are over the time it took."""
        self.stopped = time.monotonic()

    def snapshot(self) -> MeterSnapshot:
        with self._lock:
            tasks = []
            for name, t in self._tasks.items():
                top = min(t.reasons.items(), key=lambda kv: (-kv[1], kv[0]), default=(None, 0))
                tasks.append(TaskRow(name, t.accepted, t.rejected, top[0], top[1]))
            models = [m.row() for m in self._models.values()]
        return MeterSnapshot((self.stopped or time.monotonic()) - self.started, tasks, models)

    def model_rates(self) -> dict[str, dict[str, Any]]:
        """stats.json's `throughput.models`: this session's requests, tokens per second, errors, retries."""
        snap = self.snapshot()
        el = snap.elapsed
        return {
            m.name: {
                "requests_sent": m.sent,
                "errors": m.errors,
                "retries": m.retries,
                "prompt_tokens_per_second": round(m.prompt_tokens / el, 3) if el > 0 else None,
                "completion_tokens_per_second": round(m.completion_tokens / el, 3) if el > 0 else None,
            }
            for m in sorted(snap.models, key=lambda m: m.name)
        }
