"""`mmsynth publish RUN_DIR --repo OWNER/NAME`: a finished run to a Hub dataset repository, or a local dry run."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)B?\s*$")
UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}


def parse_size(text: str) -> int:
    """'500MB' -> 500_000_000; plain numbers are bytes."""
    m = SIZE_RE.match(text)
    if not m or float(m[1]) <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500MB, 2GB, 100kB)")
    return int(float(m[1]) * UNITS[m[2].lower()])


def repo_id(text: str) -> str:
    if not REPO_RE.match(text):
        raise argparse.ArgumentTypeError(f"not a repository id: {text!r} (expected OWNER/NAME)")
    return text


def add_publish_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish",
        help="publish a finished run to a Hugging Face Hub dataset repository (or write it locally with --dry-run)",
    )
    p.add_argument("run_dir", help="a finished run folder (`mmsynth run ... --out RUN_DIR`)")
    p.add_argument("--repo", required=True, type=repo_id, help="dataset repository, OWNER/NAME")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument(
        "--private", dest="private", action="store_true", default=True, help="a private repository (default)"
    )
    vis.add_argument("--public", dest="private", action="store_false", help="a public repository")
    p.add_argument("--revision", help="branch to commit to (created when missing); default: main")
    p.add_argument("--message", help="commit message (batches get ' (i/n)' appended)")
    p.add_argument(
        "--include-rejects", action="store_true", help="also publish rejected records, as split `rejected`"
    )
    p.add_argument(
        "--max-shard-size",
        type=parse_size,
        default="500MB",
        help="largest Parquet file to write (default 500MB; e.g. 2GB, 100kB)",
    )
    p.add_argument(
        "--dry-run",
        metavar="DIR",
        help="write the exact repository folder into DIR instead of uploading (nothing leaves this machine)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_publish)


def cmd_publish(args: argparse.Namespace) -> int:
    from mmsynth.factory.publish.plan import (
        PublishOptions,
        check_dry_run_dir,
        plan_publish,
        write_plan,
    )
    from mmsynth.factory.publish.upload import push_plan

    run = Path(args.run_dir).resolve()
    options = PublishOptions(
        include_rejects=args.include_rejects, max_shard_bytes=args.max_shard_size, repo_id=args.repo
    )
    # PublishError (exit 2) and PublishAborted (exit 1) are reported by `main`, as every MmsynthError is.
    if args.dry_run:
        out = Path(args.dry_run).resolve()
        check_dry_run_dir(out, run)
        plan = plan_publish(run, out, options)
        write_plan(plan, out)
        _summary(plan, f"wrote {out} (a dry run: nothing was uploaded)")
        names = ", ".join(f"name={s!r}" for s in dict.fromkeys(s.subset for s in plan.splits))
        print(f"load it with datasets.load_dataset({str(out)!r}, name=...)  # {names}")
        return 0
    if not _have_token():
        print(
            "error: no Hugging Face token: set HF_TOKEN or log in with `hf auth login`, then rerun",
            file=sys.stderr,
        )
        return 1
    plan = plan_publish(run, run / ".mmsynth" / "publish", options)
    _summary(
        plan, f"publishing {run} to {args.repo}" + (f" (branch {args.revision})" if args.revision else "")
    )
    result = push_plan(
        plan,
        args.repo,
        private=args.private,
        revision=args.revision,
        message=args.message,
        progress=not args.quiet,
    )
    print(
        f"published {result.url}: {len(result.uploaded)} file(s) in {result.commits} commit(s), "
        f"{len(result.skipped)} already there"
    )
    return 0


def _summary(plan, head: str) -> None:
    shards = sum(len(s.files) for s in plan.splits)
    print(f"{head}: {len(plan.ops)} files, {plan.total_bytes / 1e6:.1f} MB, {shards} Parquet file(s)")
    for s in plan.splits:
        print(f"  {s.subset}/{s.split}: {s.num_examples} records in {len(s.files)} file(s)")
    for sub, why in plan.skipped_subsets.items():
        print(f"  {sub}: not published: {why}")


def _have_token() -> bool:
    from huggingface_hub import get_token

    return bool(get_token())
