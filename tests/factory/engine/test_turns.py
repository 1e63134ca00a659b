"""Turns: chunks validate each stage in chunk order, whatever order their answers come back in.

Fast: no model; each chunk's "answer" is a future this test resolves, in the order it chooses.
"""

from __future__ import annotations

import asyncio

from mmsynth.factory.engine.chunks import Turns
from mmsynth.factory.engine.validate import validate_batch
from mmsynth.validators import Candidate, ExactDedupValidator


async def _chunk(turns: Turns, index: int, stage: int, answer: asyncio.Future, dedup, log: list) -> None:
    """What a chunk's runner does per stage: await its answer, wait its turn, validate, pass the turn on."""
    text = await answer
    await turns.wait(index, stage)
    [verdicts] = await asyncio.to_thread(
        validate_batch, [dedup], [Candidate(f"chunk{index}", "captions", text, "stop")]
    )
    log.append((index, verdicts[-1].keep))
    turns.done(index, stage)


def test_answers_in_reverse_order_still_validate_in_stream_order():
    async def main():
        turns, dedup, log = Turns(first=0), ExactDedupValidator(), []
        loop = asyncio.get_running_loop()
        answers = [loop.create_future() for _ in range(3)]
        runners = [asyncio.create_task(_chunk(turns, k, 0, answers[k], dedup, log)) for k in range(3)]
        for k in (2, 1, 0):  # the last chunk's answer lands first
            answers[k].set_result("A red square.")
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*runners), timeout=10)
        return log

    # The first chunk in stream order is the one dedup keeps; the later copies are the duplicates.
    assert asyncio.run(main()) == [(0, True), (1, False), (2, False)]


def test_a_stage_waits_only_for_the_same_stage_of_the_chunk_before():
    async def main():
        turns, order = Turns(first=0), []

        async def stage(index, s):
            await turns.wait(index, s)
            order.append((index, s))
            turns.done(index, s)

        one_zero = asyncio.create_task(stage(1, 0))
        await asyncio.sleep(0.01)
        assert order == []  # chunk 1 stage 0 waits for chunk 0 stage 0
        await stage(0, 0)
        await asyncio.wait_for(one_zero, timeout=10)
        # Chunk 1 went on to stage 0 without chunk 0's stage 1; its stage 1 waits for that one.
        one_one = asyncio.create_task(stage(1, 1))
        await asyncio.sleep(0.01)
        assert order == [(0, 0), (1, 0)]
        await stage(0, 1)
        await asyncio.wait_for(one_one, timeout=10)
        return order

    assert asyncio.run(main()) == [(0, 0), (1, 0), (0, 1), (1, 1)]


def test_a_resumed_session_starts_at_its_first_chunk_without_waiting():
    async def main():
        turns = Turns(first=5)
        await asyncio.wait_for(turns.wait(5, 0), timeout=1)  # no chunk 4 in this session
        later = asyncio.create_task(turns.wait(6, 0))
        await asyncio.sleep(0.01)
        waiting = not later.done()
        turns.done(5, 0)
        await asyncio.wait_for(later, timeout=10)
        turns.done(6, 0)
        # A turn passed before the next chunk asks for it is not lost.
        await asyncio.wait_for(turns.wait(7, 0), timeout=1)
        return waiting

    assert asyncio.run(main()) is True
