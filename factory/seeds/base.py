"""What every seed source shares: the Seed value, the config base, path resolution, image reading."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializationInfo,
    Strict,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from mmsynth.prompts.media import ImageRef


@dataclass(frozen=True)
class Seed:
    """One input of a run.

    `index` is the 0-based position in the source stream (stable across runs, the resume unit);
    `id` is content-addressed (source identity, index and content); `fields` are what templates
    can use (images as ImageRef). A seed with `error` set is unusable (a corrupt image, a bad JSON
    line): the factory records it as rejected with that reason instead of stopping the run.
    """

    id: str
    index: int
    fields: dict[str, Any]
    error: str | None = None


class SourceConfig(BaseModel):
    """Base of the seed source configs: strict types, no unknown keys, an optional `limit`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    limit: int | None = Field(
        default=None,
        ge=0,
        description="Take at most this many seeds: the first `limit` of the stream. null takes them all.",
    )


def seed_id(source: str, index: int, *content: bytes | str) -> str:
    """16 hex digits of sha256 over the source identity, the index and the seed's content."""
    h = hashlib.sha256(f"{source}\0{index}\0".encode())
    for part in content:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def stop_index(limit: int | None, total: int | None) -> int | None:
    """The index the stream stops before: `total` capped by `limit` (None when both are unknown)."""
    if limit is None:
        return total
    return limit if total is None else min(limit, total)


# --- paths -----------------------------------------------------------------------------------------
#
# Relative paths in a recipe are resolved against the recipe's folder. The loader passes that folder
# as pydantic validation context (`{"base_dir": Path}`); the validators below then store absolute
# paths and check that they exist, so a typo fails at load time with the line of the recipe. A config
# built in Python without that context keeps its paths as given: `iter_seeds(config, base_dir)`
# resolves them then.


def absolute(path: str | Path, base_dir: str | Path | None) -> Path:
    """`path` with `~` expanded, made absolute against `base_dir` (default: the working folder)."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_absolute():
        p = Path(base_dir if base_dir is not None else Path.cwd()) / p
    return Path(os.path.normpath(p))


def _base_dir(info: ValidationInfo) -> Path | None:
    ctx = info.context or {}
    return ctx.get("base_dir")


def _check_local(kind: Literal["file", "folder"]):
    def check(value: Path, info: ValidationInfo) -> Path:
        base = _base_dir(info)
        if base is None:
            return value
        p = absolute(value, base)
        if not p.exists():
            raise PydanticCustomError(
                "path_not_found",
                "{kind} not found: {path}",
                {"kind": kind, "path": str(p), "given": str(value)},
            )
        if kind == "folder" and not p.is_dir():
            raise PydanticCustomError("path_not_folder", "not a folder: {path}", {"path": str(p)})
        if kind == "file" and p.is_dir():
            raise PydanticCustomError("path_not_file", "a folder, not a file: {path}", {"path": str(p)})
        return p

    return check


def _serialize_path(value: Path | str, info: SerializationInfo) -> str:
    # The recipe fingerprint serialises with {"relative_to": recipe folder}, so that moving a whole
    # project (recipe and data together) keeps the fingerprint.
    ctx = info.context or {}
    rel = ctx.get("relative_to")
    if rel is not None and os.path.isabs(str(value)):
        return Path(os.path.relpath(str(value), str(rel))).as_posix()
    return str(value)


LocalFile = Annotated[
    Path,
    Strict(False),
    AfterValidator(_check_local("file")),
    PlainSerializer(_serialize_path, return_type=str, when_used="json"),
]
"""A file path; relative to the recipe's folder; must exist when loaded from a recipe."""

LocalFolder = Annotated[
    Path,
    Strict(False),
    AfterValidator(_check_local("folder")),
    PlainSerializer(_serialize_path, return_type=str, when_used="json"),
]
"""A folder path; relative to the recipe's folder; must exist when loaded from a recipe."""

OutputPath = Annotated[
    Path,
    Strict(False),
    AfterValidator(lambda v, info: absolute(v, _base_dir(info)) if _base_dir(info) is not None else v),
    PlainSerializer(_serialize_path, return_type=str, when_used="json"),
]
"""A path that need not exist yet (created on use); relative to the recipe's folder."""


def looks_like_path(value: str) -> bool:
    """True for strings written as paths: starting with `.`, `/` or `~` (a Hub id never does)."""
    return value.startswith((".", "/", "~")) or bool(re.match(r"^[A-Za-z]:[\\/]", value))


def resolve_hub_or_local(value: str, info: ValidationInfo, what: str) -> str:
    """A Hub id stays as given; a local folder becomes an absolute path that must exist.

    Local means: written as a path (see `looks_like_path`) or an existing folder relative to the
    recipe. `org/name` that is not a folder there is a Hub id and is not checked.
    """
    base = _base_dir(info)
    if base is None:
        return value
    candidate = absolute(value, base)
    if looks_like_path(value):
        if not candidate.exists():
            raise PydanticCustomError(
                "path_not_found",
                "{kind} not found: {path}",
                {"kind": what, "path": str(candidate), "given": value},
            )
        return str(candidate)
    if candidate.is_dir():
        return str(candidate)
    return value


HubOrLocalSerializer = PlainSerializer(_serialize_path, return_type=str, when_used="json")


# --- images ----------------------------------------------------------------------------------------


def read_image(path: Path, label: str) -> tuple[ImageRef | None, str | None]:
    """(ImageRef, None) for a decodable image file, else (None, reason). `label` names it in reasons."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"image not found: {label}"
    except OSError as e:
        return None, f"cannot read image {label}: {e.strerror or e}"
    return image_from_bytes(data, label)


def image_from_bytes(data: bytes, label: str) -> tuple[ImageRef | None, str | None]:
    """(ImageRef, None) when `data` is a whole image within the pixel limit, else (None, reason)."""
    image = ImageRef.from_bytes(data, source=label)
    error = image.check()
    return (None, error) if error is not None else (image, None)
