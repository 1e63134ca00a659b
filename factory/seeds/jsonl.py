"""Records from a JSON Lines file, one seed per non-blank line, read as a stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from mmsynth.factory.seeds.base import (
    LocalFile,
    Seed,
    SourceConfig,
    absolute,
    read_image,
    seed_id,
    stop_index,
)
from mmsynth.prompts.rows import jsonl_lines

FIELDS = None  # the record's own keys: see peek_fields


class JsonlConfig(SourceConfig):
    """A JSON Lines file: every non-blank line is a JSON object whose keys become seed fields."""

    type: Literal["jsonl"] = Field(default="jsonl", description="Selects this source.")
    path: LocalFile = Field(description="The .jsonl file; relative to the recipe's folder.")
    image_field: str | None = Field(
        default=None,
        description=(
            "Field holding an image path (relative to the JSONL file's folder); "
            "the image is loaded into the seed field `image`."
        ),
    )
    id_field: str | None = Field(
        default=None,
        description="Field whose value becomes the seed id instead of a content hash; keep it unique.",
    )


def iter_seeds(config: JsonlConfig, base_dir: str | Path | None = None, start: int = 0) -> Iterator[Seed]:
    """One seed per non-blank line; `index` counts those lines. Lines before `start` are not parsed.

    A line that is not a JSON object, lacks the id or image field, or names a missing or corrupt
    image becomes a seed with `error` set ("<file>:<line>: ...").
    """
    path = absolute(config.path, base_dir)
    stop = stop_index(config.limit, None)
    for index, (lineno, raw) in enumerate(jsonl_lines(path)):
        if stop is not None and index >= stop:
            return
        if index < start:
            continue
        yield _parse(config, path, index, lineno, raw)


def _parse(config: JsonlConfig, path: Path, index: int, lineno: int, raw: bytes) -> Seed:
    where = f"{path.name}:{lineno}"
    sid = seed_id("jsonl", index, raw)
    try:
        record: Any = json.loads(raw)
    except UnicodeDecodeError as e:
        return Seed(id=sid, index=index, fields={}, error=f"{where}: invalid UTF-8: {e.reason}")
    except json.JSONDecodeError as e:
        return Seed(id=sid, index=index, fields={}, error=f"{where}: invalid JSON: {e}")
    if not isinstance(record, dict):
        return Seed(
            id=sid,
            index=index,
            fields={},
            error=f"{where}: expected a JSON object, got {type(record).__name__}",
        )
    fields: dict[str, Any] = record
    if config.id_field is not None:
        if fields.get(config.id_field) is None:
            return Seed(
                id=sid, index=index, fields=fields, error=f"{where}: missing id field '{config.id_field}'"
            )
        sid = str(fields[config.id_field])
    if config.image_field is not None:
        value = fields.get(config.image_field)
        if not isinstance(value, str) or not value:
            return Seed(
                id=sid,
                index=index,
                fields=fields,
                error=f"{where}: image field '{config.image_field}' must be a path string, got {value!r}",
            )
        image, error = read_image(absolute(value, path.parent), value)
        if image is None:
            return Seed(id=sid, index=index, fields=fields, error=f"{where}: {error}")
        fields = {**fields, "image": image}
        if config.id_field is None:
            sid = seed_id("jsonl", index, raw, image.sha256)
    return Seed(id=sid, index=index, fields=fields)


def count_seeds(config: JsonlConfig, base_dir: str | Path | None = None) -> int:
    """Non-blank lines, capped by `limit` (one pass over the file, no JSON parsing)."""
    path = absolute(config.path, base_dir)
    n = 0
    for _ in jsonl_lines(path):
        if config.limit is not None and n >= config.limit:
            break
        n += 1
    return n


def peek_fields(config: JsonlConfig, base_dir: str | Path | None = None) -> set[str]:
    """Keys of the first line that is a JSON object, plus `image` when `image_field` is set."""
    path = absolute(config.path, base_dir)
    for _, raw in jsonl_lines(path):
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            return set(record) | ({"image"} if config.image_field else set())
    return {"image"} if config.image_field else set()
