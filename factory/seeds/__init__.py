"""Seed sources: where the inputs of a run come from.

Each source is a module with a pydantic config class (a member of the recipe's `seeds` union, chosen
by `type`) and three functions: `iter_seeds(config, base_dir=None, start=0)` streams Seeds with
index >= start, deterministically; `count_seeds(config, base_dir=None)` says how many (None when
unknown); `peek_fields(config, base_dir=None)` names the fields a seed offers. Adding a source is a
short module plus one entry in SEED_SOURCES and SeedSourceConfig.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Annotated, Union

from pydantic import Field

from mmsynth.factory.seeds import hf_dataset, image_folder, jsonl, scenes
from mmsynth.factory.seeds.base import Seed, SourceConfig
from mmsynth.factory.seeds.hf_dataset import HFDatasetConfig
from mmsynth.factory.seeds.image_folder import ImageFolderConfig
from mmsynth.factory.seeds.jsonl import JsonlConfig
from mmsynth.factory.seeds.scenes import ScenesConfig

SEED_SOURCES: dict[str, ModuleType] = {
    "scenes": scenes,
    "image_folder": image_folder,
    "jsonl": jsonl,
    "hf_dataset": hf_dataset,
}

SeedSourceConfig = Annotated[
    Union[ScenesConfig, ImageFolderConfig, JsonlConfig, HFDatasetConfig],  # noqa: UP007 - a runtime union for pydantic
    Field(discriminator="type"),
]
"""The recipe's `seeds` entry: one source config, chosen by its `type` key."""


def _source(config: SourceConfig) -> ModuleType:
    kind = getattr(config, "type", None)
    if kind not in SEED_SOURCES:
        raise ValueError(f"unknown seed source type {kind!r}; known: {', '.join(SEED_SOURCES)}")
    return SEED_SOURCES[kind]


def iter_seeds(config: SourceConfig, base_dir: str | Path | None = None, start: int = 0) -> Iterator[Seed]:
    """The source's seeds with index >= start, in index order; relative paths resolve against base_dir."""
    return _source(config).iter_seeds(config, base_dir, start)


def count_seeds(config: SourceConfig, base_dir: str | Path | None = None) -> int | None:
    """How many seeds the source yields (after `limit`), or None when unknown without reading it all."""
    return _source(config).count_seeds(config, base_dir)


def seed_fields(config: SourceConfig, base_dir: str | Path | None = None) -> set[str]:
    """The field names a seed of this source offers (jsonl and hf_dataset read the first record)."""
    return _source(config).peek_fields(config, base_dir)


__all__ = [
    "SEED_SOURCES",
    "HFDatasetConfig",
    "ImageFolderConfig",
    "JsonlConfig",
    "ScenesConfig",
    "Seed",
    "SeedSourceConfig",
    "SourceConfig",
    "count_seeds",
    "iter_seeds",
    "seed_fields",
]
