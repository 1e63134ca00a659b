"""Records -> seeds of the next stage: a task with `from` runs on the accepted records of another task.

A derived seed keeps every field of the seed it came from, so a caption task three stages down still
sees the topic the plan was written for. On top come the parent's output (`output`), the image it
made or read (`image`), its id (`parent_id`) and the keys of its parsed JSON output. With `for_each`
the parent fans out: one derived seed per item of a list in its parsed output, with the item's keys,
`item` and `item_index`, and `item_of` (the id of the record whose list it came from, which the
document assembler follows back to the plan).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mmsynth.factory.dataset.records import Record
from mmsynth.factory.engine.plan import TaskPlan
from mmsynth.factory.seeds.base import Seed


def derived_seeds(task: TaskPlan, parent: Record, parent_seed: Seed) -> list[Seed]:
    """The seeds `task` runs on for one accepted record of its source task (none when its list is empty)."""
    fields = dict(parent_seed.fields)
    if isinstance(parent.parsed, Mapping):
        fields.update(parent.parsed)
    fields["output"] = parent.output
    fields["parent_id"] = parent.id
    image = parent.images[0] if parent.images else parent_seed.fields.get("image")
    if image is not None:
        fields["image"] = image
    if task.for_each is None:
        return [Seed(id=parent.id, index=parent_seed.index, fields=fields)]

    items = parent.parsed.get(task.for_each) if isinstance(parent.parsed, Mapping) else None
    if not isinstance(items, Sequence) or isinstance(items, str):
        return []
    seeds = []
    for i, item in enumerate(items):
        if task.where and not (
            isinstance(item, Mapping) and all(item.get(k) == v for k, v in task.where.items())
        ):
            continue
        f = dict(fields)
        if isinstance(item, Mapping):
            f.update(item)
        f.update(item=item, item_index=i, item_of=parent.id)
        seeds.append(Seed(id=f"{parent.id}/{i}", index=parent_seed.index, fields=f))
    return seeds


# The golden-ratio sequence is the most even way to spread a stream over shares without state: the
# first n seeds of any run hit each share within O(log n) of its exact count, and resume needs no memory.
_PHI = (math.sqrt(5) - 1) / 2


def mixture_task(index: int, shares: Mapping[str, float]) -> str:
    """Which root task seed `index` goes to, for a mixture like {captions: 45, plan: 45, text: 10}."""
    u = (index * _PHI) % 1.0
    total = sum(shares.values())
    acc = 0.0
    for name, share in shares.items():
        acc += share / total
        if u < acc:
            return name
    return next(reversed(list(shares)))


def plain_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A seed's fields without images (what a record keeps of its seed)."""
    from mmsynth.prompts.media import ImageRef

    def is_image(v: Any) -> bool:
        if isinstance(v, ImageRef):
            return True
        return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, ImageRef) for x in v)

    return {k: v for k, v in fields.items() if not is_image(v)}
