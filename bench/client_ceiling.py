"""Can the vllm-server client keep up with a fast server? The same N rendered chat requests, sent by
(a) a plain aiohttp loop and (b) `mmsynth run` (vllm-server backend), to a minimal OpenAI-compatible
server (aiohttp.web, in a subprocess) that answers at once or after --delay-ms. Prints req/s of each
per setting, mmsynth's peak RSS and its run folder's file count; the headline, last, is
`client_ceiling ratio=<mmsynth / plain at 256 in flight, 1 s delay>` (target >= 0.9; >= 0.9 at 1,024
in flight, >= 0.5 against the instant server).

    python bench/client_ceiling.py [--n 10000] [--repeats 1] [--settings 256:1000,1024:1000,64:0]
    python bench/client_ceiling.py --n 1000000 --settings 64:0 --sides mmsynth   # memory and files only

No model: the server answers every request with a short fixed text built from the prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import _common  # noqa: F401  (pins threads and offline env vars)
from _common import CACHE_DIR, TEMPLATE, fmt, median, rendered_chats, run_mmsynth, write_ideas
from _rss import peak_rss_kib, reset_peak_rss

MAX_TOKENS = 32


# -- the server (run as `client_ceiling.py --serve PORT --delay-ms D --model NAME`) -------------------


def serve(port: int, delay_ms: float, model: str) -> None:
    from aiohttp import web

    delay = delay_ms / 1000

    async def chat(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if delay:
            await asyncio.sleep(delay)
        prompt = body["messages"][-1]["content"]
        n = body.get("n", 1)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": f"A vivid scene: {prompt[-60:]} ({i})"},
                "finish_reason": "stop",
            }
            for i in range(n)
        ]
        return web.json_response(
            {
                "object": "chat.completion",
                "model": body["model"],
                "choices": choices,
                "usage": {"prompt_tokens": 20, "completion_tokens": 8 * n},
            }
        )

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model, "max_model_len": 4096}]})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(delay_ms: float, model: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--delay-ms", str(delay_ms), "--model", model]
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the bench server exited at start-up") from None
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the bench server did not answer /health within 30 s")


# -- (a) the plain client ----------------------------------------------------------------------------


async def plain_loop(url: str, bodies: list[dict], concurrency: int) -> float:
    """Every body POSTed with at most `concurrency` in flight; returns the wall time."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as s:

        async def one(body: dict) -> None:
            async with sem, s.post(f"{url}/chat/completions", json=body) as r:
                r.raise_for_status()
                data = await r.json()
                assert data["choices"]

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - t0


# -- (b) mmsynth run ---------------------------------------------------------------------------------


def recipe_for(
    folder: Path, ideas: Path, model: Path, url: str, concurrency: int, seed_ids: bool = True
) -> Path:
    # initial_concurrency = the cap: this measures the client's ceiling, not slow start's ramp.
    text = f"""\
name: bench-client-ceiling
seeds: {{type: jsonl, path: {json.dumps(str(ideas))}{", id_field: id" if seed_ids else ""}}}
models:
  lm:
    backend: vllm-server
    model: {json.dumps(str(model))}
    batch_size: 1
    options: {{base_url: {json.dumps(url)}, max_concurrency: {concurrency}, initial_concurrency: {concurrency}}}
tasks:
  - name: expand
    template: {TEMPLATE}
    model: lm
    sampling: {{temperature: 0.0, max_tokens: {MAX_TOKENS}}}
validators: [{{type: heuristics}}]
output: {{chunk_size: {max(1024, concurrency)}}}
"""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(text)
    return folder / "recipe.yaml"


def file_count(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--n", type=int, default=10_000, help="requests per side and setting (100000, 1000000 for long runs)"
    )
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--settings",
        default="256:1000,1024:1000,64:0",
        help="comma-separated IN_FLIGHT:DELAY_MS pairs; the headline is 256:1000",
    )
    ap.add_argument(
        "--sides",
        choices=("both", "mmsynth"),
        default="both",
        help="mmsynth: only the mmsynth run (peak RSS, files, CPU; no ratio): for 1,000,000-request runs, "
        "where the plain side's N request bodies alone would take gigabytes",
    )
    ap.add_argument(
        "--no-seed-ids",
        action="store_true",
        help="seeds without id_field (content ids): the jsonl reader then keeps no map of the ids seen, "
        "which grows with the run; separates that map from the rest in the memory runs",
    )
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--model", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.delay_ms, args.model)
        return

    work = CACHE_DIR / "client_ceiling"
    model = work / "model"  # a local folder: its content hash is the revision, no hub look-up
    # Recipes and run folders per N: a long run (--n 1000000 --sides mmsynth) left going in the
    # background must not have its folder deleted by a short run started meanwhile.
    seed_ids = not args.no_seed_ids
    own = work / (f"n{args.n}" if seed_ids else f"n{args.n}-no-seed-ids")
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text("{}")
    ideas = write_ideas(work, args.n)
    plain_side = args.sides == "both"
    bodies = [
        {
            "model": str(model),
            "messages": chat,
            "n": 1,
            "temperature": 0.0,
            "top_p": 1.0,
            "max_tokens": MAX_TOKENS,
        }
        for chat in (rendered_chats(args.n) if plain_side else [])
    ]
    settings = [tuple(int(x) for x in s.split(":")) for s in args.settings.split(",")]
    ratios: dict[tuple[int, int], float] = {}
    for concurrency, delay_ms in settings:
        proc, url = start_server(delay_ms, str(model))
        try:
            # Untimed warm-ups: connections, and mmsynth's one-off imports (datasets, pyarrow, jinja2).
            if plain_side:
                asyncio.run(plain_loop(url, bodies[:64], concurrency))
            warm = recipe_for(own / "warm-recipe", write_ideas(work, 64), model, url, concurrency, seed_ids)
            run_mmsynth(warm, own / "warm-run", expect_requests=64)
            a_rates, b_rates, a_cpu, b_cpu, rss, files = [], [], [], [], 0, 0
            for i in range(args.repeats):
                sides = ["plain", "mmsynth"] if i % 2 == 0 else ["mmsynth", "plain"]
                if not plain_side:
                    sides = ["mmsynth"]
                for side in sides:
                    if side == "plain":
                        c0 = time.process_time()
                        a_rates.append(args.n / asyncio.run(plain_loop(url, bodies, concurrency)))
                        a_cpu.append(1000 * (time.process_time() - c0) / args.n)
                    else:
                        recipe = recipe_for(own / "recipe", ideas, model, url, concurrency, seed_ids)
                        out = own / f"run-{concurrency}-{delay_ms}"
                        reset_peak_rss()
                        wall, cpu, _ = run_mmsynth(recipe, out, expect_requests=args.n)
                        b_cpu.append(1000 * cpu / args.n)
                        rss = max(rss, peak_rss_kib())
                        files = file_count(out)
                        b_rates.append(args.n / wall)
                plain = f"plain {a_rates[-1]:.0f} req/s, " if plain_side else ""
                print(
                    f"  {concurrency} in flight, {delay_ms} ms: repeat {i}: {plain}mmsynth {b_rates[-1]:.0f} req/s",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(10)
        print(f"{concurrency} in flight, server delay {delay_ms} ms, n={args.n}:")
        if not plain_side:
            print(f"  mmsynth run: {fmt(b_rates)} req/s, CPU {fmt(b_cpu)} ms/request")
            print(f"  mmsynth peak RSS {rss / 1024:.0f} MiB, run folder {files} files")
            continue
        ratios[(concurrency, delay_ms)] = median(b_rates) / median(a_rates)
        print(f"  plain aiohttp loop: {fmt(a_rates)} req/s, CPU {fmt(a_cpu)} ms/request")
        print(
            f"  mmsynth run:        {fmt(b_rates)} req/s, CPU {fmt(b_cpu)} ms/request "
            "(whole run: planning, validation, Parquet, card)"
        )
        print(
            f"  mmsynth peak RSS {rss / 1024:.0f} MiB, run folder {files} files, ratio {ratios[(concurrency, delay_ms)]:.3f}"
        )
    if not ratios:
        return
    headline = ratios.get((256, 1000))
    if headline is None:
        headline = next(iter(ratios.values()))
    print(f"client_ceiling ratio={headline:.3f}")


if __name__ == "__main__":
    main()
