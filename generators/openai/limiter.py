"""How many requests one server gets at once: slow start, then AIMD (additive increase, halving)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class AIMDLimiter:
    """The concurrency limit of one server; plain arithmetic, no waiting (see replicas.py for that).

    `take()` counts a request as sent and returns the current epoch; `release(epoch, outcome)` counts it
    back. A window is `limit` successes ("ok"). In slow start each window doubles the limit, until the
    first overload or `cap`; after that each window adds one (up to `cap`). "overload" (429, 503, 504, a
    timeout) halves the limit (min 1) and ends slow start, once per epoch: a burst of 429s from
    requests sent together halves it once, not once each. Any other outcome just frees the slot.
    """

    def __init__(self, initial: int, cap: int) -> None:
        if initial < 1 or cap < 1:
            raise ValueError(f"concurrency limits must be >= 1, got initial={initial}, cap={cap}")
        self.cap = cap
        self.limit = min(initial, cap)
        self.in_flight = 0
        self.epoch = 0
        self.slow_start = True
        self._successes = 0

    @property
    def free(self) -> int:
        """Requests that may be sent now."""
        return max(0, self.limit - self.in_flight)

    def take(self) -> int:
        self.in_flight += 1
        return self.epoch

    def release(self, epoch: int, outcome: str) -> None:
        self.in_flight -= 1
        if outcome == "ok":
            self._successes += 1
            if self._successes >= self.limit and self.limit < self.cap:
                self.limit = min(self.cap, self.limit * 2 if self.slow_start else self.limit + 1)
                self._successes = 0
        elif outcome == "overload" and epoch == self.epoch:
            self.limit = max(1, self.limit // 2)
            self.epoch += 1
            self.slow_start = False
            self._successes = 0
            log.info("server overloaded: concurrency halved to %d", self.limit)
