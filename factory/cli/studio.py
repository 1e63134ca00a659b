"""`mmsynth studio`: serve the template studio for one recipe on a local port."""

from __future__ import annotations

import argparse

LOOPBACK = ("127.0.0.1", "localhost")


def add_studio_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "studio", help="a local web page to edit, preview, run, compare and save templates"
    )
    p.add_argument(
        "--recipe",
        default="recipes/quickstart.yaml",
        help="the recipe whose templates, seeds, models and validators to use (default: %(default)s)",
    )
    p.add_argument("--port", type=int, default=7860, help="port to serve on (default: %(default)s)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only; the studio has no login)",
    )
    p.add_argument(
        "--templates",
        metavar="DIR",
        default=None,
        help="folder new versions are saved to (default: the recipe's first template folder, "
        "else templates/ beside the recipe)",
    )
    p.set_defaults(func=cmd_studio)


def cmd_studio(args: argparse.Namespace) -> int:
    import uvicorn

    from mmsynth.factory.studio.app import create_app
    from mmsynth.factory.studio.preview import StudioSession
    from mmsynth.factory.studio.samples import SampleFolders

    session = StudioSession(args.recipe, save_dir=args.templates)  # errors: see `main`
    samples = SampleFolders()  # a temporary folder, removed when the studio stops
    hosts = [*LOOPBACK] if args.host in LOOPBACK else ["*"]
    if args.host not in LOOPBACK:
        print(
            f"[mmsynth] warning: serving on {args.host}: anyone who can reach it can run models and write templates."
        )
    print(
        f"[mmsynth] studio for {session.recipe_path} on http://{args.host}:{args.port}/ (Ctrl-C to stop)",
        flush=True,
    )
    print(f"[mmsynth] samples you run are kept in {samples.root} while it runs (viewer: /view/)", flush=True)
    try:
        app = create_app(session, hosts=hosts, samples=samples)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        session.close()
        samples.close()
    return 0
