"""Responses -> records: one record per output, or one rejected record when there is no output."""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Any

from mmsynth.factory.dataset.records import Record, prompt_texts, record_id
from mmsynth.factory.engine.plan import TaskPlan
from mmsynth.factory.engine.stages import plain_fields
from mmsynth.factory.engine.stats import ChunkStats
from mmsynth.factory.seeds.base import Seed
from mmsynth.generators.json_output import parse_json_output
from mmsynth.generators.types import Generation, GenerationRequest
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import stable_hash


def assemble_records(
    seed: Seed,
    task: TaskPlan,
    request: GenerationRequest | None,
    answer: tuple[Generation, float] | None,
    error: str | None,
    stats: ChunkStats,
) -> list[Record]:
    """Records for one (seed, task): n accepted-candidate records, or one failure record with its reason.

    `error` is set when no request could be made (bad seed, render error); `answer` is the backend's
    Generation and the time it was cached (the record's created_at, so a resumed run keeps it).
    """
    common: dict[str, Any] = {
        "task": task.name,
        "seed_id": seed.id,
        "seed_index": seed.index,
        "seed": plain_fields(seed.fields),
        "parent_id": seed.fields.get("parent_id"),
        "template_id": task.template.id,
        "template_version": task.template.version,
        "template_hash": task.template.hash,
        "model": task.backend.model,
        "model_revision": task.backend.revision,
        "backend": task.backend.name,
        "output_schema": task.template.output_schema,
    }
    if request is None or answer is None:
        images = tuple(v for v in seed.fields.values() if isinstance(v, ImageRef))[:1]
        key = stable_hash(["no-request", seed.id, task.name])
        return [_failure(common, key, error or "no request", images=images)]

    gen, stamp = answer
    system, user = prompt_texts(request.prompt)
    common.update(
        images=request.prompt.images,
        system=system,
        prompt=user,
        sampling=request.sampling.to_dict(),
        sample_seed=request.sampling.seed,
        request_key=request.key,
        created_at=_created_at(stamp),
    )
    stats.prompt_tokens += gen.prompt_tokens
    stats.completion_tokens += gen.completion_tokens
    stats.add_model(task.model_name, gen.prompt_tokens, gen.completion_tokens, gen.error is not None)
    if gen.error is not None:
        stats.requests_failed += 1
        return [_failure(common, request.key, f"backend: {gen.error}", prompt_tokens=gen.prompt_tokens)]

    records = []
    structured = task.template.output_schema is not None
    for i, out in enumerate(gen.outputs):
        parsed, parse_error = parse_json_output(out.text) if structured else (None, None)
        fields = dict(common)
        if out.image is not None:
            # A generated image is the record's image; its output text is the prompt that made it.
            fields["images"] = (out.image,)
        records.append(
            Record(
                id=record_id(request.key, i),
                output=out.text,
                parsed=parsed,
                parse_error=parse_error,
                finish_reason=out.finish_reason,
                # The prompt is counted once per request; completion tokens are split over its outputs.
                prompt_tokens=gen.prompt_tokens if i == 0 else 0,
                completion_tokens=_share(gen.completion_tokens, len(gen.outputs), i),
                sample_index=i,
                generation=out.params or None,
                **fields,
            )
        )
    return records


def _failure(common: dict[str, Any], key: str, reason: str, **fields: Any) -> Record:
    base: dict[str, Any] = {
        "images": (),
        "system": "",
        "prompt": "",
        "sampling": {},
        "sample_seed": None,
        "request_key": "",
        "created_at": datetime.now(timezone.utc).isoformat(),
        "prompt_tokens": 0,
    }
    base.update(common)
    base.update(fields)
    return Record(
        id=record_id(key, 0),
        output="",
        parsed=None,
        parse_error=None,
        finish_reason="error",
        completion_tokens=0,
        sample_index=0,
        error=reason,
        **base,
    )


@functools.lru_cache(maxsize=64)
def _created_at(stamp: float) -> str:
    # The answers of one group commit share their stamp: formatted once for all of them.
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat()


def _share(total: int, n: int, i: int) -> int:
    base, rest = divmod(total, max(n, 1))
    return base + (1 if i < rest else 0)
