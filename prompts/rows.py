"""Reading the rows of a dataset on disk: the one reader of seeds, `mmsynth validate`, decontamination
and the trainer.

Layouts (`open_rows`): a Parquet, JSON Lines or CSV file; a folder written by `datasets.save_to_disk`;
an mmsynth run folder (`data/<task>/<split>-*.parquet` beside `.mmsynth/` or `manifest.json`); a folder
of Parquet files; and, with `hub=True`, anything else `datasets.load_dataset` reads (a data folder, a
Hub id). Image cells come as stored (`{bytes, path}`), never decoded: `ImageRef.from_cell` reads them.

pyarrow and datasets are imported inside the functions, so importing mmsynth.prompts needs neither.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what `save_to_disk` writes (a DatasetDict, a Dataset)


class RowsError(ValueError):
    """The path is not a dataset in any layout this reader knows, or cannot be opened; says which and why."""


@dataclass(frozen=True)
class BadRow:
    """A row that could not be parsed (a JSON Lines line that is not an object): why, and its raw text."""

    error: str
    raw: str


@dataclass
class RowPart:
    """Rows from one place: a file, or one split of a saved dataset; read lazily, in batches."""

    name: str  # in messages: a file path, or "DIR[split]"
    split: str
    base_dir: Path  # relative image paths resolve here
    schema: Any  # the pyarrow.Schema, None for JSON Lines (known only once read)
    batches: Iterator[list[dict[str, Any] | BadRow]]
    lines: list[int] | None = None  # JSON Lines: the file line of each row read so far

    def where(self, index: int) -> str:
        """Row `index` (from 0) for messages: `file.jsonl:LINE` or `file.parquet: row N`."""
        return f"{self.name}:{self.lines[index]}" if self.lines is not None else f"{self.name}: row {index}"


def open_rows(
    path: str | Path,
    *,
    columns: Sequence[str] | None = None,
    batch_size: int = 256,
    hub: bool = False,
) -> tuple[str, list[RowPart]]:
    """(kind, parts) of the dataset at `path`: kind is parquet, jsonl, csv, datasets, run or hub.

    `columns` reads only those (where present; JSON Lines rows keep all keys). RowsError when `path`
    is none of the layouts (with `hub`, when `datasets.load_dataset` cannot read it either).
    """
    p = Path(path).expanduser()
    if not p.exists():
        if hub:
            return "hub", _hub_parts(str(path), columns, batch_size)
        raise RowsError(f"{p}: no such file or folder")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".parquet":
            return "parquet", [parquet_part(p, columns, batch_size)]
        if suffix in (".jsonl", ".json"):
            return "jsonl", [_jsonl_part(p, batch_size)]
        if suffix == ".csv":
            splits = _load(str(p), "csv", data_files={"train": str(p)})
            return "csv", _loaded_parts(splits, str(p), p.parent, columns, batch_size)
        raise RowsError(f"{p}: not a .parquet, .jsonl or .csv file")
    if is_saved_dataset(p):
        return "datasets", _loaded_parts(load_saved(p), str(p), p, columns, batch_size)
    if is_run_folder(p):
        return "run", [parquet_part(f, columns, batch_size) for f in run_shards(p)]
    files = sorted(
        f for f in p.rglob("*.parquet") if not any(x.startswith(".") for x in f.relative_to(p).parts)
    )
    if files:  # read as they are (no conversion into a `datasets` cache); image paths relative to `p`
        return "parquet", [parquet_part(f, columns, batch_size, base_dir=p, root=p) for f in files]
    if hub:
        return "hub", _hub_parts(str(p), columns, batch_size)
    raise RowsError(
        f"{p}: no dataset found (expected Parquet files, a JSONL file, a `datasets.save_to_disk` folder or an mmsynth run)"
    )


def iter_rows(
    path: str | Path, *, columns: Sequence[str] | None = None, hub: bool = False
) -> Iterator[tuple[dict[str, Any], RowPart]]:
    """Every row of every part, with its part; a BadRow stops with a ValueError naming its file and line."""
    _, parts = open_rows(path, columns=columns, hub=hub)
    for part in parts:
        index = 0
        for batch in part.batches:
            for row in batch:
                if isinstance(row, BadRow):
                    raise ValueError(f"{part.where(index)}: {row.error}")
                index += 1
                yield row, part


# --- layouts ---------------------------------------------------------------------------------------


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in SAVED_MARKERS)


def run_shards(path: Path, split: str = "train") -> list[Path]:
    """The `split` shards of a run folder, sorted: data/<task>/<split>-NNNNN.parquet."""
    return sorted(path.glob(f"data/*/{split}-*.parquet"))


def is_run_folder(path: Path) -> bool:
    """An mmsynth run: train shards and the run's own marker (a Hub dataset with configs has the shards only)."""
    return bool(run_shards(path)) and ((path / ".mmsynth").is_dir() or (path / "manifest.json").exists())


TOO_LONG = b""  # jsonl_lines' stand-in for a line over `max_bytes` (a real line is never empty)


def jsonl_lines(path: Path, max_bytes: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line) for every non-blank line, streaming. With `max_bytes`, a longer
    line comes as TOO_LONG, skipped in bounded pieces so that its bytes are never held whole."""
    for lineno, _, raw in jsonl_lines_at(path, max_bytes):
        yield lineno, raw


def jsonl_lines_at(path: Path, max_bytes: int | None = None) -> Iterator[tuple[int, int, bytes]]:
    """jsonl_lines with each line's byte offset: (line number, offset, raw line), for a reader that
    comes back to a line later (the seed reader's duplicate-id check)."""
    with path.open("rb") as f:
        lineno = 0
        while True:
            offset = f.tell()
            if not (raw := f.readline(-1 if max_bytes is None else max_bytes + 1)):
                return
            lineno += 1
            if max_bytes is not None and len(raw) > max_bytes and not raw.endswith(b"\n"):
                while (more := f.readline(1 << 20)) and not more.endswith(b"\n"):
                    pass
                yield lineno, offset, TOO_LONG
            elif raw.strip():
                yield lineno, offset, raw


def load_saved(path: Path, split: str | None = None) -> dict[str, Any]:
    """The splits of a `save_to_disk` folder ({"train": ds} for a single Dataset), features as saved;
    only `split` when given (RowsError naming the splits there when it is not)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:  # a damaged folder: name it
        raise RowsError(f"{path}: cannot load the saved dataset: {e}") from None
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    if split is not None:
        if split not in splits:
            raise RowsError(f"{path}: no split '{split}'; splits: {', '.join(splits)}")
        splits = {split: splits[split]}
    return splits


def load_split(
    path: str,
    split: str = "train",
    *,
    name: str | None = None,
    revision: str | None = None,
    streaming: bool = False,
    local: bool = False,
):
    """One split as a `datasets.Dataset` (`IterableDataset` when streaming), image columns undecoded:
    `load_from_disk` for a saved folder, else `load_dataset` (a data folder; a Hub id unless `local`)."""
    import datasets

    p = Path(path)
    if local and is_saved_dataset(p):
        return undecoded(load_saved(p, split)[split])
    ds = datasets.load_dataset(path, name, split=split, revision=revision, streaming=streaming)
    return undecoded(ds)


def undecoded(ds):
    """`ds` with its Image columns read as stored bytes ({bytes, path}), not as PIL images."""
    import datasets

    for column, feature in (ds.features or {}).items():
        if isinstance(feature, datasets.Image) and feature.decode:
            ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds


# --- parts -----------------------------------------------------------------------------------------


def parquet_part(
    path: Path,
    columns: Sequence[str] | None = None,
    batch_size: int = 256,
    *,
    base_dir: Path | None = None,
    root: Path | None = None,
) -> RowPart:
    """One Parquet file, read in batches; its split from its name (or folder names below `root`)."""
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # a corrupt or non-Parquet file: name it
        raise RowsError(f"{path}: cannot read Parquet: {e}") from None
    names = f.schema_arrow.names
    keep = None if columns is None else [c for c in columns if c in names]
    schema = f.schema_arrow if keep is None else _select(f.schema_arrow, keep)
    batches = (b.to_pylist() for b in f.iter_batches(batch_size, columns=keep))
    return RowPart(str(path), split_of(path, root), base_dir or path.parent, schema, batches)


def _select(schema, names: list[str]):
    import pyarrow as pa

    return pa.schema([schema.field(n) for n in names], metadata=schema.metadata)


_SPLIT_NAMES = {"train": "train", "test": "test", "validation": "validation", "valid": "validation"}
_SPLIT_NAMES |= {"dev": "validation", "rejected": "rejected"}


def split_of(path: Path, root: Path | None = None) -> str:
    """The split a data file belongs to, by the names `datasets` goes by: `test` for `test-00000.parquet`
    or `test/part.parquet` (below `root`); `train` when no name says."""
    names = [path.name, *(reversed(path.relative_to(root).parts[:-1]) if root is not None else ())]
    for name in names:
        first = re.split(r"[-_.]", name, maxsplit=1)[0].lower()
        if first in _SPLIT_NAMES:
            return _SPLIT_NAMES[first]
    return "train"


def _jsonl_part(path: Path, batch_size: int) -> RowPart:
    lines: list[int] = []

    def batches() -> Iterator[list[dict[str, Any] | BadRow]]:
        batch: list[dict[str, Any] | BadRow] = []
        for lineno, raw in jsonl_lines(path):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            try:
                value: Any = json.loads(raw)
            except UnicodeDecodeError as e:
                value = BadRow(f"invalid UTF-8: {e.reason}", text)
            except ValueError as e:
                value = BadRow(f"invalid JSON: {e}", text)
            if not isinstance(value, (dict, BadRow)):
                value = BadRow(f"a JSON line must be an object, got {type(value).__name__}", text)
            lines.append(lineno)
            batch.append(value)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    return RowPart(str(path), "train", path.parent, None, batches(), lines)


def _load(shown: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    import datasets

    try:
        loaded = datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # a missing Hub id, an unreadable folder: say which
        raise RowsError(f"{shown}: cannot load with datasets.load_dataset: {e}") from None
    return dict(loaded)


def _hub_parts(source: str, columns: Sequence[str] | None, batch_size: int) -> list[RowPart]:
    base = Path(source)
    return _loaded_parts(
        _load(source, source), source, base if base.is_dir() else Path.cwd(), columns, batch_size
    )


def _loaded_parts(
    splits: dict[str, Any], name: str, base_dir: Path, columns: Sequence[str] | None, batch_size: int
) -> list[RowPart]:
    parts = []
    for split, ds in splits.items():
        if columns is not None:
            ds = ds.select_columns([c for c in columns if c in ds.column_names])
        arrow = ds.with_format("arrow")  # cells as stored: an Image cell is {bytes, path}, not decoded
        batches = (t.to_pylist() for t in arrow.iter(batch_size)) if len(ds) else iter(())
        parts.append(RowPart(f"{name}[{split}]", split, base_dir, ds.features.arrow_schema, batches))
    return parts
