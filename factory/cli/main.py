"""The `mmsynth` command line."""

from __future__ import annotations

import argparse
import errno
import json
import sqlite3
import sys
from pathlib import Path

from mmsynth.prompts.errors import MmsynthError

_INTERRUPTED = (
    "[mmsynth] interrupted; finished shards and cached answers are kept. Run the same command to resume."
)


def cmd_run(args: argparse.Namespace) -> int:
    from mmsynth.factory.engine.interrupts import exit_after_interrupt, handling

    # From the first line on: Ctrl-C while modules import or models load also ends cleanly (exit 130).
    with handling():
        try:
            code = _run(args)
        except KeyboardInterrupt:
            print(_INTERRUPTED, file=sys.stderr)
            code = 130
        if code == 130:
            exit_after_interrupt()
        return code


def _run(args: argparse.Namespace) -> int:
    from mmsynth.factory.engine.chunks import Interrupted
    from mmsynth.factory.engine.dispatch import BackendFailure
    from mmsynth.factory.engine.runner import run_recipe

    ray = None
    if args.executor == "ray":
        from mmsynth.factory.executors.ray import RayOptions

        ray = RayOptions(address=args.address, actors=args.ray_actors)
    elif args.address is not None or args.ray_actors is not None:
        print("error: --address and --ray-actors need --executor ray", file=sys.stderr)
        return 2
    try:
        result = run_recipe(args.recipe, args.out, fresh=args.fresh, progress=not args.quiet, ray=ray)
    except Interrupted:
        print(_INTERRUPTED, file=sys.stderr)
        return 130
    except BackendFailure as e:
        print(
            f"[mmsynth] a model backend failed: {e}\nFinished shards are kept; fix the cause and rerun to resume.",
            file=sys.stderr,
        )
        return 1
    s = result.stats
    if result.already_complete:
        print(
            f"{result.run_dir} is already complete: nothing to do ({s['records']['accepted']} accepted, {s['records']['rejected']} rejected)."
        )
        return 0
    req = s["requests"]
    records = (
        f"wrote {result.run_dir}: {s['records']['accepted']} accepted, {s['records']['rejected']} rejected"
    )
    if result.resumed_at == 0:
        print(f"{records} ({req['sent']} requests sent, {req['cached']} from cache, {req['failed']} failed)")
    else:  # what this process did, and what the folder holds from every session, told apart
        mine = result.session["requests"]
        print(
            f"{records}; resumed at chunk {result.resumed_at}: this session sent {mine['sent']} requests "
            f"({mine['cached']} from cache, {mine['failed']} failed); the whole run: {req['total']} requests, "
            f"{req['sent']} sent over all sessions"
        )
    top = list(s["reject_reasons"].items())[:5]
    if top:
        print("top reject reasons: " + "; ".join(f"{r} ({n})" for r, n in top))
    return 0


def _positive_or_zero(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {n}")
    return n


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from mmsynth.generators.tiny.builders import make_tiny

    path = make_tiny(args.kind, Path(args.dir), seed=args.seed)
    if args.kind == "scene-vlm":
        print(
            f"built the trained tiny scene teacher in {path} (rendered shape scenes only, not a real model)"
        )
    elif args.kind == "scene-student":
        print(f"built the tiny scene student in {path} (vision side pretrained, language side random)")
    else:
        print(f"built a random-weight tiny {args.kind} model in {path} (for smoke tests, not a real model)")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    path = Path(args.run_dir) / "stats.json"
    if not path.exists():
        print(f"{path} not found: is {args.run_dir} a finished mmsynth run?", file=sys.stderr)
        return 2
    print(json.dumps(json.loads(path.read_text()), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mmsynth.factory.cli.gain import add_gain_command
    from mmsynth.factory.cli.prompts import add_prompts_commands
    from mmsynth.factory.cli.publish import add_publish_command
    from mmsynth.factory.cli.scenes import add_scenes_command
    from mmsynth.factory.cli.show import add_show_command
    from mmsynth.factory.cli.studio import add_studio_command
    from mmsynth.factory.cli.sweep import add_sweep_command
    from mmsynth.factory.cli.validate import add_validate_command
    from mmsynth.factory.cli.view import add_view_command

    p = argparse.ArgumentParser(
        prog="mmsynth", description="A factory for synthetic multimodal training data."
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run (or resume) a recipe into a dataset folder")
    r.add_argument("recipe", help="recipe YAML file")
    r.add_argument("--out", required=True, help="run folder; rerunning into it resumes where it stopped")
    r.add_argument(
        "--fresh", action="store_true", help="rebuild the folder from scratch (keeps the response cache)"
    )
    r.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    r.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="where the models run: in this process, or in Ray actors (docs/ray.md); same output",
    )
    r.add_argument(
        "--address",
        default=None,
        help="with --executor ray: 'auto', 'ray://host:10001' or host:port; default: start a local Ray instance",
    )
    r.add_argument(
        "--ray-actors",
        type=_positive_or_zero,
        default=None,
        metavar="N",
        help="with --executor ray: actors per model, overriding the recipe's ray.models.<name>.actors",
    )
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("models", help="model utilities")
    msub = m.add_subparsers(dest="models_command", required=True)
    t = msub.add_parser(
        "make-tiny", help="build a tiny model offline: random weights for smoke tests, or scene-vlm (trained)"
    )
    t.add_argument("kind", choices=["lm", "vlm", "sd", "scene-vlm", "scene-student"])
    t.add_argument("dir")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_make_tiny)

    s = sub.add_parser("stats", help="print a run's stats.json")
    s.add_argument("run_dir")
    s.set_defaults(func=cmd_stats)

    add_prompts_commands(sub)
    add_show_command(sub)
    add_gain_command(sub)
    add_validate_command(sub)
    add_publish_command(sub)
    add_studio_command(sub)
    add_sweep_command(sub)
    add_scenes_command(sub)
    add_view_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from mmsynth.factory.engine.interrupts import exit_after_interrupt, handling

    with handling():  # Ctrl-C while the commands' modules import: exit 130, no traceback
        try:
            args = build_parser().parse_args(argv)
        except KeyboardInterrupt:
            print("[mmsynth] interrupted", file=sys.stderr)
            exit_after_interrupt()
            return 130
    try:
        return args.func(args)
    except MmsynthError as e:  # every error the user can fix: its message, no traceback, its exit code
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (OSError, sqlite3.OperationalError) as e:
        # A full disk under the run folder: a shard or marker write (ENOSPC), or the response cache's
        # sqlite ("database or disk is full", or "disk I/O error" when it fills while opening).
        full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (
            isinstance(e, sqlite3.OperationalError) and "disk" in str(e)
        )
        if not full:
            raise
        # Every write is atomic (temp file, fsync, rename), so what is on disk is whole: a rerun resumes.
        where = f" writing {e.filename}" if getattr(e, "filename", None) else ""
        print(
            f"error: no space left on the device{where} ({e}). Finished chunks and cached answers are "
            "kept; free some space and run the same command again to resume.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
