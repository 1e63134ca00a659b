"""`mmsynth gain --baseline DATASET --synthetic RUN_DIR`: measure what a generated dataset buys a student.

The factory composes here what the trainer must not import: the decontamination index (validators)
runs on the synthetic examples against the evaluation split before any training. Contaminated pools
are refused unless `--contaminated drop|keep` says otherwise; the report records the decision.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not vals or min(vals) < 0:
        raise argparse.ArgumentTypeError(f"need one or more non-negative integers: {text!r}")
    return vals


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _ratios(text: str) -> dict[str, float]:
    """'caption=45,interleaved=45,text=10' -> {caption: 45, ...}."""
    out = {}
    for part in _names(text):
        k, _, v = part.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad ratio {part!r}; write kind=weight, e.g. caption=45"
            ) from None
    return out


def add_gain_command(sub: argparse._SubParsersAction) -> None:
    from mmsynth.trainer.gain import REGIMES
    from mmsynth.trainer.pools import MODES
    from mmsynth.trainer.tasks import TASKS

    p = sub.add_parser(
        "gain",
        help="measure the gain a synthetic dataset gives a student model over a baseline, with confidence intervals",
    )
    p.add_argument(
        "--baseline", required=True, help="real data: a dataset folder, a Parquet/JSONL file, or a Hub id"
    )
    p.add_argument(
        "--synthetic", required=True, help="an mmsynth run folder; the report goes into RUN_DIR/gain/"
    )
    p.add_argument(
        "--student",
        default="tiny:vlm",
        help="model folder or Hub id (default: the tiny random VLM, a smoke test)",
    )
    p.add_argument("--shots", type=_ints, default=(0, 4, 8), help="in-context shot counts (default 0,4,8)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per arm (default 3)")
    p.add_argument("--trials", type=int, default=3, help="exemplar draws for k > 0 shots (default 3)")
    p.add_argument(
        "--task",
        type=_names,
        default=(),
        help=f"tasks, comma-separated: {', '.join(TASKS)} (default: all the data has)",
    )
    p.add_argument(
        "--synthetic-tasks", type=_names, default=(), help="run-folder tasks to use (default: all)"
    )
    p.add_argument("--regime", choices=REGIMES, default="pool", help="pool (default) or fewshot_ft")
    p.add_argument(
        "--mode",
        type=_names,
        default=("replace",),
        help=f"treatment pools: {', '.join(MODES)} (default replace)",
    )
    p.add_argument(
        "--fraction", type=float, default=0.5, help="share of the baseline replaced (mode replace)"
    )
    p.add_argument(
        "--ratios", type=_ratios, default=None, help="mode mix: e.g. caption=45,interleaved=45,text=10"
    )
    p.add_argument(
        "--pool-size", type=int, default=None, help="baseline pool size (default: all real train data)"
    )
    p.add_argument("--ft-k", type=int, default=16, help="labelled examples per task (regime fewshot_ft)")
    p.add_argument("--eval-size", type=int, default=200, help="evaluation examples per task (default 200)")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per training run (default 200)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 2e-4 LoRA, 5e-5 full)")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--checkpoints",
        action="store_true",
        help="save each run's final weights under RUN_DIR/gain/checkpoints",
    )
    p.add_argument(
        "--contaminated",
        choices=("refuse", "drop", "keep"),
        default="refuse",
        help="synthetic examples sharing 13-grams with the evaluation split: refuse to run (default), drop them, or keep them",
    )
    p.add_argument("--out", help="report folder (default RUN_DIR/gain)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_gain)


def cmd_gain(args: argparse.Namespace) -> int:
    from mmsynth.factory.curate.decontaminate import check_contamination
    from mmsynth.trainer.data import is_run_dir, load_dataset_examples, read_run_dir
    from mmsynth.trainer.gain import GainConfig, run_gain, split_real
    from mmsynth.trainer.report import report_dir
    from mmsynth.trainer.student import TrainConfig

    run_dir = Path(args.synthetic)
    if not is_run_dir(run_dir):
        print(f"error: {run_dir} is not an mmsynth run folder (no data/*/train-*.parquet)", file=sys.stderr)
        return 2
    if args.seeds < 1:
        print("error: --seeds must be >= 1", file=sys.stderr)
        return 2
    student = _student_path(args.student)
    synthetic = read_run_dir(run_dir, args.synthetic_tasks or None)
    if not synthetic:
        print(f"error: {run_dir} has no accepted record usable as a training example", file=sys.stderr)
        return 2
    try:
        splits = load_dataset_examples(args.baseline)
    except (OSError, ValueError) as e:
        print(f"error: cannot read baseline {args.baseline}: {e}", file=sys.stderr)
        return 2
    train, evals, how = split_real(splits, seed=0)
    if not train or not evals:
        print(
            f"error: baseline {args.baseline} gives {len(train)} train and {len(evals)} eval examples",
            file=sys.stderr,
        )
        return 2
    bad, index_size = check_contamination(synthetic, evals)
    action = {"refuse": "refused", "drop": "dropped", "keep": "kept"}[args.contaminated]
    decontam: dict[str, Any] = {
        "checked": True,
        "n": 13,
        "synthetic": len(synthetic),
        "contaminated": len(bad),
        "eval_ngrams": index_size,
        "action": action if bad else "none needed",
        "examples": [synthetic[i].id for i in bad[:10]],
    }
    if bad and args.contaminated == "refuse":
        print(
            f"error: {len(bad)} of {len(synthetic)} synthetic examples share 13-grams with the evaluation split "
            f"(e.g. {', '.join(decontam['examples'][:3])}). Rerun with --contaminated drop to remove them, or "
            "--contaminated keep to measure anyway (the report will say so).",
            file=sys.stderr,
        )
        return 2
    if bad and args.contaminated == "drop":
        drop = set(bad)
        synthetic = [ex for i, ex in enumerate(synthetic) if i not in drop]
    out = Path(args.out) if args.out else report_dir(run_dir)
    lr = args.lr if args.lr is not None else (2e-4 if args.lora else 5e-5)
    train_cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=lr,
        lora=args.lora,
        progress=not args.quiet,
        checkpoint_dir=out / "checkpoints" if args.checkpoints else None,
    )
    cfg = GainConfig(
        student=str(student),
        shots=args.shots,
        seeds=args.seeds,
        trials=args.trials,
        tasks=args.task,
        regime=args.regime,
        modes=args.mode,
        fraction=args.fraction,
        ratios=args.ratios,
        pool_size=args.pool_size,
        ft_k=args.ft_k,
        eval_size=args.eval_size,
        train=train_cfg,
        device=args.device,
    )
    info = {
        "baseline_source": str(args.baseline),
        "synthetic_source": str(run_dir),
        "split": how,
        "real_train": len(train),
        "real_eval": len(evals),
        "synthetic_examples": len(synthetic),
        "decontamination": decontam,
    }
    try:
        report = run_gain(cfg, train, evals, synthetic, out, info, log=lambda m: print(m, file=sys.stderr))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for g in report["gains"]:
        print(
            f"{g['task']} {g['shots']}-shot {g['arm']}: gain {g['gain']:+.3f} "
            f"[{g['lo']:+.3f}, {g['hi']:+.3f}] ({g['metric']}, baseline {g['baseline']:.3f})"
        )
    print(f"report: {out / 'report.md'}")
    return 0


def _student_path(name: str) -> str:
    """`tiny:vlm` / `tiny:lm` build the random smoke-test models locally, as recipes do; anything else is as given."""
    from mmsynth.generators.model_paths import resolve_model_path

    return resolve_model_path(name)
