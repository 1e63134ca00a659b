"""Structure of parsed outputs: required fields, QA items and their types, interleaved documents.

Three shapes are recognised in `parsed` and checked when present:
- QA: `{pairs: [{question, answer, type}, ...]}` (vqa.pairs), one `{question, answer}` or a list of them;
- an assembled document (OBELICS layout): `{title, texts: [...], images: [sha256 | None, ...]}`;
- a document plan (interleaved.plan): `{title, segments: [{type: text, text} | {type: image, description}]}`.
Reasons start with a stable prefix (`missing field`, `qa`, `document`, `plan`, `not JSON`) and name
the item and field, e.g. `qa: pairs[2].answer is empty`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.text.qa_items import clip, normalise, qa_items
from mmsynth.validators.types import Candidate, Verdict

VQA_TYPES = ("counting", "colour", "spatial", "ocr", "reasoning", "other")


class StructureConfig(ValidatorConfig):
    type: Literal["structure"] = Field(default="structure", description="Registry key: 'structure'.")
    required: list[str] = Field(
        default_factory=list,
        description="Fields the parsed output must have, as dotted paths ('title', 'meta.source'); a null or empty-string value counts as missing.",
    )
    require_parsed: bool = Field(
        default=True,
        description="Reject a structured candidate (one with an output schema, or when `required` is set) that has no parsed JSON.",
    )
    qa_field: str = Field(default="pairs", description="Where a QA output keeps its list of items.")
    min_items: int = Field(default=1, ge=0, description="Fewest QA items.")
    max_items: int | None = Field(default=None, ge=1, description="Most QA items; null: no maximum.")
    answer_types: list[str] | None = Field(
        default_factory=lambda: list(VQA_TYPES),
        description="Allowed values of each QA item's `type` (default: the vqa.pairs types); null: any.",
    )
    require_type: bool = Field(
        default=False,
        description="Reject QA items without a `type` (otherwise only a present type is checked).",
    )
    min_texts: int = Field(default=1, ge=0, description="Documents and plans: fewest text passages.")
    min_images: int = Field(default=1, ge=0, description="Documents and plans: fewest images.")
    max_adjacent_images: int | None = Field(
        default=None,
        ge=1,
        description="Documents and plans: most images in a row with no text between; null: no limit.",
    )
    segments_field: str = Field(default="segments", description="Where a plan keeps its ordered segments.")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> StructureConfig:
        if self.max_items is not None and self.min_items > self.max_items:
            raise ValueError(f"min_items ({self.min_items}) is greater than max_items ({self.max_items})")
        return self


class StructureValidator(ConfiguredValidator[StructureConfig]):
    """Checks the parsed output's shape; the first problem found rejects, naming the item and field."""

    config_cls = StructureConfig

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        out = []
        for c in candidates:
            problem = self.first_problem(c)
            out.append(Verdict.ok(self.name) if problem is None else Verdict.reject(self.name, problem))
        return out

    def first_problem(self, c: Candidate) -> str | None:
        """The reason to reject `c`, or None when its structure is sound (or it is not structured)."""
        cfg = self.config
        parsed = c.parsed
        if parsed is None:
            if cfg.require_parsed and (c.output_schema is not None or cfg.required):
                return f"not JSON: {c.parse_error or 'no parsed output'}"
            return None
        for path in cfg.required:
            if _missing(parsed, path):
                return f"missing field: {path}"
        if isinstance(parsed, dict) and "texts" in parsed and "images" in parsed:
            return self._document(c, parsed)
        if isinstance(parsed, dict) and cfg.segments_field in parsed:
            return self._plan(parsed[cfg.segments_field])
        items = qa_items(parsed, cfg.qa_field)
        if items is not None:
            return self._qa(items, isinstance(parsed, dict) and cfg.qa_field in parsed)
        return None

    def _qa(self, items: list[Any], nested: bool) -> str | None:
        cfg = self.config
        where = f"{cfg.qa_field}" if nested else "items"
        if len(items) < cfg.min_items:
            return f"qa: {len(items)} items < {cfg.min_items}"
        if cfg.max_items is not None and len(items) > cfg.max_items:
            return f"qa: {len(items)} items > {cfg.max_items}"
        for i, item in enumerate(items):
            at = f"{where}[{i}]"
            if not isinstance(item, dict):
                return f"qa: {at} is not an object"
            for key in ("question", "answer"):
                value = item.get(key)
                if value is None:
                    return f"qa: {at}.{key} is missing"
                if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                    return f"qa: {at}.{key} is not a string"
                if isinstance(value, str) and not value.strip():
                    return f"qa: {at}.{key} is empty"
            kind = item.get("type")
            if kind is None:
                if cfg.require_type:
                    return f"qa: {at}.type is missing"
            elif cfg.answer_types is not None and kind not in cfg.answer_types:
                return f"qa: {at}.type {clip(str(kind), 40)!r} is not one of {', '.join(cfg.answer_types)}"
        return None

    def _document(self, c: Candidate, doc: dict[str, Any]) -> str | None:
        texts, images = doc["texts"], doc["images"]
        if not isinstance(texts, list) or not isinstance(images, list):
            return "document: texts and images must be lists"
        if len(texts) != len(images):
            return f"document: {len(texts)} texts but {len(images)} images (they align by position)"
        kinds = []
        seen: dict[str, int] = {}
        for i, (t, img) in enumerate(zip(texts, images, strict=True)):
            if (t is None) == (img is None):
                both = "both a text and an image" if t is not None else "neither a text nor an image"
                return f"document: position {i} has {both}"
            if t is not None:
                if not isinstance(t, str) or not t.strip():
                    return f"document: texts[{i}] is empty"
                kinds.append("text")
            else:
                if not isinstance(img, str) or not img:
                    return f"document: images[{i}] is not an image hash"
                if img in seen:
                    return f"document: images[{i}] repeats images[{seen[img]}]"
                seen[img] = i
                kinds.append("image")
        problem = self._counts(kinds, "document")
        if problem is not None:
            return problem
        hashes = [h for h in images if h is not None]
        if c.images and [img.sha256 for img in c.images] != hashes:
            return f"document: its {len(hashes)} image slots do not match the record's {len(c.images)} images"
        return None

    def _plan(self, segments: Any) -> str | None:
        field = self.config.segments_field
        if not isinstance(segments, list):
            return f"plan: {field} is not a list"
        kinds = []
        seen: dict[str, int] = {}
        for i, seg in enumerate(segments):
            at = f"{field}[{i}]"
            if not isinstance(seg, dict):
                return f"plan: {at} is not an object"
            kind = seg.get("type")
            key = {"text": "text", "image": "description"}.get(kind) if isinstance(kind, str) else None
            if key is None:
                return f"plan: {at}.type {clip(str(kind), 40)!r} is not 'text' or 'image'"
            value = seg.get(key)
            if not isinstance(value, str) or not value.strip():
                return f"plan: {at}.{key} is missing or empty"
            if kind == "image":
                # Each image slot is referenced once: the same picture twice is one slot used twice.
                ident = seg.get("slot", seg.get("id"))
                slot = f"id {ident!r}" if ident is not None else normalise(value)
                if slot in seen:
                    return f"plan: {at} repeats the image of {field}[{seen[slot]}]"
                seen[slot] = i
            kinds.append(kind)
        return self._counts(kinds, "plan")

    def _counts(self, kinds: list[str], what: str) -> str | None:
        cfg = self.config
        n_text, n_image = kinds.count("text"), kinds.count("image")
        if n_text < cfg.min_texts:
            return f"{what}: {n_text} texts < {cfg.min_texts}"
        if n_image < cfg.min_images:
            return f"{what}: {n_image} images < {cfg.min_images}"
        if cfg.max_adjacent_images is not None:
            run = 0
            for i, k in enumerate(kinds):
                run = run + 1 if k == "image" else 0
                if run > cfg.max_adjacent_images:
                    return f"{what}: {run} images in a row at position {i} (max {cfg.max_adjacent_images})"
        return None


def _missing(value: Any, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return True
        value = value[part]
    return value is None or (isinstance(value, str) and not value.strip())
