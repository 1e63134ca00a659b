"""Records -> interleaved documents: a plan's text segments and its rendered images, in order.

The plan task writes `segments` (`{type: text, text}` and `{type: image, description}`); a task
downstream of it (with `for_each: segments`) turns each image segment into an image. Every record
made from segment i carries `item_of` (the plan record's id) and `item_index` i in its seed fields,
so the assembler finds each slot's image without knowing the stages in between. A document is kept
only when every image slot has an accepted image (and, with `captions`, an accepted caption);
otherwise it is a rejected record that names the first slot that failed and why.
"""

from __future__ import annotations

from collections.abc import Mapping

from mmsynth.factory.dataset.records import Record
from mmsynth.factory.recipe import DocumentSpec
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import stable_hash


def assemble_documents(spec: DocumentSpec, records: list[Record]) -> list[Record]:
    """One document record per accepted plan record of `spec.plan` among `records` (one chunk's)."""
    by_slot: dict[tuple[str, int], list[Record]] = {}
    # Every record made for a slot on the way to its image (prompts, ...), so a missing image can be explained.
    upstream: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        if "item_of" in r.seed:
            key = (r.seed["item_of"], int(r.seed["item_index"]))
            (by_slot if r.task == spec.images else upstream).setdefault(key, []).append(r)
    captions: dict[str, list[Record]] = {}
    if spec.captions:
        for r in records:
            if r.task == spec.captions and r.parent_id is not None:
                captions.setdefault(r.parent_id, []).append(r)
    return [
        _document(spec, plan, by_slot, upstream, captions)
        for plan in records
        if plan.task == spec.plan and plan.accepted
    ]


def _document(
    spec: DocumentSpec,
    plan: Record,
    by_slot: dict[tuple[str, int], list[Record]],
    upstream: dict[tuple[str, int], list[Record]],
    captions: dict[str, list[Record]],
) -> Record:
    segments = plan.parsed.get(spec.segments_field) if isinstance(plan.parsed, Mapping) else None
    texts: list[str | None] = []
    images: list[ImageRef | None] = []
    alts: list[str | None] = []
    error = None
    for i, seg in enumerate(segments or []):
        if not isinstance(seg, Mapping):
            error = error or f"segment {i}: not an object"
            continue
        if seg.get("type") != "image":
            texts.append(str(seg.get("text", "")))
            images.append(None)
            continue
        image, alt, why = _slot(spec, by_slot.get((plan.id, i), []), upstream.get((plan.id, i), []), captions)
        if why is not None:
            error = error or f"slot {i}: {why}"
            continue
        texts.append(None)
        images.append(image)
        alts.append(alt)
    if not segments:
        error = f"plan has no `{spec.segments_field}`"
    title = plan.parsed.get("title") if isinstance(plan.parsed, Mapping) else None
    body = "".join("<image>" if t is None else t + "\n\n" for t in texts).strip()
    return Record(
        id=stable_hash(["document", spec.name, plan.id])[:32],
        task=spec.name,
        seed_id=plan.seed_id,
        seed_index=plan.seed_index,
        seed=plan.seed,
        images=(),  # a document's images are in `doc_images`, aligned with its texts
        system=plan.system,
        prompt=plan.prompt,
        output=body,
        parsed={"title": title, "alt_texts": alts},
        parse_error=None,
        finish_reason=plan.finish_reason,
        prompt_tokens=0,
        completion_tokens=0,
        template_id=plan.template_id,
        template_version=plan.template_version,
        template_hash=plan.template_hash,
        model=plan.model,
        model_revision=plan.model_revision,
        backend=plan.backend,
        sampling=plan.sampling,
        sample_seed=plan.sample_seed,
        sample_index=plan.sample_index,
        request_key=plan.request_key,
        created_at=plan.created_at,
        error=error,
        parent_id=plan.id,
        texts=texts,
        doc_images=images,
    )


def _slot(
    spec: DocumentSpec, candidates: list[Record], upstream: list[Record], captions: dict[str, list[Record]]
) -> tuple[ImageRef | None, str | None, str | None]:
    """(image, alt text, None) for the first accepted image of a slot, or (None, None, why not)."""
    if not candidates:
        rejected = [r for r in upstream if not r.accepted]
        if rejected:
            return None, None, f"{rejected[0].task} rejected ({rejected[0].reject_reason})"
        return None, None, f"no image was made ({spec.images} produced no record for it)"
    accepted = [r for r in candidates if r.accepted and r.images]
    if not accepted:
        return None, None, f"image rejected ({candidates[0].reject_reason})"
    why = None
    for r in accepted:
        if not spec.captions:
            return r.images[0], None, None
        caps = captions.get(r.id, [])
        ok = [c for c in caps if c.accepted]
        if ok:
            return r.images[0], ok[0].output, None
        why = f"caption rejected ({caps[0].reject_reason})" if caps else "image was not captioned"
    return None, None, why
