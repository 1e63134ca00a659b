"""The random seed of the fault-injection tests: MMSYNTH_FAULT_SEED replays a failure exactly."""

from __future__ import annotations

import os
import random


def fault_rng(test_name: str) -> random.Random:
    """A Random for one test. The seed is printed, so a failing test's output says how to replay it."""
    raw = os.environ.get("MMSYNTH_FAULT_SEED")
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    print(f"{test_name}: MMSYNTH_FAULT_SEED={seed} replays this test")
    return random.Random(seed)
