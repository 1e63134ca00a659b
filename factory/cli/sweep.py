"""`mmsynth sweep SWEEP --out DIR` and `mmsynth sweep --ablate validators RECIPE --baseline DATA --out DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_sweep_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="generate recipe variants through one cache and rank them by the gain their data buys (docs/sweep.md)",
    )
    p.add_argument("file", help="a sweep file (sweep: ...), or with --ablate a recipe")
    p.add_argument("--out", required=True, help="sweep folder; rerunning into it resumes")
    p.add_argument("--ablate", choices=["validators"], help="leave each validator of RECIPE out in turn")
    p.add_argument("--baseline", help="with --ablate: the real data (as `mmsynth gain --baseline`)")
    p.add_argument("--student", default="tiny:vlm", help="with --ablate: the student (default tiny:vlm)")
    p.add_argument("--seeds", type=int, default=3, help="with --ablate: training seeds (default 3)")
    p.add_argument("--steps", type=int, default=200, help="with --ablate: training steps (default 200)")
    p.add_argument("--eval-size", type=int, default=48, help="with --ablate: evaluation examples per task")
    p.add_argument("-q", "--quiet", action="store_true", help="no live view and no progress lines")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from mmsynth.factory.sweep.runner import run_ablation, run_sweep

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    try:
        if args.ablate:
            if not args.baseline:
                print(
                    "error: --ablate needs --baseline (the real data the gain is measured against)",
                    file=sys.stderr,
                )
                return 2
            report = run_ablation(
                args.file,
                args.out,
                log,
                live=not args.quiet,
                baseline=args.baseline,
                student=args.student,
                seeds=args.seeds,
                steps=args.steps,
                eval_size=args.eval_size,
            )
        else:
            report = run_sweep(args.file, args.out, log, live=not args.quiet)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((Path(args.out) / "report.md").read_text())
    print(f"best: {report['best']}; recipe: {args.out}/best-recipe.yaml")
    return 0
