"""Does the factory cost a vLLM server anything? The same N chat requests at the same concurrency,
sent by (a) a plain asyncio httpx loop and (b) `mmsynth run` with the vllm-server backend, against one
real vLLM server. Prints completion tokens/s of each; the headline, last, is `vllm_server ratio=<b/a>`
(target >= 0.95).

    python bench/vllm_server.py [--n 256] [--concurrency 32] [--max-tokens 32] [--repeats 3]

The server runs from the vLLM environment (`bash .ci/setup-vllm-env`, or --python). Default model: the
tiny random Qwen2 (random weights never stop early, so both sides do exactly n * max_tokens tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import _common  # noqa: F401  (pins threads and offline env vars before anything imports torch)
import httpx
from _common import CACHE_DIR, fmt, median, model_dir, rendered_chats, run_mmsynth, write_ideas

REPO = Path(__file__).resolve().parents[1]


async def plain_loop(
    url: str, model: str, chats: list, concurrency: int, max_tokens: int
) -> tuple[float, int]:
    sem = asyncio.Semaphore(concurrency)
    tokens = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def one(messages):
            nonlocal tokens
            async with sem:
                r = await client.post(
                    "/chat/completions",
                    json={"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0},
                )
                r.raise_for_status()
                tokens += r.json()["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        await asyncio.gather(*(one(m) for m in chats))
        return time.perf_counter() - t0, tokens


def recipe_for(folder: Path, ideas: Path, model: Path, url: str, concurrency: int, max_tokens: int) -> Path:
    text = f"""\
name: bench-vllm-server
seeds: {{type: jsonl, path: {json.dumps(str(ideas))}, id_field: id}}
models:
  lm:
    backend: vllm-server
    model: {json.dumps(str(model))}
    options: {{base_url: {json.dumps(url)}, max_concurrency: {concurrency}, initial_concurrency: {concurrency}}}
tasks:
  - name: expand
    template: t2i.expand
    model: lm
    sampling: {{temperature: 0.0, max_tokens: {max_tokens}}}
validators: [{{type: heuristics}}, {{type: exact_dedup}}]
output: {{chunk_size: 256}}
"""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(text)
    return folder / "recipe.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--python", default=str(REPO / ".venv-vllm" / "bin" / "python"), help="the vLLM environment's python"
    )
    ap.add_argument(
        "--model", type=Path, default=None, help="a local model folder (default: the tiny random Qwen2)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()

    from mmsynth.generators.openai.launch import ServerPool

    model = model_dir(args)
    work = CACHE_DIR / "vllm_server"
    ideas = write_ideas(work, args.n)
    chats = rendered_chats(args.n)
    pool = ServerPool(
        model,
        python=args.python,
        engine_args={"max-model-len": 512, "dtype": "float32", "enforce-eager": True},
        env={"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"},
        log_dir=work / "logs",
    )
    t0 = time.perf_counter()
    (url,) = pool.start()
    print(f"server ready in {time.perf_counter() - t0:.0f} s at {url}")
    try:
        asyncio.run(plain_loop(url, str(model), chats[:8], args.concurrency, args.max_tokens))  # warm-up
        a_rates, b_rates = [], []
        for i in range(args.repeats):
            wall, tokens = asyncio.run(plain_loop(url, str(model), chats, args.concurrency, args.max_tokens))
            a_rates.append(tokens / wall)
            recipe = recipe_for(work / "recipe", ideas, model, url, args.concurrency, args.max_tokens)
            b_wall, _, stats = run_mmsynth(recipe, work / f"run-{i}", expect_requests=args.n)
            b_rates.append(stats["tokens"]["completion"] / b_wall)
            print(
                f"repeat {i}: plain {a_rates[-1]:.0f} tok/s ({tokens} tokens), mmsynth {b_rates[-1]:.0f} tok/s ({stats['tokens']['completion']} tokens)"
            )
    finally:
        pool.stop()
    print(f"plain asyncio loop: {fmt(a_rates)} completion tok/s")
    print(
        f"mmsynth run:        {fmt(b_rates)} completion tok/s (wall includes planning, validation and Parquet writing)"
    )
    print(f"vllm_server ratio={median(b_rates) / median(a_rates):.3f}")


if __name__ == "__main__":
    main()
