"""The per-server limiter: slow start doubles per window, an overload halves once per burst and ends
slow start, then one more per window; never below 1 nor above the cap."""

from __future__ import annotations

import pytest

from mmsynth.generators.openai.limiter import AIMDLimiter


def window(lim: AIMDLimiter, outcome: str = "ok") -> None:
    """`limit` requests sent together, all answered with `outcome`."""
    epochs = [lim.take() for _ in range(lim.limit)]
    for e in epochs:
        lim.release(e, outcome)


def test_slow_start_doubles_per_window_up_to_the_cap():
    lim = AIMDLimiter(initial=8, cap=100)
    seen = [lim.limit]
    for _ in range(5):
        window(lim)
        seen.append(lim.limit)
    assert seen == [8, 16, 32, 64, 100, 100]
    assert lim.slow_start and lim.in_flight == 0


def test_an_overload_halves_once_per_burst_and_ends_slow_start():
    lim = AIMDLimiter(initial=8, cap=512)
    window(lim)
    assert lim.limit == 16
    epochs = [lim.take() for _ in range(6)]
    for e in epochs:  # six 429s of requests sent together: one halving
        lim.release(e, "overload")
    assert (lim.limit, lim.slow_start) == (8, False)
    window(lim)
    assert lim.limit == 9  # additive now
    window(lim)
    assert lim.limit == 10


def test_never_below_one():
    lim = AIMDLimiter(initial=2, cap=8)
    for _ in range(4):
        lim.release(lim.take(), "overload")
    assert lim.limit == 1
    assert lim.free == 1


def test_other_outcomes_only_free_the_slot():
    lim = AIMDLimiter(initial=4, cap=8)
    e = lim.take()
    assert lim.free == 3
    lim.release(e, "neutral")
    assert (lim.limit, lim.free, lim.epoch) == (4, 4, 0)


def test_initial_above_the_cap_is_the_cap_and_zero_is_refused():
    assert AIMDLimiter(initial=64, cap=16).limit == 16
    with pytest.raises(ValueError, match="must be >= 1"):
        AIMDLimiter(initial=0, cap=4)
