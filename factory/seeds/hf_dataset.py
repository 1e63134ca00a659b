"""Rows of a Hugging Face dataset: a folder written by `Dataset.save_to_disk`, a data folder, or a Hub id.

Image columns are read with `Image(decode=False)`, so the stored bytes become ImageRefs as they are:
no decode and re-encode, and the image hash is the hash of the stored file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from mmsynth.factory.seeds.base import (
    HubOrLocalSerializer,
    Seed,
    SourceConfig,
    absolute,
    image_from_bytes,
    looks_like_path,
    read_image,
    resolve_hub_or_local,
    seed_id,
    stop_index,
)
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.rows import load_split

FIELDS = None  # the dataset's columns: see peek_fields


class HFDatasetConfig(SourceConfig):
    """A Hugging Face dataset split; its columns become seed fields."""

    type: Literal["hf_dataset"] = Field(default="hf_dataset", description="Selects this source.")
    path: Annotated[
        str,
        AfterValidator(lambda v, info: resolve_hub_or_local(v, info, "dataset folder")),
        HubOrLocalSerializer,
    ] = Field(
        description=(
            "A folder written by `Dataset.save_to_disk` (read with `load_from_disk`), a data folder, "
            "or a Hub dataset id (read with `load_dataset`; needs the network). A value starting with "
            "`.`, `/` or `~`, or naming an existing folder relative to the recipe, is local and must exist."
        )
    )
    name: str | None = Field(default=None, description="Dataset configuration name, for `load_dataset`.")
    split: str = Field(default="train", description="Which split to read.")
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) to read.")
    image_field: str | None = Field(
        default=None,
        description="Image column also exposed as the seed field `image`; it must have an `Image` feature.",
    )
    id_field: str | None = Field(
        default=None,
        description="Column whose value becomes the seed id instead of a content hash; keep it unique.",
    )
    streaming: bool = Field(
        default=False,
        description="Stream rows with `load_dataset(..., streaming=True)` instead of downloading the split first.",
    )


def _local(config: HFDatasetConfig, base_dir: str | Path | None) -> Path | None:
    candidate = absolute(config.path, base_dir)
    if looks_like_path(config.path) or Path(config.path).is_absolute() or candidate.is_dir():
        return candidate
    return None


def open_dataset(config: HFDatasetConfig, base_dir: str | Path | None = None):
    """The split as a `datasets.Dataset` (or `IterableDataset` when streaming), image columns undecoded,
    read by the one row reader (mmsynth.prompts.rows.load_split)."""
    import datasets

    local = _local(config, base_dir)
    ds = load_split(
        str(local) if local is not None else config.path,
        config.split,
        name=config.name,
        revision=config.revision,
        streaming=config.streaming,
        local=local is not None,
    )
    if config.image_field is not None and ds.features is not None:
        feature = ds.features.get(config.image_field)
        if not isinstance(feature, datasets.Image):
            have = ", ".join(f"{k} ({type(v).__name__})" for k, v in ds.features.items())
            raise ValueError(f"image_field '{config.image_field}' is not an Image column; columns: {have}")
    return ds


def _to_image(value: Any, label: str) -> tuple[ImageRef | None, str | None]:
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes") is not None:
            return image_from_bytes(value["bytes"], label)
        if value.get("path"):
            return read_image(Path(value["path"]), label)
        return None, f"no image bytes or path in {label}"
    try:  # a streamed dataset without declared features decodes to PIL images
        return ImageRef.from_cell(value, source=label), None
    except ValueError as e:
        return None, str(e)


def _canonical(value: Any) -> Any:
    if isinstance(value, ImageRef):
        return {"image": value.sha256}
    if isinstance(value, bytes):
        return {"bytes": value.hex() if len(value) <= 32 else ImageRef.from_bytes(value).sha256}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _seed(config: HFDatasetConfig, image_columns: set[str], index: int, row: dict[str, Any]) -> Seed:
    fields: dict[str, Any] = dict(row)
    error = None
    for column in sorted(image_columns):
        value = fields.get(column)
        if value is None:
            if column == config.image_field:
                error = error or f"row {index}: no image in column '{column}'"
            continue
        image, reason = _to_image(value, f"row {index} column '{column}'")
        fields[column] = image
        if reason is not None:
            error = error or f"row {index}: {reason}"
    if config.image_field is not None and isinstance(fields.get(config.image_field), ImageRef):
        fields["image"] = fields[config.image_field]
    content = json.dumps(_canonical(fields), sort_keys=True, default=str)
    sid = seed_id("hf_dataset", index, content)
    if config.id_field is not None and fields.get(config.id_field) is not None:
        sid = str(fields[config.id_field])
    return Seed(id=sid, index=index, fields=fields, error=error)


def iter_seeds(config: HFDatasetConfig, base_dir: str | Path | None = None, start: int = 0) -> Iterator[Seed]:
    """Rows start.. of the split (capped by `limit`); map-style datasets jump to `start` without reading."""
    import datasets

    ds = open_dataset(config, base_dir)
    start = max(start, 0)
    if isinstance(ds, datasets.Dataset):
        stop = stop_index(config.limit, len(ds)) or 0
        if start >= stop:
            return
        rows = ds.select(range(start, stop)) if (start, stop) != (0, len(ds)) else ds
    else:
        stop = stop_index(config.limit, None)
        rows = ds.skip(start) if start else ds
    image_columns = _image_columns(ds)
    for index, row in enumerate(rows, start):
        if stop is not None and index >= stop:
            return
        if not image_columns:  # streamed without features: find images by value
            image_columns = _image_columns_by_value(row)
        yield _seed(config, image_columns, index, row)


def _image_columns(ds) -> set[str]:
    import datasets

    return {k for k, v in (ds.features or {}).items() if isinstance(v, datasets.Image)}


def _image_columns_by_value(row: dict[str, Any]) -> set[str]:
    from PIL import Image

    return {k for k, v in row.items() if isinstance(v, Image.Image)}


def count_seeds(config: HFDatasetConfig, base_dir: str | Path | None = None) -> int | None:
    """Rows in the split capped by `limit`; None when streaming (unknown without reading it all)."""
    import datasets

    if config.streaming and _local(config, base_dir) is None:
        return None
    ds = open_dataset(config, base_dir)
    if not isinstance(ds, datasets.Dataset):
        return None
    return stop_index(config.limit, len(ds))


def peek_fields(config: HFDatasetConfig, base_dir: str | Path | None = None) -> set[str]:
    """The column names (read from the first row when a stream declares none), plus `image` with image_field."""
    ds = open_dataset(config, base_dir)
    names = ds.column_names
    if names is None:
        first = next(iter(ds), {})
        names = list(first)
    return set(names) | ({"image"} if config.image_field else set())
