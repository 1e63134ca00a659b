"""What a finished run becomes on the Hub: a plan of repository files, written locally or pushed.

`plan_publish` checks the run is complete, re-shards its Parquet files for the Hub (images embedded, at
most ~`max_shard_bytes` per file, one config per subset) and writes the dataset card; the result is a
`PublishPlan` of `RepoOp`s, each a path in the repository and its local bytes. `write_plan` materialises
it as a folder (`--dry-run`), and `mmsynth.factory.publish.upload.push_plan` commits the same operations,
so a dry run is exactly what would be pushed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets.table import embed_table_storage

from mmsynth.factory.dataset.pictures import card_pictures
from mmsynth.factory.dataset.run_dir import RunDir
from mmsynth.factory.dataset.shards import file_sha256, shard_hashes
from mmsynth.prompts.errors import MmsynthError

DEFAULT_MAX_SHARD_BYTES = 500 * 1000**2
# The `datasets` default for image data, which keeps the Hub's viewer from loading huge row groups.
ROW_GROUP_ROWS = 100
SHARD_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<chunk>\d+)\.parquet$")


class PublishError(MmsynthError):
    """The run cannot be published as asked: incomplete, damaged, empty, or the output folder is taken."""

    exit_code = 2


@dataclass(frozen=True)
class RepoOp:
    """One file of the repository: where it goes and where its bytes are (a local file or in memory)."""

    path_in_repo: str
    size: int
    sha256: str
    source: Path | None = None
    data: bytes | None = None

    @staticmethod
    def from_bytes(path_in_repo: str, data: bytes) -> RepoOp:
        return RepoOp(path_in_repo, len(data), hashlib.sha256(data).hexdigest(), data=data)

    @staticmethod
    def from_file(path_in_repo: str, source: Path) -> RepoOp:
        return RepoOp(path_in_repo, source.stat().st_size, file_sha256(source), source=source)

    def read(self) -> bytes:
        return self.data if self.data is not None else Path(self.source).read_bytes()

    @property
    def git_sha1(self) -> str:
        """The git blob id, which the Hub reports for files it does not keep in LFS."""
        h = hashlib.sha1(f"blob {self.size}\0".encode())
        h.update(self.read())
        return h.hexdigest()


@dataclass(frozen=True)
class SplitShards:
    """The published Parquet files of one subset and split, with what `dataset_info` needs."""

    subset: str
    split: str
    files: tuple[str, ...]  # paths in the repository
    num_examples: int
    num_bytes: int  # in-memory Arrow size, as `datasets` counts it
    download_size: int  # sum of the Parquet file sizes


@dataclass
class PublishPlan:
    """Everything to put in the repository, data first and the card last (see `ordered`)."""

    run_dir: Path
    name: str  # the recipe's name, for commit messages
    ops: list[RepoOp]
    splits: list[SplitShards]
    features: dict[str, datasets.Features]  # subset -> features
    card: str
    skipped_subsets: dict[str, str] = field(default_factory=dict)  # subset -> why it is not published

    @property
    def total_bytes(self) -> int:
        return sum(op.size for op in self.ops)

    def ordered(self) -> list[RepoOp]:
        """Data before anything else and README.md last: a repository is never described by a card whose
        files are not there yet, and an interrupted push leaves no card pointing at missing shards."""
        rank = {"data": 0}
        return sorted(
            self.ops,
            key=lambda op: (op.path_in_repo == "README.md", rank.get(op.path_in_repo.split("/")[0], 1)),
        )


@dataclass(frozen=True)
class PublishOptions:
    include_rejects: bool = False
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    repo_id: str | None = None  # shown in the card's loading example


# --- checking the run -------------------------------------------------------------------------------


def check_complete(run: Path) -> dict[str, Any]:
    """Refuse a folder that is not a finished, intact run; return its manifest.

    A run is finished when `manifest.json` exists (the runner writes it last). Every chunk marker also
    records how many records each task accepted and rejected, so a missing or short shard is named.
    """
    rd = RunDir(run)
    if not run.is_dir():
        raise PublishError(f"{run} does not exist")
    if not (rd.state / "run.json").exists():
        raise PublishError(f"{run} is not an mmsynth run folder (no .mmsynth/run.json)")
    done = rd.finished_chunks()
    if not rd.complete:
        raise PublishError(
            f"{run} is not complete: it has no manifest.json, which a run writes when it finishes "
            f"({done} chunk(s) finished so far, markers in .mmsynth/chunks/). It was interrupted or a model "
            f"failed; run the same `mmsynth run RECIPE --out {run}` command to finish it (it resumes), "
            f"then publish."
        )
    manifest = json.loads(rd.manifest.read_text())
    missing = [n for n in ("stats.json", "recipe.yaml") if not (run / n).exists()]
    problems = [f"{n} is missing" for n in missing]
    for k in range(done):
        info = rd.chunk_info(k)
        for split, counts in (("train", info.get("accepted", {})), ("rejected", info.get("rejected", {}))):
            for task, n in counts.items():
                if not n:
                    continue
                path = run / "data" / task / f"{split}-{k:05d}.parquet"
                if not path.exists():
                    problems.append(
                        f"data/{task}/{path.name} is missing (chunk {k} recorded {n} {split} records)"
                    )
                elif (rows := pq.ParquetFile(path).metadata.num_rows) != n:
                    problems.append(f"data/{task}/{path.name} has {rows} rows; chunk {k} recorded {n}")
    problems += _hash_problems(run, manifest)
    if problems:
        raise PublishError(
            f"{run} is damaged: "
            + "; ".join(problems[:10])
            + ("; ..." if len(problems) > 10 else "")
            + f". Rebuild it with `mmsynth run RECIPE --out {run} --fresh` (cached answers are reused)."
        )
    return manifest


def _hash_problems(run: Path, manifest: dict[str, Any]) -> list[str]:
    """Shards that differ from the sha256 the run recorded in its manifest when it finished: a shard
    swapped for another with the same row count would otherwise publish duplicate ids."""
    recorded = manifest.get("shards")
    if recorded is None:
        print(
            f"[mmsynth] warning: {run / 'manifest.json'} records no shard hashes (a run made before mmsynth "
            "recorded them): only row counts were checked. Rerun with --fresh to record them.",
            file=sys.stderr,
        )
        return []
    problems = []
    on_disk = shard_hashes(run)
    for rel, sha in sorted(recorded.items()):
        if rel not in on_disk:
            problems.append(f"{rel} is missing (the manifest records it)")
        elif on_disk[rel] != sha:
            problems.append(
                f"{rel} is not the shard the run wrote (sha256 {on_disk[rel][:12]}, recorded {sha[:12]})"
            )
    problems += [
        f"{rel} is not in the manifest (added after the run finished)"
        for rel in sorted(set(on_disk) - set(recorded))
    ]
    return problems


# --- re-sharding ------------------------------------------------------------------------------------


def run_shards(run: Path) -> dict[tuple[str, str], list[Path]]:
    """(subset, split) -> the run's shard files in chunk order."""
    out: dict[tuple[str, str], list[Path]] = {}
    for f in sorted((run / "data").glob("*/*.parquet")):
        m = SHARD_RE.match(f.name)
        if m:
            out.setdefault((f.parent.name, m["split"]), []).append(f)
    for files in out.values():
        files.sort(key=lambda p: int(SHARD_RE.match(p.name)["chunk"]))
    return out


def _rows(files: list[Path], schema: pa.Schema) -> Iterator[pa.Table]:
    """One-row tables in order, images embedded as bytes (a path-only image would rot once uploaded)."""
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=ROW_GROUP_ROWS):
            table = embed_table_storage(pa.Table.from_batches([batch])).cast(schema)
            for i in range(table.num_rows):
                yield table.slice(i, 1)


def reshard(files: list[Path], out_dir: Path, split: str, max_bytes: int) -> tuple[list[Path], int, int]:
    """Rewrite `files` as `<split>-NNNNN-of-MMMMM.parquet` files under `out_dir`; returns (files, rows,
    Arrow bytes). A file is closed before the row that would take its data past `max_bytes` (a single
    larger row gets a file of its own). Deterministic: the same input gives byte-identical files, which
    is what lets an interrupted push skip the files already uploaded."""
    schema = pq.read_schema(files[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    parts: list[Path] = []
    writer: pq.ParquetWriter | None = None
    pending: list[pa.Table] = []
    size = rows = total_bytes = 0

    def flush() -> None:
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
            pending.clear()

    def close() -> None:
        nonlocal writer
        if writer is not None:
            flush()
            writer.close()
            writer = None

    for row in _rows(files, schema):
        n = row.nbytes
        if writer is not None and size + n > max_bytes:
            close()
        if writer is None:
            parts.append(out_dir / f".{split}-{len(parts):05d}.tmp")
            writer = pq.ParquetWriter(parts[-1], schema, compression="zstd")
            size = 0
        pending.append(row)
        if len(pending) == ROW_GROUP_ROWS:
            flush()
        size += n
        rows += 1
        total_bytes += n
    close()
    final = [out_dir / f"{split}-{i:05d}-of-{len(parts):05d}.parquet" for i in range(len(parts))]
    for tmp, dst in zip(parts, final, strict=True):
        os.replace(tmp, dst)
    return final, rows, total_bytes


# --- the plan ---------------------------------------------------------------------------------------


def plan_publish(run: Path, staging: Path, options: PublishOptions = PublishOptions()) -> PublishPlan:
    """Check the run, write its Hub shards under `staging` (emptied first) and build the card."""
    from mmsynth.factory.publish.card import CardInputs, render_card

    run = Path(run).resolve()
    manifest = check_complete(run)
    if options.max_shard_bytes < 1:
        raise PublishError("the shard size limit must be a positive number of bytes")
    stats = json.loads((run / "stats.json").read_text())
    recipe_text = redact_secrets((run / "recipe.yaml").read_text())
    recipe = yaml.safe_load(recipe_text) or {}
    shards = run_shards(run)
    splits_wanted = ("train", "rejected") if options.include_rejects else ("train",)

    if staging.exists():
        shutil.rmtree(staging / "data", ignore_errors=True)
    ops: list[RepoOp] = []
    splits: list[SplitShards] = []
    features: dict[str, datasets.Features] = {}
    skipped: dict[str, str] = {}
    subsets = subset_order(recipe, {s for s, _ in shards})
    for subset in subsets:
        published = False
        for split in splits_wanted:
            files = shards.get((subset, split))
            if not files:
                continue
            out, rows, nbytes = reshard(files, staging / "data" / subset, split, options.max_shard_bytes)
            paths = tuple(f"data/{subset}/{f.name}" for f in out)
            ops += [RepoOp.from_file(p, f) for p, f in zip(paths, out, strict=True)]
            splits.append(SplitShards(subset, split, paths, rows, nbytes, sum(f.stat().st_size for f in out)))
            features[subset] = datasets.Features.from_arrow_schema(pq.read_schema(out[0]))
            published = True
        if not published:
            rejected = stats.get("tasks", {}).get(subset, {}).get("rejected", 0)
            skipped[subset] = (
                f"no accepted records ({rejected} rejected; publish them with --include-rejects)"
                if not options.include_rejects
                else "no records"
            )
    if not splits:
        raise PublishError(
            f"{run} has no accepted records, so there is nothing to publish"
            + ("" if options.include_rejects else " (add --include-rejects to publish the rejected ones)")
        )

    ops.append(RepoOp.from_bytes("recipe.yaml", recipe_text.encode()))
    ops.append(RepoOp.from_bytes("stats.json", (run / "stats.json").read_bytes()))
    for t in sorted((run / "templates").glob("*.j2")):
        ops.append(RepoOp.from_file(f"templates/{t.name}", t))
    gain = {name: run / "gain" / name for name in ("report.md", "report.json", "gain.png")}
    gain = {k: p for k, p in gain.items() if p.exists()}
    ops += [RepoOp.from_file(f"gain/{name}", p) for name, p in gain.items()]
    # Drawn again from the run's shards (the same drawings as the run folder's, for a run made before
    # they existed too); a rejected record is shown only when rejected records are published.
    pictures = card_pictures(run, subsets, stats, include_rejected=options.include_rejects)
    ops += [RepoOp.from_bytes(p.path, p.data) for p in pictures]

    inputs = CardInputs(
        recipe=recipe,
        recipe_text=recipe_text,
        lineage=manifest.get("lineage", {}),
        stats=stats,
        splits=splits,
        features=features,
        skipped=skipped,
        examples={s.subset: examples(staging / s.files[0]) for s in splits if s.split == "train"},
        gain_report=gain["report.md"].read_text() if "report.md" in gain else None,
        gain_plot="gain/gain.png" if "gain.png" in gain else None,
        include_rejects=options.include_rejects,
        repo_id=options.repo_id,
        pictures=tuple(pictures),
        template_meta={t.stem: front_matter(t) for t in sorted((run / "templates").glob("*.j2"))},
    )
    card = render_card(inputs)
    ops.append(RepoOp.from_bytes("README.md", card.encode()))
    plan = PublishPlan(run, str(recipe.get("name", run.name)), ops, splits, features, card, skipped)
    refuse_token_leak(plan)
    return plan


def subset_order(recipe: dict[str, Any], present: set[str]) -> list[str]:
    """The recipe's task and document order first, then any other subset found on disk."""
    named = [t.get("name") for t in recipe.get("tasks") or []] + [
        d.get("name") for d in recipe.get("documents") or []
    ]
    ordered = [n for n in named if n in present]
    return ordered + sorted(present - set(ordered))


def examples(path: Path, n: int = 3) -> list[dict[str, Any]]:
    """The first `n` rows of a shard without image bytes, for the card."""
    pf = pq.ParquetFile(path)
    cols = [
        c for c in ("id", "prompt", "output", "parsed", "model", "template_id") if c in pf.schema_arrow.names
    ]
    batch = next(pf.iter_batches(batch_size=n, columns=cols), None)
    return batch.to_pylist() if batch is not None else []


def front_matter(path: Path) -> dict[str, Any]:
    """A template's YAML front matter (id, version, task, description); {} when it has none."""
    text = path.read_text(errors="replace")
    if not text.startswith("---"):
        return {}
    try:
        return yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return {}


# --- secrets ----------------------------------------------------------------------------------------

# Keys whose values are credentials (backend `options` can carry an API key); `max_tokens` must not match.
SECRET_KEY_RE = re.compile(
    r"(?P<key>\b[\w-]*(?:api[_-]?key|access[_-]?key|secret|password|passwd|auth|authorization|_token)\b|\btoken\b)"
    r"(?P<sep>['\"]?[ \t]*:[ \t]*)(?P<value>\"[^\"]*\"|'[^']*'|[^,}\]\s#][^,}\]#\n]*)",
    re.IGNORECASE,
)


def redact_secrets(text: str) -> str:
    """The recipe as published: values of credential-like keys replaced by `<redacted>`."""
    return SECRET_KEY_RE.sub(lambda m: f'{m["key"]}{m["sep"]}"<redacted>"', text)


def refuse_token_leak(plan: PublishPlan) -> None:
    """Refuse to publish when the Hub token (from HF_TOKEN or the login cache) is inside any text file."""
    token = _hub_token()
    if not token:
        return
    for op in plan.ops:
        if op.path_in_repo.endswith((".md", ".yaml", ".json", ".j2")) and token.encode() in op.read():
            raise PublishError(
                f"{op.path_in_repo} would contain your Hugging Face token; remove it from the run "
                f"folder before publishing"
            )


def _hub_token() -> str | None:
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception:  # a broken login cache must not stop a dry run
        return None


# --- dry run ----------------------------------------------------------------------------------------


def write_plan(plan: PublishPlan, out: Path) -> None:
    """Write the repository exactly as it would be pushed into `out`: nothing more, nothing less."""
    out = Path(out)
    wanted = {op.path_in_repo for op in plan.ops}
    for op in plan.ops:
        dst = out / op.path_in_repo
        dst.parent.mkdir(parents=True, exist_ok=True)
        if op.source is not None and Path(op.source).resolve() == dst.resolve():
            continue
        if op.source is not None:
            shutil.copyfile(op.source, dst)
        else:
            dst.write_bytes(op.data)
    for f in sorted(out.rglob("*"), reverse=True):  # leftovers of an earlier dry run into the same folder
        rel = f.relative_to(out).as_posix()
        if f.is_file() and rel not in wanted:
            f.unlink()
        elif f.is_dir() and not any(f.iterdir()):
            f.rmdir()


def check_dry_run_dir(out: Path, run: Path) -> None:
    """`out` must be new, empty, or an earlier dry run (its README is an mmsynth card); never the run."""
    out, run = Path(out).resolve(), Path(run).resolve()
    if out == run or run in out.parents or out in run.parents:
        raise PublishError(f"--dry-run {out} overlaps the run folder {run}; choose a separate folder")
    if not out.exists() or not any(out.iterdir()):
        return
    readme = out / "README.md"
    if readme.exists() and "mmsynth-publish" in readme.read_text(errors="replace"):
        return
    raise PublishError(
        f"--dry-run {out} exists, is not empty and is not an earlier dry run; choose another folder"
    )
