"""Replicas: a freed slot goes to the oldest waiter, never to a request that arrives later; a waiter
cancelled after it was handed a slot gives the slot back; a failed replica is not handed out."""

from __future__ import annotations

import asyncio

from mmsynth.generators.openai.replicas import Replicas


def test_a_freed_slot_goes_to_the_oldest_waiter_not_to_a_newcomer():
    async def main() -> list[str]:
        reps = Replicas(["http://a/v1"], initial=1, cap=1)
        order: list[str] = []

        async def request(name: str) -> None:
            replica, epoch = await reps.acquire()
            order.append(name)
            await asyncio.sleep(0)
            reps.release(replica, epoch, "neutral")

        first, epoch = await reps.acquire()  # the only slot
        waiters = [asyncio.create_task(request(f"w{i}")) for i in range(3)]
        await asyncio.sleep(0)  # all three wait in line
        # The newcomer is scheduled before the release, so it runs before w0 wakes up: the race the
        # engine's workers run all the time, a slot freeing just as another request arrives.
        late = asyncio.create_task(request("late"))
        reps.release(first, epoch, "neutral")
        await asyncio.gather(*waiters, late)
        return order

    assert asyncio.run(main()) == ["w0", "w1", "w2", "late"]


def test_a_waiter_cancelled_after_the_hand_over_gives_the_slot_back():
    async def main() -> tuple[int, int]:
        reps = Replicas(["http://a/v1"], initial=1, cap=1)
        held, epoch = await reps.acquire()
        doomed = asyncio.create_task(reps.acquire())
        await asyncio.sleep(0)
        reps.release(held, epoch, "neutral")  # handed to `doomed`...
        doomed.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(doomed, return_exceptions=True)
        replica, _ = await asyncio.wait_for(reps.acquire(), 1)  # the slot came back
        return replica.in_flight, len(reps._waiters)

    assert asyncio.run(main()) == (1, 0)


def test_a_failed_replica_is_not_handed_to_the_waiters():
    async def main() -> tuple[bool, str, str]:
        reps = Replicas(["http://a/v1", "http://b/v1"], initial=1, cap=1, rest_s=60)
        (one, e1), (two, e2) = await reps.acquire(), await reps.acquire()  # both replicas full
        waiter = asyncio.create_task(reps.acquire())
        await asyncio.sleep(0)
        reps.failed(one)  # as the backend does: failed first, then the slot is freed
        reps.release(one, e1, "neutral")
        handed_early = waiter.done()
        reps.release(two, e2, "ok")
        replica, _ = await asyncio.wait_for(waiter, 1)
        return handed_early, replica.url, two.url

    handed_early, got, up = asyncio.run(main())
    assert not handed_early  # the resting replica's slot was not handed out
    assert got == up
