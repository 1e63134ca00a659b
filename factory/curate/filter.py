"""Running a recipe's validator stack over a dataset that already exists (`mmsynth validate`).

Input: a Parquet file or folder, a JSONL file, a folder written by `datasets.save_to_disk`, or an
mmsynth run folder (its accepted records). Each row becomes a Candidate through a column mapping;
the stack runs in batches exactly as in a run (run_stack, then remember_accepted), and every row is
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
from mmsynth.factory.dataset.run_dir import write_json_atomic
from mmsynth.factory.dataset.shards import FEATURES
from mmsynth.factory.engine.plan import build_plan
from mmsynth.factory.engine.stats import ChunkStats, merge_chunks
from mmsynth.factory.recipe import load_recipe
from mmsynth.prompts.media import ImageRef
from mmsynth.validators import Candidate, Verdict, remember_accepted, run_stack
from mmsynth.validators.text.schema import parse_json_output

VERDICT_COLUMNS = ("accepted", "reject_reason", "verdicts")
DEFAULT_TASK = "data"


class ValidateError(Exception):
    """The dataset, the column mapping or the output folder cannot be used as asked."""

    exit_code = 2


@dataclass
class Columns:
    """Which input columns hold what; None: the default (see `resolve`)."""

    text: str | None = None
    image: str | None = None
    task: str | None = None  # a fixed task name for every row (else the `task` column, else "data")


@dataclass
class Part:
    """Rows read from one place (a file, or a split of a saved dataset), with its Arrow schema if known."""

    name: str  # shown in errors: a file path, or "DIR[split]"
    base_dir: Path  # relative image paths are resolved here
    schema: pa.Schema | None
    batches: Iterator[list[dict[str, Any] | str]]  # a str is an unreadable row: "error\x00raw text"
    lines: list[int] | None = None  # JSONL: the file line of each row read so far

    def where(self, index: int) -> str:
        """Where row `index` is, for messages: `file.jsonl:LINE` or `file.parquet: row N` (from 0)."""
        return f"{self.name}:{self.lines[index]}" if self.lines is not None else f"{self.name}: row {index}"


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


def open_dataset(path: str | Path, batch_size: int = 256) -> tuple[str, list[Part]]:
    """(kind, parts) for the dataset at `path`; ValidateError when it is none of the known layouts."""
    p = Path(path)
    if not p.exists():
        raise ValidateError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix == ".parquet":
            return "parquet", [_parquet_part(p, batch_size)]
        if p.suffix in (".jsonl", ".json"):
            return "jsonl", [_jsonl_part(p, batch_size)]
        raise ValidateError(f"{p}: not a .parquet or .jsonl file")
    if (p / "dataset_dict.json").exists() or (
        (p / "dataset_info.json").exists() and (p / "state.json").exists()
    ):
        return "datasets", _saved_parts(p, batch_size)
    run_files = sorted(p.glob("data/*/train-*.parquet"))
    if run_files and ((p / ".mmsynth").is_dir() or (p / "manifest.json").exists()):
        return "run", [_parquet_part(f, batch_size) for f in run_files]
    files = sorted(f for f in p.rglob("*.parquet") if not any(part.startswith(".") for part in f.parts))
    if files:
        return "parquet", [_parquet_part(f, batch_size) for f in files]
    raise ValidateError(
        f"{p}: no dataset found (expected Parquet files, a JSONL file, a `datasets.save_to_disk` folder or an mmsynth run)"
    )


def _parquet_part(path: Path, batch_size: int) -> Part:
    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # a corrupt or non-Parquet file: name it
        raise ValidateError(f"{path}: cannot read Parquet: {e}") from None
    return Part(str(path), path.parent, f.schema_arrow, (b.to_pylist() for b in f.iter_batches(batch_size)))


def _jsonl_part(path: Path, batch_size: int) -> Part:
    lines: list[int] = []

    def batches() -> Iterator[list[dict[str, Any] | str]]:
        batch: list[dict[str, Any] | str] = []
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except ValueError as e:
                    value = f"invalid JSON: {e}"
                if not isinstance(value, (dict, str)):
                    value = f"a JSON line must be an object, got {type(value).__name__}"
                lines.append(line_no)
                batch.append(value if isinstance(value, dict) else f"{value}\x00{line.rstrip()}")
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    return Part(str(path), path.parent, None, batches(), lines)


def _saved_parts(path: Path, batch_size: int) -> list[Part]:
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise ValidateError(f"{path}: cannot load the saved dataset: {e}") from None
    splits = ds.items() if isinstance(ds, datasets.DatasetDict) else [("train", ds)]
    parts = []
    for split, d in splits:
        table = d.with_format("arrow")[:] if len(d) else None
        schema = d.features.arrow_schema
        batches = (
            (b.to_pylist() for b in table.to_batches(max_chunksize=batch_size))
            if table is not None
            else iter(())
        )
        parts.append(Part(f"{path}[{split}]", path, schema, batches))
    return parts


# --- rows to candidates ------------------------------------------------------------------------------


def _image(value: Any, base_dir: Path) -> ImageRef | None:
    if value is None:
        return None
    if isinstance(value, ImageRef):
        return value
    if isinstance(value, (bytes, bytearray)):
        return ImageRef.from_bytes(bytes(value))
    if isinstance(value, dict):
        if value.get("bytes"):
            return ImageRef.from_bytes(value["bytes"])
        value = value.get("path")
        if value is None:
            return None
    if isinstance(value, str):
        path = Path(value).expanduser()
        return ImageRef.from_path(path if path.is_absolute() else base_dir / path)
    raise ValueError(f"not an image: {type(value).__name__}")


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

    def resolve(self, part: Part, first: dict[str, Any]) -> tuple[str, str | None]:
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
        self, part: Part, index: int, values: dict[str, Any], text_col: str, image_col: str | None
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
        self, part: Part, index: int, v: dict[str, Any], text_col: str, image_col: str | None
    ) -> Candidate:
        is_run = "seed_id" in v and "request_key" in v  # a row written by mmsynth: its own columns
        task = (
            self.columns.task or (v.get("task") if isinstance(v.get("task"), str) else None) or DEFAULT_TASK
        )
        raw = v.get(text_col)
        if text_col not in v:
            raise _BadRow(f"no column {text_col!r}")
        if raw is None:
            raise _BadRow(f"column {text_col!r} is null")
        parsed, parse_error = None, None
        if isinstance(raw, str):
            text = raw
        else:
            text = json.dumps(raw, ensure_ascii=False)  # a JSONL/struct column holding the structured output
            parsed = raw
        schema = self.schemas.get(task)
        if is_run and v.get("parsed") is not None:
            parsed = json.loads(v["parsed"])
        elif parsed is None and schema is not None:
            parsed, parse_error = parse_json_output(text)
        images: list[ImageRef] = []
        if image_col is not None:
            img = _image(v.get(image_col), part.base_dir)
            if img is not None:
                images.append(img)
        if is_run:
            seed = json.loads(v["seed"]) if v.get("seed") else {}
            if v.get("texts"):  # an assembled document: validators see its aligned texts and image hashes
                doc_images = [_image(x, part.base_dir) for x in v.get("images") or []]
                title = parsed.get("title") if isinstance(parsed, dict) else None
                parsed = {
                    "title": title,
                    "texts": list(v["texts"]),
                    "images": [None if x is None else x.sha256 for x in doc_images],
                }
                images = [x for x in doc_images if x is not None]
        else:
            skip = {text_col, image_col, "task", *VERDICT_COLUMNS}
            seed = {k: x for k, x in v.items() if k not in skip and _plain(x)}
        return Candidate(
            id=str(v.get("id") or f"{Path(part.name).name}:{index}"),
            task=task,
            text=text,
            finish_reason=v.get("finish_reason") or "stop",
            prompt_text=v.get("prompt") or "",
            parsed=parsed,
            parse_error=parse_error,
            output_schema=schema,
            images=tuple(images),
            seed=seed,
        )


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


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
        for v in plan.validators:
            close = getattr(v, "close", None)
            if close is not None:
                close()
    stats = merge_chunks(chunks, time.monotonic() - started)
    stats["input"] = {"path": str(dataset), "kind": kind, "rows": n_rows}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "stats.json", stats)
    shutil.copyfile(recipe.source_path, out / "recipe.yaml")
    lineage = {"validated": str(dataset), "kind": kind, "validators": [v.name for v in plan.validators]}
    write_card(out, recipe.name, list(tasks), stats, lineage)
    return ValidateResult(out, stats, kind)


def _batches(parts: list[Part], mapper: _Mapper, batch_size: int) -> Iterator[list[_Row]]:
    """Mapped rows in batches of about `batch_size`; a batch never splits the samples of one request
    (same `request_key`), so answer_consistency sees them together."""
    pending: list[_Row] = []
    for part in parts:
        cols: tuple[str, str | None] | None = None
        index = 0
        for raw_batch in part.batches:
            for values in raw_batch:
                if isinstance(values, str):  # an unreadable line: keep its text, reject it
                    error, _, line = values.partition("\x00")
                    where = part.where(index)
                    row = _Row(
                        {mapper.columns.text or "text": line}, where, problem=f"input: {where}: {error}"
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
    candidates = [r.candidate for r in live]
    verdict_lists = run_stack(validators, candidates)
    for r, verdicts in zip(live, verdict_lists, strict=True):
        r.verdicts = list(verdicts)
    remember_accepted(validators, candidates, verdict_lists)
    stats = ChunkStats(seeds=len(batch))
    stats.count(batch, [v.name for v in validators])
    return stats
