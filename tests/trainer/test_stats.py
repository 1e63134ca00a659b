"""Paired bootstrap intervals: coverage on synthetic data with a known gain, and pairing."""

from __future__ import annotations

import numpy as np
import pytest

from mmsynth.trainer.stats import paired_bootstrap


def test_interval_covers_the_true_gain_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    true_gain, hits, runs = 0.2, 0, 200
    for r in range(runs):
        difficulty = rng.normal(0, 1, 60)  # shared by both arms: what pairing removes
        base = difficulty + rng.normal(0, 0.5, (3, 60))
        treat = difficulty + true_gain + rng.normal(0, 0.5, (3, 60))
        g = paired_bootstrap(treat, base, n_boot=400, seed=r)
        hits += g.lo <= true_gain <= g.hi
    assert 0.88 <= hits / runs <= 0.995


def test_clear_gain_is_significant_and_none_is_not():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, (3, 100))
    up = paired_bootstrap(base + 0.5 + rng.normal(0, 0.1, base.shape), base)
    assert up.lo > 0 and up.significant and up.gain == pytest.approx(0.5, abs=0.05)
    flat = paired_bootstrap(base + rng.normal(0, 0.3, base.shape), base)
    assert flat.lo < 0 < flat.hi and not flat.significant


def test_pairing_narrows_the_interval():
    rng = np.random.default_rng(2)
    difficulty = rng.normal(0, 2, 80)
    base = difficulty + rng.normal(0, 0.2, (3, 80))
    treat = difficulty + 0.1 + rng.normal(0, 0.2, (3, 80))
    paired = paired_bootstrap(treat, base)
    shuffled = paired_bootstrap(treat[:, rng.permutation(80)], base)  # pairing broken
    assert (paired.hi - paired.lo) < (shuffled.hi - shuffled.lo) / 3


def test_rejects_shape_mismatch():
    with pytest.raises(ValueError):
        paired_bootstrap(np.zeros((3, 5)), np.zeros((2, 5)))
