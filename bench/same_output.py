"""Digest the output of `mmsynth run` on the shipped CPU recipes, to check a refactor changes nothing.

    python bench/same_output.py digest OUT.json            # run every CPU recipe, write their digests
    python bench/same_output.py compare BEFORE.json AFTER.json

A digest holds, per recipe, the sha256 of every file in the run folder, with the values that differ
between two identical runs taken out first: timings (`seconds`, `t`, throughput) and the machine's
absolute paths. Shards (Parquet) are digested by their rows, so the same records with the same ids,
request keys and lineage compare equal; their raw bytes are digested too and reported separately
(pyarrow writes the same bytes for the same table, so a difference there is worth a look).
Recipes that need a GPU or a vLLM server are skipped unless `--all` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CPU_RECIPES = ["quickstart.yaml", "captions.yaml", "qa.yaml", "images.yaml"]
VOLATILE = {
    "t",
    "seconds",
    "chunk_seconds_total",
    "wall_seconds_last_session",
    "throughput",
    "elapsed",
    "created_at",
    "created",
    "latency_s",
}


def _scrub(value: Any, root: str) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v, root) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_scrub(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<RUN>")
    return value


def _digest_file(path: Path, root: Path) -> dict[str, str]:
    raw = path.read_bytes()
    out = {"bytes": hashlib.sha256(raw).hexdigest()}
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        text = json.dumps(_scrub(rows, str(root)), sort_keys=True, default=repr)
    elif path.suffix in {".json", ".jsonl"}:
        lines = raw.decode().splitlines() if path.suffix == ".jsonl" else [raw.decode()]
        text = "\n".join(json.dumps(_scrub(json.loads(x), str(root)), sort_keys=True) for x in lines if x)
    elif path.suffix == ".sqlite":
        import sqlite3

        con = sqlite3.connect(path)
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table' order by 1")]
        dump = {}
        for t in tables:
            cur = con.execute(f"select * from {t}")
            cols = [c[0] for c in cur.description]
            dump[t] = sorted(
                json.dumps(_scrub(dict(zip(cols, r, strict=True)), str(root)), default=repr) for r in cur
            )
        con.close()
        text = json.dumps(dump, sort_keys=True)
        out["bytes"] = "(sqlite page layout not compared)"
    else:
        text = raw.decode(errors="replace").replace(str(root), "<RUN>")
    out["content"] = hashlib.sha256(text.encode()).hexdigest()
    return out


def digest_run(run_dir: Path) -> dict[str, dict[str, str]]:
    """Per file (relative path) of a run folder: content digest (volatile values removed) and raw bytes."""
    return {
        str(p.relative_to(run_dir)): _digest_file(p, run_dir)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and not p.name.endswith((".lock", "-journal", "-wal", "-shm"))
    }


def run_recipes(recipes: list[str], work: Path) -> dict[str, Any]:
    # A fresh MMSYNTH_HOME: the tiny models are built by the code under test, so a change in what the
    # builders write (their files are part of each model's revision, hence of every request key) shows.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMSYNTH_HOME": str(work / "mmsynth-home")}
    out: dict[str, Any] = {}
    for name in recipes:
        run_dir = work / Path(name).stem
        cmd = [sys.executable, "-m", "mmsynth.factory.cli.main", "run", str(ROOT / "recipes" / name)]
        proc = subprocess.run([*cmd, "--out", str(run_dir), "-q"], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name}: mmsynth run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        out[name] = digest_run(run_dir)
        print(f"{name}: {len(out[name])} files", flush=True)
    return out


def compare(before: dict[str, Any], after: dict[str, Any]) -> int:
    """Print every difference; 0 when every recipe's files have the same content."""
    bad = 0
    for recipe in sorted(set(before) | set(after)):
        a, b = before.get(recipe, {}), after.get(recipe, {})
        for f in sorted(set(a) | set(b)):
            if f not in a or f not in b:
                print(f"{recipe}: {f} only in {'after' if f in b else 'before'}")
                bad += 1
            elif a[f]["content"] != b[f]["content"]:
                print(f"{recipe}: {f} differs")
                bad += 1
            elif a[f]["bytes"] != b[f]["bytes"]:
                print(f"{recipe}: {f} same rows, other bytes")
    files = sum(len(v) for v in after.values())
    print(f"{len(after)} recipes, {files} files: {'identical' if not bad else f'{bad} differences'}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("digest")
    d.add_argument("out")
    d.add_argument("--recipes", nargs="*", default=CPU_RECIPES)
    c = sub.add_parser("compare")
    c.add_argument("before")
    c.add_argument("after")
    args = ap.parse_args(argv)
    if args.cmd == "compare":
        return compare(json.loads(Path(args.before).read_text()), json.loads(Path(args.after).read_text()))
    with tempfile.TemporaryDirectory(prefix="mmsynth-same-") as tmp:
        digests = run_recipes(args.recipes, Path(tmp))
    Path(args.out).write_text(json.dumps(digests, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
