"""`mmsynth validate DATASET --recipe RECIPE --out DIR`: filter a dataset you already have."""

from __future__ import annotations

import argparse


def cmd_validate(args: argparse.Namespace) -> int:
    from mmsynth.factory.curate.filter import Columns, validate_dataset

    columns = Columns(text=args.text_column, image=args.image_column, task=args.task)
    # A ValidateError (exit 2) is reported by `main`, as every MmsynthError is.
    result = validate_dataset(
        args.dataset, args.recipe, args.out, columns, batch_size=args.batch_size, overwrite=args.overwrite
    )
    s = result.stats
    print(
        f"wrote {result.out}: {s['records']['accepted']} kept, {s['records']['rejected']} rejected "
        f"of {s['input']['rows']} rows ({result.kind})"
    )
    top = list(s["reject_reasons"].items())[:5]
    if top:
        print("top reject reasons: " + "; ".join(f"{r} ({n})" for r, n in top))
    return 0


def add_validate_command(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser(
        "validate",
        help="run a recipe's validators over an existing dataset",
        description=(
            "Run the `validators:` of RECIPE over DATASET (a Parquet file or folder, a JSONL file, a "
            "`datasets.save_to_disk` folder, or an mmsynth run folder) and write the kept and rejected "
            "rows, with their verdicts, to OUT/data/<task>/{train,rejected}-*.parquet and OUT/stats.json."
        ),
    )
    v.add_argument("dataset", help="the dataset to validate")
    v.add_argument("--recipe", required=True, help="recipe whose `validators:` to run")
    v.add_argument("--out", required=True, help="output folder (must be empty or new)")
    v.add_argument(
        "--text-column", default=None, help="column holding the text to validate (default: output, else text)"
    )
    v.add_argument(
        "--image-column", default=None, help="column holding the image (default: image, when present)"
    )
    v.add_argument(
        "--task",
        default=None,
        help="task name for every row (default: the `task` column, else 'data'); a recipe task of this "
        "name gives its template's output schema to structured validators",
    )
    v.add_argument("--batch-size", type=int, default=256, help="rows per validation batch and output shard")
    v.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    v.set_defaults(func=cmd_validate)
