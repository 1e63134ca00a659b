"""Records from a JSON Lines file, one seed per non-blank line, read as a stream.

Every line is user input, and a bad one must end as that seed's rejected record naming `file:line`
and the reason, never as a crash that every rerun repeats on the same line: a line over the size
limit (MMSYNTH_SEED_MAX_LINE_BYTES, default 16 MiB; never held whole), invalid UTF-8 or JSON,
nesting deeper than MAX_DEPTH (a deep line raised RecursionError), an integer over Python's digit
limit, NaN/Infinity (the output would be non-standard JSON), and a repeated `id_field` value (the
first line keeps the id; the ids seen are kept as a 64-bit hash, the first line and its byte offset,
about 32 bytes a seed (id_index.IdIndex); a hash match re-reads the earlier line to compare the ids).
"""

from __future__ import annotations

import json
import math
import os
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
from mmsynth.prompts.rows import TOO_LONG, jsonl_lines, jsonl_lines_at

FIELDS = None  # the record's own keys: see peek_fields

ENV_MAX_LINE = "MMSYNTH_SEED_MAX_LINE_BYTES"
DEFAULT_MAX_LINE = 16 * 1024 * 1024
MAX_DEPTH = 64  # nested arrays/objects in one line; real records are a few levels deep


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


def max_line_bytes() -> int:
    raw = os.environ.get(ENV_MAX_LINE, "").strip()
    if not raw:
        return DEFAULT_MAX_LINE
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"environment variable {ENV_MAX_LINE}={raw!r} must be a positive number of bytes")
    return int(raw)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    return jsonl_lines(path, max_line_bytes())


def _lines_at(path: Path) -> Iterator[tuple[int, int, bytes]]:
    return jsonl_lines_at(path, max_line_bytes())


def _id_at(path: Path, offset: int, id_field: str) -> str | None:
    """The `id_field` value of the line starting at byte `offset`, as iter_seeds reads it."""
    with path.open("rb") as f:
        f.seek(offset)
        raw = f.readline(max_line_bytes() + 1)
    record, _ = _load(raw)
    if isinstance(record, dict) and record.get(id_field) is not None:
        return str(record[id_field])
    return None


def iter_seeds(config: JsonlConfig, base_dir: str | Path | None = None, start: int = 0) -> Iterator[Seed]:
    """One seed per non-blank line; `index` counts those lines. Lines before `start` are not turned
    into seeds (with `id_field` their ids are still read, so a repeat after a resume is caught).

    A bad line (see the module doc), a missing id or image field, or a missing or corrupt image
    becomes a seed with `error` set ("<file>:<line>: ...").
    """
    path = absolute(config.path, base_dir)
    stop = stop_index(config.limit, None)
    id_field = config.id_field
    seen = None
    if id_field is not None:
        from mmsynth.factory.seeds.id_index import IdIndex  # numpy: only for a source with id_field

        seen = IdIndex(lambda offset: _id_at(path, offset, id_field))
    for index, (lineno, offset, raw) in enumerate(_lines_at(path)):
        if stop is not None and index >= stop:
            return
        if index < start:
            if seen is not None:
                record, _ = _load(raw)
                if isinstance(record, dict) and record.get(id_field) is not None:
                    seen.first_line(str(record[id_field]), lineno, offset)
            continue
        seed = _parse(config, path, index, lineno, raw)
        if seen is not None and seed.error is None:
            first = seen.first_line(seed.id, lineno, offset)
            if first != lineno:
                seed = Seed(
                    id=seed_id("jsonl", index, raw),
                    index=index,
                    fields=seed.fields,
                    error=f"{path.name}:{lineno}: duplicate id {seed.id!r} in field '{config.id_field}' "
                    f"(first on line {first}); make the ids unique, or drop id_field to use content ids",
                )
        yield seed


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON, and would make the output non-standard JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows to infinity")
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """True when containers nest deeper than `limit` (iterative: a deep value must not recurse here)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > limit:
                return True
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False


def _load(raw: bytes) -> tuple[Any, str | None]:
    """(the line's JSON value, None), or (None, why it has none)."""
    if raw == TOO_LONG:
        return None, f"line longer than {max_line_bytes():,} bytes (set {ENV_MAX_LINE} to allow more)"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8: {e.reason} at byte {e.start}"
    try:
        value = json.loads(text.lstrip("\ufeff"), parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        return None, f"nested too deeply (more than {MAX_DEPTH} levels)"
    except json.JSONDecodeError as e:
        return None, f"invalid JSON: {e}"
    except ValueError as e:  # an integer over Python's digit limit, NaN, Infinity, 1e999
        return None, f"invalid JSON value: {e}"
    if _depth_over(value, MAX_DEPTH):
        return None, f"nested too deeply (more than {MAX_DEPTH} levels)"
    return value, None


def _parse(config: JsonlConfig, path: Path, index: int, lineno: int, raw: bytes) -> Seed:
    where = f"{path.name}:{lineno}"
    sid = seed_id("jsonl", index, raw)
    record, problem = _load(raw)
    if problem is not None:
        return Seed(id=sid, index=index, fields={}, error=f"{where}: {problem}")
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
    for _ in _lines(path):
        if config.limit is not None and n >= config.limit:
            break
        n += 1
    return n


def peek_fields(config: JsonlConfig, base_dir: str | Path | None = None) -> set[str]:
    """Keys of the first line that is a JSON object, plus `image` when `image_field` is set."""
    path = absolute(config.path, base_dir)
    for _, raw in _lines(path):
        record, _ = _load(raw)
        if isinstance(record, dict):
            return set(record) | ({"image"} if config.image_field else set())
    return {"image"} if config.image_field else set()
