"""Running a recipe's validator stack over a dataset that already exists (`mmsynth validate`).

Input (read by mmsynth.prompts.rows): a Parquet, JSONL or CSV file, a Parquet folder, a folder written by `datasets.save_to_disk`, or an
mmsynth run folder (its accepted records). Each row becomes a Candidate through a column mapping;
the stack runs in batches exactly as in a run (engine.validate.validate_batch), and every row is
written back with `accepted`, `reject_reason` and `verdicts` columns to
`OUT/data/<task>/{train,rejected}-<batch>.parquet`, with `stats.json` in a run's layout and a card
so that `datasets.load_dataset(OUT)` reads it. A row that cannot be read or mapped (bad JSON line,
null text, missing image file) is written to `rejected` with an `input: <file>:<row>: ...` reason.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from mmsynth.factory.dataset.card import write_card
from mmsynth.factory.dataset.records import candidate_from_row, make_candidate
from mmsynth.factory.dataset.run_dir import write_json_atomic
from mmsynth.factory.dataset.shards import FEATURES
from mmsynth.factory.engine.plan import build_plan
from mmsynth.factory.engine.stats import ChunkStats, merge_chunks
from mmsynth.factory.engine.validate import close_validators, validate_batch
from mmsynth.factory.recipe import load_recipe
from mmsynth.prompts.errors import MmsynthError
from mmsynth.prompts.files import atomic_open
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.rows import BadRow, RowPart, RowsError, open_rows
from mmsynth.validators import Candidate, Verdict
from mmsynth.validators.text.schema import parse_json_output

VERDICT_COLUMNS = ("accepted", "reject_reason", "verdicts")
DEFAULT_TASK = "data"


class ValidateError(MmsynthError):
    """The dataset, the column mapping or the output folder cannot be used as asked."""

    exit_code = 2


@dataclass
class Columns:
    """Which input columns hold what; None: the default (see `resolve`)."""

    text: str | None = None
    image: str | None = None
    task: str | None = None  # a fixed task name for every row (else the `task` column, else "data")


@dataclass
class ValidateResult:
    out: Path
    stats: dict[str, Any]
    kind: str


@dataclass
class _Row:
    values: dict[str, Any]
    where: str
    candidate: Candidate | None = None
    problem: str | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    schema: pa.Schema | None = None
    task: str = DEFAULT_TASK  # the output folder: data/<task>/

    @property
    def accepted(self) -> bool:
        return self.problem is None and all(v.keep for v in self.verdicts)

    @property
    def reject_reason(self) -> str | None:
        if self.problem is not None:
            return self.problem
        return next((f"{v.validator}: {v.reason}" for v in self.verdicts if not v.keep), None)


# --- reading -----------------------------------------------------------------------------------------


def open_dataset(path: str | Path, batch_size: int = 256) -> tuple[str, list[RowPart]]:
    """(kind, parts) for the dataset at `path` (see `mmsynth.prompts.rows`); ValidateError when it is
    none of the known layouts or cannot be opened."""
    try:
        return open_rows(path, batch_size=batch_size)
    except RowsError as e:
        raise ValidateError(str(e)) from None


# --- rows to candidates ------------------------------------------------------------------------------


def _plain(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


class _Mapper:
    """Turns rows into candidates under one column mapping and the recipe's task schemas."""

    def __init__(self, columns: Columns, schemas: dict[str, dict[str, Any] | None]) -> None:
        self.columns = columns
        self.schemas = schemas

    def resolve(self, part: RowPart, first: dict[str, Any]) -> tuple[str, str | None]:
        """(text column, image column) for `part`, checked against its first row's columns."""
        names = list(part.schema.names) if part.schema is not None else list(first)
        text = self.columns.text or ("output" if "output" in names else "text")
        if text not in names:
            raise ValidateError(
                f"{part.name}: no text column {text!r} (columns: {', '.join(names)}); choose one with --text-column"
            )
        image = self.columns.image
        if image is not None and image not in names:
            raise ValidateError(
                f"{part.name}: no image column {image!r} (columns: {', '.join(names)}); choose one with --image-column"
            )
        if image is None and "image" in names:
            image = "image"
        return text, image

    def row(
        self, part: RowPart, index: int, values: dict[str, Any], text_col: str, image_col: str | None
    ) -> _Row:
        where = part.where(index)
        row = _Row(values, where, schema=part.schema)
        try:
            row.candidate = self._candidate(part, index, values, text_col, image_col)
        except _BadRow as e:
            row.problem = f"input: {where}: {e}"
        except Exception as e:  # an unreadable image, a broken JSON column: this row's problem only
            row.problem = f"input: {where}: {type(e).__name__}: {e}"
        return row

    def _candidate(
        self, part: RowPart, index: int, v: dict[str, Any], text_col: str, image_col: str | None
    ) -> Candidate:
        task = (
            self.columns.task or (v.get("task") if isinstance(v.get("task"), str) else None) or DEFAULT_TASK
        )
        if text_col not in v:
            raise _BadRow(f"no column {text_col!r}")
        raw = v[text_col]
        if raw is None:
            raise _BadRow(f"column {text_col!r} is null")
        schema = self.schemas.get(task)
        if "seed_id" in v and "request_key" in v:  # a row written by mmsynth: read by its own columns
            row = {**v, "output": raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)}
            return candidate_from_row(
                row,
                base_dir=part.base_dir,
                task=task,
                output_schema=schema,
                image_column=image_col,
                replay=False,
            )
        parsed, parse_error = None, None
        if isinstance(raw, str):
            text = raw
        else:
            text = json.dumps(raw, ensure_ascii=False)  # a JSONL/struct column holding the structured output
            parsed = raw
        if parsed is None and schema is not None:
            parsed, parse_error = parse_json_output(text)
        image = None
        if image_col is not None:
            image = ImageRef.from_cell(v.get(image_col), part.base_dir, _cell_label(v.get(image_col)))
        skip = {text_col, image_col, "task", *VERDICT_COLUMNS}
        return make_candidate(
            id=str(v.get("id") or f"{Path(part.name).name}:{index}"),
            task=task,
            text=text,
            finish_reason=v.get("finish_reason") or "stop",
            prompt=v.get("prompt") or "",
            parsed=parsed,
            parse_error=parse_error,
            output_schema=schema,
            images=[image] if image is not None else [],
            seed={k: x for k, x in v.items() if k not in skip and _plain(x)},
        )


def _cell_label(value: Any) -> str:
    """How an image cell is named in messages: its path when it has one."""
    if isinstance(value, dict):
        value = value.get("path") if not value.get("bytes") else None
    return value if isinstance(value, str) else ""


class _BadRow(Exception):
    pass


# --- writing -----------------------------------------------------------------------------------------


def _out_schema(schema: pa.Schema | None, rows: list[dict[str, Any]]) -> pa.Schema:
    """The input schema (inferred for JSONL) with the verdict columns of a run's shards, features kept."""
    if schema is None:
        keys = list(dict.fromkeys(k for r in rows for k in r if k not in VERDICT_COLUMNS))
        schema = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]).schema
    features = datasets.Features.from_arrow_schema(schema)
    for name in VERDICT_COLUMNS:
        features[name] = FEATURES[name]
    return features.arrow_schema


def _write(path: Path, rows: list[_Row]) -> None:
    values = []
    for r in rows:
        d = dict(r.values)
        d["accepted"] = r.accepted
        d["reject_reason"] = r.reject_reason
        d["verdicts"] = [
            {"validator": v.validator, "keep": v.keep, "reason": v.reason, "score": v.score}
            for v in r.verdicts
        ]
        values.append(d)
    schema = _out_schema(rows[0].schema, values)
    table = pa.Table.from_pylist([{k: d.get(k) for k in schema.names} for d in values], schema=schema)
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f, compression="zstd")


_UNSAFE = re.compile(r"[^\w.-]")


# --- the command -------------------------------------------------------------------------------------


def validate_dataset(
    dataset: str | Path,
    recipe_path: str | Path,
    out: str | Path,
    columns: Columns | None = None,
    batch_size: int = 256,
    overwrite: bool = False,
) -> ValidateResult:
    """Validate every row of `dataset` with the recipe's `validators:` and write OUT (see the module doc).

    Raises RecipeError for a bad recipe and ValidateError for a dataset, mapping or folder that cannot
    be used, before anything is written when it can tell (the mapping is checked per input file).
    """
    started = time.monotonic()
    recipe = load_recipe(recipe_path)
    plan = build_plan(recipe)
    if not plan.validators:
        raise ValidateError(f"{recipe_path}: the recipe has no `validators:` to run")
    kind, parts = open_dataset(dataset, batch_size)
    out = Path(out).resolve()
    if Path(dataset).resolve() in (out, *out.parents):
        raise ValidateError(f"{out}: the output folder must not be the dataset or inside it")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValidateError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
        shutil.rmtree(out)
    schemas = {t.name: t.template.output_schema for t in plan.tasks}
    mapper = _Mapper(columns or Columns(), schemas)
    chunks: list[dict[str, Any]] = []
    tasks: dict[str, None] = {}
    n_rows = 0
    try:
        for batch in _batches(parts, mapper, batch_size):
            n_rows += len(batch)
            stats = _validate_batch(plan.validators, batch)
            for task in dict.fromkeys(r.task for r in batch):
                tasks[task] = None
                for split, keep in (("train", True), ("rejected", False)):
                    rows = [r for r in batch if r.task == task and r.accepted == keep]
                    if rows:
                        _write(out / "data" / task / f"{split}-{len(chunks):05d}.parquet", rows)
            chunks.append(stats.to_dict())
    finally:
        close_validators(plan.validators)
    stats = merge_chunks(chunks, time.monotonic() - started)
    stats["input"] = {"path": str(dataset), "kind": kind, "rows": n_rows}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "stats.json", stats)
    shutil.copyfile(recipe.source_path, out / "recipe.yaml")
    lineage = {"validated": str(dataset), "kind": kind, "validators": [v.name for v in plan.validators]}
    write_card(out, recipe.name, list(tasks), stats, lineage)
    return ValidateResult(out, stats, kind)


def _batches(parts: list[RowPart], mapper: _Mapper, batch_size: int) -> Iterator[list[_Row]]:
    """Mapped rows in batches of about `batch_size`; a batch never splits the samples of one request
    (same `request_key`), so answer_consistency sees them together."""
    pending: list[_Row] = []
    for part in parts:
        cols: tuple[str, str | None] | None = None
        index = 0
        for raw_batch in part.batches:
            for values in raw_batch:
                if isinstance(values, BadRow):  # an unreadable line: keep its text, reject it
                    where = part.where(index)
                    row = _Row(
                        {mapper.columns.text or "text": values.raw},
                        where,
                        problem=f"input: {where}: {values.error}",
                    )
                else:
                    if cols is None:
                        cols = mapper.resolve(part, values)
                    row = mapper.row(part, index, values, *cols)
                    row.schema = part.schema
                index += 1
                task = (
                    row.candidate.task if row.candidate is not None else mapper.columns.task or _task_of(row)
                )
                row.task = _UNSAFE.sub("_", task)
                key = row.values.get("request_key")
                if len(pending) >= batch_size and (
                    key is None or key != pending[-1].values.get("request_key")
                ):
                    yield pending
                    pending = []
                pending.append(row)
    if pending:
        yield pending


def _task_of(row: _Row) -> str:
    task = row.values.get("task")
    return task if isinstance(task, str) and task else DEFAULT_TASK


def _validate_batch(validators: list, batch: list[_Row]) -> ChunkStats:
    live = [r for r in batch if r.candidate is not None]
    verdict_lists = validate_batch(validators, [r.candidate for r in live])
    for r, verdicts in zip(live, verdict_lists, strict=True):
        r.verdicts = list(verdicts)
    stats = ChunkStats(seeds=len(batch))
    stats.count(batch, [v.name for v in validators])
    return stats
