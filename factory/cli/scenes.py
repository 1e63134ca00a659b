"""`mmsynth scenes DIR`: write a labelled dataset of rendered scenes (exact captions and QA)."""

from __future__ import annotations

import argparse
import sys


def add_scenes_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scenes", help="write a labelled dataset of rendered scenes with exact captions and QA"
    )
    p.add_argument("dir", help="output folder: train.parquet and test.parquet")
    p.add_argument(
        "--train", default="0:64", help="scene range START:COUNT of the train split (default 0:64)"
    )
    p.add_argument(
        "--test", default="20000:48", help="scene range START:COUNT of the test split (default 20000:48)"
    )
    p.add_argument("--seed", type=int, default=0, help="scene seed (the recipe's `seeds.seed`)")
    p.add_argument("--max-objects", type=int, default=3)
    p.add_argument("--no-qa", action="store_true", help="caption rows only")
    p.set_defaults(func=cmd_scenes)


def cmd_scenes(args: argparse.Namespace) -> int:
    from mmsynth.factory.curate.scenes import parse_range, write_scene_dataset

    try:
        out = write_scene_dataset(
            args.dir,
            parse_range(args.train),
            parse_range(args.test),
            args.seed,
            args.max_objects,
            not args.no_qa,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}/train.parquet and {out}/test.parquet")
    return 0
