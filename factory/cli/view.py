"""`mmsynth view RUN [RUN_B]`: a local web page over a run folder (finished or running), or two to compare."""

from __future__ import annotations

import argparse
import sys

LOOPBACK = ("127.0.0.1", "localhost")


def add_view_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "view",
        help="a local web page over a run: records, filters, lineage, stats; with two runs, side by side",
    )
    p.add_argument("run", help="run folder (what `mmsynth run --out` wrote; it may still be running)")
    p.add_argument("run_b", nargs="?", default=None, help="a second run folder, to compare by seed")
    p.add_argument("--port", type=int, default=7861, help="port to serve on (default: %(default)s)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only; the viewer has no login)",
    )
    p.set_defaults(func=cmd_view)


def cmd_view(args: argparse.Namespace) -> int:
    import time

    import uvicorn

    from mmsynth.factory.viewer.app import RunFolderError, create_app

    runs = [args.run] + ([args.run_b] if args.run_b else [])
    hosts = [*LOOPBACK] if args.host in LOOPBACK else ["*"]
    try:
        app = create_app(runs, hosts=hosts)
    except RunFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK:
        print(f"[mmsynth] warning: serving on {args.host}: anyone who can reach it can read these runs.")
    for run in app.state.runs.values():
        start = time.perf_counter()
        snap = run.index.snapshot()
        print(
            f"[mmsynth] indexed {snap.table.num_rows} records in {len(snap.shards)} shards of {run.path} "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    what = " and ".join(runs)
    print(f"[mmsynth] viewing {what} on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
