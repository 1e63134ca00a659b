"""The replicas behind one model: a limiter each, the least busy one gets the next request, and a dead
one rests (given URLs) or is restarted (managed servers)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from mmsynth.generators.openai.errors import ServerError
from mmsynth.generators.openai.limiter import AIMDLimiter
from mmsynth.generators.openai.options import join_url, server_root

log = logging.getLogger(__name__)


@dataclass
class Replica:
    url: str  # base URL, .../v1, no trailing slash
    limiter: AIMDLimiter
    down_until: float = 0.0  # monotonic time; a replica whose connection failed rests until then
    down: bool = False  # managed replicas: down until a restart brings them back

    def __post_init__(self) -> None:
        self.chat_url = join_url(self.url, "chat/completions")  # made once, not per request

    @property
    def root(self) -> str:
        return server_root(self.url)

    @property
    def in_flight(self) -> int:
        return self.limiter.in_flight


class Replicas:
    """`acquire()` waits for a free slot on an up replica and takes it; `release()` gives it back.

    First come, first served: a freed slot is handed to the oldest waiter (taken on its behalf), and a
    new request waits behind the ones already waiting. With wake-and-race instead, a request arriving
    just as a slot freed took it, the woken waiter went back to the end of the line, and the engine's
    oldest chunk waited behind younger ones: its shards, and the chunks after it, stalled.

    pool: a started ServerPool behind the URLs, or None. With a pool a replica whose connection failed
    is marked down and `pool.restart_dead()` runs in a thread (requests wait for it when no replica is
    up); without one it rests for `rest_s` and the others take its requests.
    """

    def __init__(
        self, urls: list[str], initial: int, cap: int, pool: Any = None, rest_s: float = 5.0
    ) -> None:
        self.all = [Replica(u, AIMDLimiter(initial, cap)) for u in urls]
        self.pool = pool
        self.rest_s = rest_s
        self._rr = 0
        # Each waiter's future gets (replica, epoch) with the slot already taken, or None: look again
        # (a restart ended, or failed).
        self._waiters: deque[asyncio.Future] = deque()
        self._restart_task: asyncio.Task | None = None
        self._restart_error: BaseException | None = None

    @property
    def concurrency(self) -> int:
        """Requests in flight the limiters allow now, over all replicas."""
        return sum(r.limiter.limit for r in self.all)

    async def acquire(self) -> tuple[Replica, int]:
        """(replica, epoch) with a slot taken on it; ServerError when a restart failed."""
        while True:
            if self._restart_error is not None:
                raise ServerError(f"a vLLM server died and could not be restarted: {self._restart_error}")
            while self._waiters and self._waiters[0].done():  # cancelled while waiting
                self._waiters.popleft()
            if not self._waiters:  # nobody is ahead in line
                replica = self._pick()
                if replica is not None:
                    return replica, replica.limiter.take()
            restarting = self._restart_task is not None and not self._restart_task.done()
            if self.pool is not None and self._all_down() and not restarting:
                self._restart_task = asyncio.create_task(self._restart())
            got = await self._wait()
            if got is not None:
                return got

    def release(self, replica: Replica, epoch: int, outcome: str) -> None:
        replica.limiter.release(epoch, outcome)
        self._hand_over()

    def failed(self, replica: Replica) -> None:
        """The connection to `replica` failed: rest it, or mark it down and restart it. Call it before
        releasing the slot, so the slot is not handed to a waiter on the dead replica."""
        if self.pool is None:
            replica.down_until = time.monotonic() + self.rest_s
        else:
            replica.down = True
            if self._restart_task is None or self._restart_task.done():
                self._restart_task = asyncio.create_task(self._restart())

    async def close(self) -> None:
        task = self._restart_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _all_down(self) -> bool:
        return all(r.down for r in self.all)

    def _pick(self) -> Replica | None:
        """The replica the next request goes to, or None when none has a free slot (or all are down)."""
        if len(self.all) == 1:  # the usual case, without the lists below
            only = self.all[0]
            # A lone unmanaged replica is tried even while it rests: there is nothing else to try.
            return None if only.down or only.limiter.free <= 0 else only
        now = time.monotonic()
        up = [r for r in self.all if not r.down and r.down_until <= now]
        if not up:
            if self.pool is not None:  # managed: wait for the restart
                return None
            up = [min(self.all, key=lambda r: r.down_until)]  # unmanaged: try the one resting longest
        return self._least_busy(up)

    def _least_busy(self, up: list[Replica]) -> Replica | None:
        if len(up) == 1:
            return up[0] if up[0].limiter.free > 0 else None
        self._rr += 1
        n = len(up)
        free = [up[(self._rr + i) % n] for i in range(n) if up[(self._rr + i) % n].limiter.free > 0]
        # The fewest in flight relative to the limit; ties go round-robin (the rotation above).
        return min(free, key=lambda r: r.in_flight / r.limiter.limit) if free else None

    async def _wait(self) -> tuple[Replica, int] | None:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result() is not None:
                self.release(*fut.result(), "neutral")  # handed a slot and cancelled at once: give it back
            raise
        finally:
            if not fut.done():
                fut.cancel()  # _hand_over skips it

    def _hand_over(self) -> None:
        """Give free slots to the waiters, oldest first."""
        waiters = self._waiters
        while waiters:
            if waiters[0].done():  # cancelled while waiting
                waiters.popleft()
                continue
            replica = self._pick()
            if replica is None:
                return
            waiters.popleft().set_result((replica, replica.limiter.take()))

    def _wake_all(self) -> None:
        """Every waiter looks again (after a restart ended or failed)."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    async def _restart(self) -> None:
        try:
            restarted = await asyncio.to_thread(self.pool.restart_dead)
        except Exception as e:
            self._restart_error = e
            self._wake_all()
            return
        if restarted:
            log.warning("restarted vLLM replica(s) %s", restarted)
        # Replicas marked down whose process lives (a connection blip) are tried again.
        for r in self.all:
            r.down = False
        self._hand_over()
