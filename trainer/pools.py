"""Training pools: the baseline (real data) and treatments built from it and the synthetic data.

- `replace` (default, the Data-Juicer Sandbox protocol): the baseline's size, with a fraction of its
  examples swapped for synthetic ones. Same size, so a gain is about quality, not quantity.
- `add`: baseline plus every synthetic example. Larger, so it measures what the extra data buys; every
  arm still trains for the same number of steps.
- `mix`: the baseline's size, filled by kind in given ratios (MM1's captions : interleaved : text), from
  the synthetic data first, then real data of that kind.
Sampling is seeded; pools are lists of examples and a record of what is in them.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from mmsynth.trainer.data import Example

MODES = ("replace", "add", "mix")


@dataclass
class Pool:
    name: str
    examples: list[Example]
    notes: list[str] = field(default_factory=list)

    @property
    def composition(self) -> dict[str, int]:
        """Counts by source and kind, e.g. {"baseline/caption": 80, "synthetic/caption": 80}."""
        return dict(sorted(Counter(f"{e.source}/{e.kind}" for e in self.examples).items()))

    def summary(self) -> dict:
        return {
            "name": self.name,
            "size": len(self.examples),
            "composition": self.composition,
            "notes": self.notes,
        }


def baseline_pool(real: Sequence[Example], size: int | None = None, seed: int = 0) -> Pool:
    """The real data, subsampled to `size` when given."""
    ex = list(real)
    if size is not None and size < len(ex):
        ex = random.Random(seed).sample(ex, size)
    return Pool("baseline", ex)


def add_pool(base: Pool, synthetic: Sequence[Example], name: str = "add") -> Pool:
    return Pool(
        name, [*base.examples, *synthetic], notes=["larger than the baseline: baseline + all synthetic"]
    )


def replace_pool(
    base: Pool, synthetic: Sequence[Example], fraction: float = 0.5, seed: int = 0, name: str | None = None
) -> Pool:
    """Equal size: `fraction` of the baseline's examples replaced by synthetic ones, both drawn at random."""
    if not 0 < fraction <= 1:
        raise ValueError(f"replace fraction must be in (0, 1], got {fraction}")
    rng = random.Random(seed)
    n = len(base.examples)
    k = round(n * fraction)
    notes = []
    if k > len(synthetic):
        notes.append(f"only {len(synthetic)} synthetic examples for {k} slots: replaced {len(synthetic)}")
        k = len(synthetic)
    kept = rng.sample(base.examples, n - k)
    added = rng.sample(list(synthetic), k)
    return Pool(name or f"replace{round(fraction * 100)}", [*kept, *added], notes)


def mix_pool(
    base: Pool, synthetic: Sequence[Example], ratios: dict[str, float], seed: int = 0, name: str = "mix"
) -> Pool:
    """Equal size, kinds in `ratios` (normalised); each kind from synthetic data first, then real data."""
    unknown = set(ratios) - {"caption", "vqa", "text", "interleaved"}
    if unknown or not ratios or min(ratios.values()) < 0 or sum(ratios.values()) <= 0:
        raise ValueError(f"bad mix ratios {ratios}: kinds caption, vqa, interleaved, text; weights >= 0")
    rng = random.Random(seed)
    n = len(base.examples)
    total = sum(ratios.values())
    out: list[Example] = []
    notes = []
    for kind, w in sorted(ratios.items()):
        want = round(n * w / total)
        syn = [e for e in synthetic if e.kind == kind]
        real = [e for e in base.examples if e.kind == kind]
        take = rng.sample(syn, min(want, len(syn)))
        if len(take) < want:
            take += rng.sample(real, min(want - len(take), len(real)))
        if len(take) < want:
            notes.append(f"{kind}: wanted {want}, found {len(take)}")
        out.extend(take)
    rng.shuffle(out)
    return Pool(name, out, notes)


def make_pools(
    real: Sequence[Example],
    synthetic: Sequence[Example],
    modes: Sequence[str] = ("replace",),
    fraction: float = 0.5,
    ratios: dict[str, float] | None = None,
    size: int | None = None,
    seed: int = 0,
) -> list[Pool]:
    """The baseline pool first, then one pool per treatment mode."""
    base = baseline_pool(real, size, seed)
    pools = [base]
    for mode in modes:
        if mode == "replace":
            pools.append(replace_pool(base, synthetic, fraction, seed))
        elif mode == "add":
            pools.append(add_pool(base, synthetic))
        elif mode == "mix":
            pools.append(
                mix_pool(
                    base, synthetic, ratios or {"caption": 0.45, "interleaved": 0.45, "text": 0.10}, seed
                )
            )
        else:
            raise ValueError(f"unknown pool mode {mode!r}; choose from {', '.join(MODES)}")
    return pools
