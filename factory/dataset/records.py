"""The factory's record: one model output (or one failure) with its full lineage."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import RenderedPrompt, TextPart, stable_hash
from mmsynth.validators.text.schema import parse_json_output
from mmsynth.validators.types import Candidate, Verdict


@dataclass
class Record:
    """One row of the output dataset. Accepted and rejected records have the same columns."""

    id: str
    task: str
    seed_id: str
    seed_index: int
    seed: dict[str, Any]  # the seed's plain (non-image) fields
    images: tuple[ImageRef, ...]
    system: str
    prompt: str  # the user message, images shown as <image>
    output: str
    parsed: Any
    parse_error: str | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    template_id: str
    template_version: int
    template_hash: str
    model: str
    model_revision: str
    backend: str
    sampling: dict[str, Any]
    sample_seed: int | None
    sample_index: int
    request_key: str
    created_at: str
    output_schema: dict[str, Any] | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    error: str | None = None  # set when no model output exists (bad seed, render error, backend refusal)
    parent_id: str | None = None  # the record this one was made from (tasks with `from`, documents)
    generation: dict[str, Any] | None = None  # how a generated image was made: seed, steps, guidance, size...
    # Interleaved documents only: texts and images aligned by position, one of the two None at each (OBELICS).
    texts: list[str | None] | None = None
    doc_images: list[ImageRef | None] | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None and all(v.keep for v in self.verdicts)

    @property
    def reject_reason(self) -> str | None:
        if self.error is not None:
            return self.error
        for v in self.verdicts:
            if not v.keep:
                return f"{v.validator}: {v.reason}"
        return None

    def candidate(self) -> Candidate:
        return make_candidate(
            id=self.id,
            task=self.task,
            text=self.output,
            finish_reason=self.finish_reason,
            prompt=self.prompt,
            parsed=self.parsed,
            parse_error=self.parse_error,
            output_schema=self.output_schema,
            images=self.images,
            seed=self.seed,
            texts=self.texts,
            doc_images=self.doc_images,
        )

    def to_row(self) -> dict[str, Any]:
        """The Parquet row; see shards.FEATURES for the column types."""
        first = self.images[0] if self.images else None
        return {
            "id": self.id,
            "task": self.task,
            "image": {"bytes": first.data, "path": None} if first else None,
            "image_sha256": [img.sha256 for img in self.images],
            "system": self.system,
            "prompt": self.prompt,
            "output": self.output,
            "parsed": None if self.parsed is None else json.dumps(self.parsed, ensure_ascii=False),
            "accepted": self.accepted,
            "reject_reason": self.reject_reason,
            "verdicts": [
                {"validator": v.validator, "keep": v.keep, "reason": v.reason, "score": v.score}
                for v in self.verdicts
            ],
            "seed_id": self.seed_id,
            "seed_index": self.seed_index,
            "seed": json.dumps(self.seed, ensure_ascii=False, sort_keys=True, default=str),
            "template_id": self.template_id,
            "template_version": self.template_version,
            "template_hash": self.template_hash,
            "model": self.model,
            "model_revision": self.model_revision,
            "backend": self.backend,
            "sampling": json.dumps(self.sampling, sort_keys=True),
            "sample_seed": self.sample_seed,
            "sample_index": self.sample_index,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "request_key": self.request_key,
            "created_at": self.created_at,
            "parent_id": self.parent_id,
            "generation": None if self.generation is None else json.dumps(self.generation, sort_keys=True),
            "texts": self.texts or [],
            "images": [
                None if img is None else {"bytes": img.data, "path": None} for img in self.doc_images or []
            ],
        }


def record_id(request_key: str, sample_index: int) -> str:
    return stable_hash([request_key, sample_index])[:32]


def prompt_texts(prompt: RenderedPrompt) -> tuple[str, str]:
    """(system text, user text with <image> where each image sits)."""
    system, user = "", []
    for m in prompt.messages:
        if m.role == "system":
            system = m.text
        elif m.role == "user":
            user.extend(p.text if isinstance(p, TextPart) else "<image>" for p in m.parts)
    return system, "".join(user)


def make_candidate(
    *,
    id: str,
    task: str,
    text: str,
    finish_reason: str = "stop",
    prompt: str = "",
    parsed: Any = None,
    parse_error: str | None = None,
    output_schema: dict[str, Any] | None = None,
    images: Sequence[ImageRef] = (),
    seed: dict[str, Any] | None = None,
    texts: Sequence[str | None] | None = None,
    doc_images: Sequence[ImageRef | None] | None = None,
) -> Candidate:
    """What validators see of a record, live or read back from a row: the one place that decides it.

    A document (`texts` set) shows its texts and image hashes aligned by position, as `parsed`
    (`{title, texts, images}`), and its images in order.
    """
    if texts is not None:
        title = parsed.get("title") if isinstance(parsed, dict) else None
        shown = list(doc_images or [])
        parsed = {
            "title": title,
            "texts": list(texts),
            "images": [None if img is None else img.sha256 for img in shown],
        }
        if doc_images is not None:
            images = [img for img in shown if img is not None]
    return Candidate(
        id=id,
        task=task,
        text=text,
        finish_reason=finish_reason,
        prompt_text=prompt,
        parsed=parsed,
        parse_error=parse_error,
        output_schema=output_schema,
        images=tuple(images),
        seed=seed if seed is not None else {},
    )


def candidate_from_row(
    row: dict[str, Any],
    *,
    base_dir: str | Path | None = None,
    task: str | None = None,
    output_schema: dict[str, Any] | None = None,
    image_column: str | None = "image",
    replay: bool = True,
) -> Candidate:
    """The Candidate of a row written by mmsynth (the shard columns; see `to_row`).

    Shards keep only the first image of a multi-image record. With `replay` (the resume path: accepted
    records fed back into stateful validators) every image comes by its stored hash, the first with its
    bytes as stored, the later ones without, which is all `remember` needs. Without it (checking the
    row again, `mmsynth validate`) the image cells are read with `ImageRef.from_cell` (ValueError naming
    the row's image when one cannot be) and images without bytes are left out, as no check could decode them.
    """
    rid = row["id"]
    parsed = None if row.get("parsed") is None else json.loads(row["parsed"])
    parse_error = None
    if parsed is None and output_schema is not None:  # the run's parse failed: say why again, as it did
        parsed, parse_error = parse_json_output(row["output"])
    if replay:
        first = ((row.get(image_column) if image_column else None) or {}).get("bytes") or b""
        images = [
            ImageRef(data=first if i == 0 else b"", sha256=h, source="replay")
            for i, h in enumerate(row.get("image_sha256") or ())
        ]
    else:
        cell = row.get(image_column) if image_column else None
        first = ImageRef.from_cell(cell, base_dir, f"{rid} image")
        images = [first] if first is not None else []
    doc_images = None
    if row.get("texts"):
        doc_images = [
            ImageRef.from_cell(cell, base_dir, f"{rid} image {i}")
            for i, cell in enumerate(row.get("images") or [])
        ]
    return make_candidate(
        id=rid,
        task=task or row["task"],
        text=row["output"],
        finish_reason=row.get("finish_reason") or "stop",
        prompt=row.get("prompt") or "",
        parsed=parsed,
        parse_error=parse_error,
        output_schema=output_schema,
        images=images,
        seed=json.loads(row["seed"]) if row.get("seed") else {},
        texts=row.get("texts") or None,
        doc_images=doc_images,
    )
