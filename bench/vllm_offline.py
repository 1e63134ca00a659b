"""Tokens/s of mmsynth's vllm-offline backend against one plain `LLM.chat` over all prompts, same engine.

    .venv-vllm/bin/python bench/vllm_offline.py [--n 1024] [--repeats 3] [--batch-size 256]

Run it with the vLLM environment's python (`bash .ci/setup-vllm-env` builds it). One engine on the
tiny random Qwen2 (built into bench/.cache by generators/tiny), loaded once, outside the timed
regions, and used by every side, so all sides share its KV cache size and scheduler settings. Every
request samples (temperature 0.8, top_p 0.95) with its own seed and its own max_tokens, drawn from
8..64 with a fixed seed: outputs vary in length, so the tail of each list matters.

(a) plain: one `llm.chat(all conversations, sampling_params=[...])`: vLLM sees every request at once.
(b) mmsynth: the factory's own `Dispatcher` (what `mmsynth run` sends requests through: lists of
    `batch_size`, `max_concurrency` of them in flight, every answer committed to a SQLite response
    cache) over `VLLMOfflineBackend`. Not a whole `mmsynth run`: the vLLM environment has no
    datasets/pyarrow for shards, and bench/overhead.py already measures the run's own cost.
(c) one list at a time, for reference: `backend.generate_sync` on each list of `batch_size`,
    waiting for each (what `vllm-offline` did before it kept the engine fed: max_concurrency 1).

The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, as in the tests; --multiprocessing
runs vLLM's default engine-core process instead). Seeds make all sides produce the same texts; the
script checks it. Repeats rotate which side goes first. Printed last:
`vllm_offline ratio=<median (b) tokens/s / median (a) tokens/s>` (target >= 0.95).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import time
from pathlib import Path

import _common as C  # before anything imports torch: pins threads, offline mode

# A small KV cache and a job-local cache root; set before vLLM is imported.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("VLLM_CACHE_ROOT", str(C.CACHE_DIR / "vllm-cache"))


def requests_for(n: int, min_tokens: int, max_tokens: int, temperature: float, top_p: float) -> list:
    """n requests rendered from t2i.expand, each with its own seed and a max_tokens from a seeded draw."""
    from mmsynth.generators.types import GenerationRequest, SamplingParams, request_key
    from mmsynth.prompts import TemplateRegistry, render_template

    tpl = TemplateRegistry().get(C.TEMPLATE)
    rng = random.Random(20261203)
    out = []
    for i, idea in enumerate(C.ideas(n)):
        prompt = render_template(tpl, {C.TEMPLATE_VAR: idea})
        sp = SamplingParams(
            temperature=temperature, top_p=top_p, max_tokens=rng.randint(min_tokens, max_tokens), seed=i
        )
        out.append(GenerationRequest(prompt, sp, request_key(prompt, sp, "tiny", "rev", "vllm-offline")))
    return out


def plain(backend, requests) -> tuple[float, float, int, list[str]]:
    """(wall s, process CPU s, completion tokens, texts) of one LLM.chat over every request."""
    from vllm import SamplingParams

    from mmsynth.generators.inprocess.vllm_offline import to_conversation

    t0, c0 = time.perf_counter(), time.process_time()
    convs = [to_conversation(r.prompt) for r in requests]
    # The model's generation config first, as the backend applies it, then each request's values.
    params = [
        SamplingParams(
            **{
                **backend._default_sampling,
                "temperature": r.sampling.temperature,
                "top_p": r.sampling.top_p,
                "max_tokens": r.sampling.max_tokens,
                "seed": r.sampling.seed,
            }
        )
        for r in requests
    ]
    outs = backend._llm.chat(
        convs, sampling_params=params, use_tqdm=False, chat_template=backend._chat_template
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, sum(len(o.outputs[0].token_ids) for o in outs), [o.outputs[0].text for o in outs]


def mmsynth(backend, requests, work: Path) -> tuple[float, float, int, list[str]]:
    """The same, through the factory's Dispatcher (fresh response cache each time)."""
    from mmsynth.factory.engine.cache import ResponseCache
    from mmsynth.factory.engine.dispatch import Dispatcher

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)

    async def go():
        cache = ResponseCache(work / "cache.sqlite")
        d = Dispatcher(backend, cache, work / "requests.jsonl")
        try:
            futures = d.submit(requests)
            answers = await asyncio.gather(*(futures[r.key] for r in requests))
        finally:
            await d.close()
            cache.close()
        return [g for g, _ in answers]

    t0, c0 = time.perf_counter(), time.process_time()
    gens = asyncio.run(go())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return _summary(wall, cpu, gens)


def one_list_at_a_time(backend, requests) -> tuple[float, float, int, list[str]]:
    t0, c0 = time.perf_counter(), time.process_time()
    gens = []
    for start in range(0, len(requests), backend.batch_size):
        gens += backend.generate_sync(requests[start : start + backend.batch_size])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return _summary(wall, cpu, gens)


def _summary(wall: float, cpu: float, gens) -> tuple[float, float, int, list[str]]:
    bad = [g.error for g in gens if g.error]
    if bad:
        raise SystemExit(f"{len(bad)} requests failed, e.g. {bad[0]}")
    return wall, cpu, sum(g.completion_tokens for g in gens), [g.outputs[0].text for g in gens]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024, help="requests per side (default 1024)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--batch-size", type=int, default=256, help="the backend's batch_size (default 256, its own)"
    )
    ap.add_argument("--min-tokens", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--max-num-seqs", type=int, default=None, help="vLLM's max_num_seqs (default: vLLM's)")
    ap.add_argument("--multiprocessing", action="store_true", help="vLLM's engine core in its own process")
    ap.add_argument(
        "--chunked-prefill",
        action="store_true",
        help="turn vLLM's chunked prefill on, which the backend turns off on the CPU (vllm-cpu 0.32 then "
        "crashes on seeded requests whose prefill is split: 'CPU Generator does not use offset')",
    )
    ap.add_argument("--skip-reference", action="store_true", help="do not time (c), one list at a time")
    args = ap.parse_args()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if args.multiprocessing else "0"
    C.one_thread()

    from mmsynth.generators.inprocess.vllm_offline import VLLMOfflineBackend

    model_dir = C.tiny_lm()
    work = C.scratch("vllm-offline-")
    engine: dict = {"dtype": "float32", "enforce_eager": True, "max_model_len": 512}
    if args.chunked_prefill:
        # The backend turns it off on the CPU (vllm-cpu 0.32 crashes on seeded requests whose
        # prefill is split over steps); this asks for it back, to see that.
        engine["enable_chunked_prefill"] = True
    if args.max_num_seqs:
        engine["max_num_seqs"] = args.max_num_seqs
    backend = VLLMOfflineBackend("tiny:lm", path=str(model_dir), batch_size=args.batch_size, **engine)
    try:
        t = time.perf_counter()
        backend.load()
        print(f"engine loaded in {time.perf_counter() - t:.1f}s (not timed)", flush=True)
        reqs = requests_for(args.n, args.min_tokens, args.max_tokens, args.temperature, args.top_p)
        # Warm-up (not timed): first-call initialisation of every path.
        warm = reqs[: min(len(reqs), 2 * args.batch_size)]
        plain(backend, warm)
        mmsynth(backend, warm, work / "warm")

        sides = {"a": "plain LLM.chat", "b": "mmsynth Dispatcher", "c": "one list at a time"}
        if args.skip_reference:
            del sides["c"]
        walls: dict[str, list[float]] = {s: [] for s in sides}
        cpus: dict[str, list[float]] = {s: [] for s in sides}
        tokens: dict[str, int] = {}
        texts: dict[str, list[str]] = {}
        order = list(sides)
        for r in range(args.repeats):
            for side in order[r % len(order) :] + order[: r % len(order)]:
                if side == "a":
                    wall, cpu, tok, out = plain(backend, reqs)
                elif side == "b":
                    wall, cpu, tok, out = mmsynth(backend, reqs, work / "run")
                else:
                    wall, cpu, tok, out = one_list_at_a_time(backend, reqs)
                walls[side].append(wall)
                cpus[side].append(cpu)
                tokens[side], texts[side] = tok, out
            print(
                f"repeat {r + 1}/{args.repeats}: "
                + "  ".join(f"({s}) {walls[s][-1]:.2f}s {tokens[s] / walls[s][-1]:.0f} tok/s" for s in sides),
                flush=True,
            )
    finally:
        backend.close()
        shutil.rmtree(work, ignore_errors=True)

    print()
    mode = "in-process engine" if not args.multiprocessing else "engine-core process"
    print(
        f"requests={args.n} batch_size={args.batch_size} max_tokens {args.min_tokens}..{args.max_tokens} "
        f"(seeded), temperature {args.temperature} top_p {args.top_p}, {mode}, model {model_dir.name}, "
        f"vLLM max_num_seqs {backend.engine_args.get('max_num_seqs', 'default')}, "
        f"chunked prefill {'on' if args.chunked_prefill else 'off'}"
    )
    same = {s: sum(x == y for x, y in zip(texts["a"], texts[s], strict=True)) for s in sides}
    print("completion tokens: " + ", ".join(f"({s}) {tokens[s]}" for s in sides))
    print("texts identical to (a): " + ", ".join(f"({s}) {same[s]}/{args.n}" for s in sides))
    rate = {s: C.median([tokens[s] / w for w in walls[s]]) for s in sides}
    for s, name in sides.items():
        print(
            f"({s}) {name:<20} median {C.median(walls[s]):.3f}s of {C.fmt(walls[s])}; "
            f"{rate[s]:.0f} tok/s; cpu median {C.median(cpus[s]):.3f}s"
        )
    paired = C.median([walls["a"][i] / walls["b"][i] for i in range(args.repeats)])
    print(f"    median of paired ratios (a wall / b wall per repeat): {paired:.3f}")
    if "c" in sides:
        print(
            f"    (c) against (a): {rate['c'] / rate['a']:.3f}; (b) against (c): {rate['b'] / rate['c']:.3f}"
        )
    if tokens["a"] != tokens["b"] or same["b"] != args.n:
        raise SystemExit("(a) and (b) did not produce the same outputs: the comparison is invalid")
    print(f"vllm_offline ratio={rate['b'] / rate['a']:.3f}")


if __name__ == "__main__":  # vLLM may spawn its engine core: never build LLM at import time
    sys.exit(main())
