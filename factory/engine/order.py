"""The order requests go out in: grouped for the server's caches.

A vLLM server admits requests first come, first served, and reuses work only for what it saw
recently: the prefix cache (the KV blocks of a token prefix that an earlier request computed; evicted
least recently used once the blocks are needed), the encoder cache (an image's vision-encoder output)
and the processor cache (an image's decoded and resized pixels). A chunk in stream order interleaves
seeds and tasks (seed 0's tasks, then seed 1's, ...), and a seed source whose rows repeat an image
(several questions per image) spreads that image over the chunk. `cache_order` sends each chunk's
requests grouped instead:

1. by the **first image** (its content hash): every request about one image goes out together, so
   the image is decoded, encoded and prefilled once while it is hot, whichever task asks;
2. within that, by the **prefix text**: the text of the messages before that image (the system prompt
   and anything the template writes before the image); for a text-only request, the text of every
   message before the last one (the system prompt). Requests whose whole token prefix matches go out
   back to back: the second one is prefilled from the first one's KV blocks.

Groups come in the order their first request has in the chunk, and requests keep their chunk order
inside a group, so the order is a pure function of the list (deterministic; the same chunk gives the
same order on every run and every resume) and a chunk with nothing to share keeps its order.

Only the send order changes. Answers are matched to requests by key and records are built, validated
and written in stream order, so request keys, record ids, shards and the response cache are the same
with or without it. The engine applies it for backends that set `prefix_cache = True` (the vLLM server
and offline backends: a server-side cache, and answers that do not depend on the requests sent with
them); in-process batching backends (transformers, diffusers) keep stream order, because there the
batch a request lands in can move floats, and they have no cache to hit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from mmsynth.prompts.messages import ImagePart, RenderedPrompt, TextPart

T = TypeVar("T")

_SEP = "\x00"  # between messages of a prefix: "ab" + "c" and "a" + "bc" are different prefixes


def affinity_key(prompt: RenderedPrompt) -> tuple[str, str]:
    """(sha256 of the prompt's first image, or "" for a text-only prompt; the text before it).

    The text before the image is what the server's prefix cache can share between requests about the
    same image: each message's role and text up to the message holding the image, then that message's
    text parts before it. A text-only prompt's prefix is every message but the last (its system prompt).
    """
    parts: list[str] = []
    for m in prompt.messages:
        before: list[str] = []
        for p in m.parts:
            if isinstance(p, ImagePart):
                parts.append(m.role + ":" + "".join(before))
                return p.image.sha256, _SEP.join(parts)
            if isinstance(p, TextPart):
                before.append(p.text)
        parts.append(m.role + ":" + "".join(before))
    return "", _SEP.join(parts[:-1])


def cache_order(items: Sequence[T], prompt: Callable[[T], RenderedPrompt]) -> list[T]:
    """`items` grouped by first image, then by prefix text (see the module docstring); a permutation.

    `prompt(item)` gives an item's rendered prompt. Stable: groups in the order of their first item,
    items in their original order inside a group.
    """
    first_image: dict[str, int] = {}
    first_prefix: dict[tuple[str, str], int] = {}
    ranked = []
    for i, item in enumerate(items):
        key = affinity_key(prompt(item))
        image_rank = first_image.setdefault(key[0], i)
        prefix_rank = first_prefix.setdefault(key, i)
        ranked.append((image_rank, prefix_rank, i))
    ranked.sort()
    return [items[i] for _, _, i in ranked]


def order_requests(requests: Sequence[T]) -> list[T]:
    """`cache_order` of `GenerationRequest`s (anything with a `.prompt`)."""
    return cache_order(requests, lambda r: r.prompt)
