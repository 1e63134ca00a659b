"""Pool construction: sizes, shares, seeding."""

from __future__ import annotations

import pytest

from mmsynth.trainer.data import Example
from mmsynth.trainer.pools import add_pool, baseline_pool, make_pools, mix_pool, replace_pool


def exs(n, kind="caption", source="baseline"):
    return [
        Example(id=f"{source}-{kind}-{i}", kind=kind, prompt="p", target=f"t{i}", source=source)
        for i in range(n)
    ]


def test_replace_keeps_the_size_and_swaps_the_fraction():
    base = baseline_pool(exs(40))
    pool = replace_pool(base, exs(100, source="synthetic"), fraction=0.25, seed=1)
    assert len(pool.examples) == 40
    assert pool.composition == {"baseline/caption": 30, "synthetic/caption": 10}
    assert replace_pool(base, exs(100, source="synthetic"), 0.25, seed=1).examples == pool.examples  # seeded
    assert replace_pool(base, exs(100, source="synthetic"), 0.25, seed=2).examples != pool.examples


def test_replace_with_too_little_synthetic_says_so():
    pool = replace_pool(baseline_pool(exs(40)), exs(5, source="synthetic"), fraction=0.5)
    assert pool.composition == {"baseline/caption": 35, "synthetic/caption": 5}
    assert pool.notes and "only 5" in pool.notes[0]


def test_add_and_default_pools():
    pools = make_pools(exs(20), exs(30, source="synthetic"), modes=("replace", "add"), size=10)
    assert [p.name for p in pools] == ["baseline", "replace50", "add"]
    assert [len(p.examples) for p in pools] == [10, 10, 40]
    assert add_pool(pools[0], []).examples == pools[0].examples


def test_mix_by_ratio_equal_size():
    syn = exs(50, "caption", "synthetic") + exs(50, "interleaved", "synthetic") + exs(3, "text", "synthetic")
    base = baseline_pool(exs(40) + exs(20, "text"))
    pool = mix_pool(base, syn, {"caption": 45, "interleaved": 45, "text": 10}, seed=0)
    assert len(pool.examples) == 60
    comp = pool.composition
    assert comp["synthetic/caption"] == 27 and comp["synthetic/interleaved"] == 27
    assert comp["synthetic/text"] == 3 and comp["baseline/text"] == 3  # topped up from real text


@pytest.mark.parametrize("bad", [{"pictures": 1}, {}, {"caption": -1}])
def test_mix_rejects_bad_ratios(bad):
    with pytest.raises(ValueError):
        mix_pool(baseline_pool(exs(4)), exs(4), bad)


def test_unknown_mode_rejected():
    with pytest.raises(ValueError, match="unknown pool mode"):
        make_pools(exs(4), exs(4), modes=("swap",))
