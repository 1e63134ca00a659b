"""Shared pieces of the bench scripts: one thread, the tiny model, the prompts, the mmsynth side.

Import this module before torch: it pins every thread pool to one thread (the machines these
benchmarks run on are shared 2-core VMs; one thread each makes the two sides comparable).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the Rust tokenizer would otherwise use both cores
# Never reach a model hub: everything is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import contextlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"
# mmsynth's own home (tiny models for `tiny:` ids) goes into the bench cache too, not ~/.cache.
os.environ.setdefault("MMSYNTH_HOME", str(CACHE_DIR / "mmsynth-home"))

TEMPLATE = "t2i.expand"
TEMPLATE_VAR = "idea"


def add_model_args(ap) -> None:
    """--model / --device / --dtype, shared by the bench scripts (defaults: the tiny LM on the CPU)."""
    ap.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a local causal-LM folder with a chat template (default: the tiny random Qwen2, built into bench/.cache)",
    )
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: both sides run there")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))


def model_dir(args) -> Path:
    return args.model.resolve() if args.model else tiny_lm()


def one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work already started: harmless
        torch.set_num_interop_threads(1)


def tiny_lm() -> Path:
    """The tiny random-weight Qwen2 of mmsynth's smoke tests, built once into bench/.cache/tiny-lm."""
    from mmsynth.generators.tiny.builders import make_tiny

    return make_tiny("lm", CACHE_DIR / "tiny-lm")


_SUBJECTS = (
    "a red fox",
    "an old lighthouse",
    "a paper boat",
    "a glass teapot",
    "a sleeping cat",
    "a steam train",
    "a bowl of ramen",
    "a desert cactus",
    "a violin",
    "a hot-air balloon",
    "a snow leopard",
    "a city tram",
    "a stack of books",
    "a koi pond",
    "a wooden bridge",
    "a robot gardener",
    "a lemon tree",
    "a vintage camera",
    "a windmill",
    "a jellyfish",
)
_SETTINGS = (
    "at dawn",
    "in heavy rain",
    "on a crowded market street",
    "under the northern lights",
    "in a quiet library",
    "on a misty mountain",
    "beside a river",
    "in a neon-lit alley",
    "in an autumn forest",
    "on a sunny beach",
)
_MOODS = ("calm", "playful", "mysterious", "melancholic", "cheerful")


def ideas(n: int) -> list[str]:
    """`n` distinct short ideas, the same every time (a fixed seed)."""
    combos = [f"{m} {s} {p}" for s in _SUBJECTS for p in _SETTINGS for m in _MOODS]  # 1,000
    rng = random.Random(1234)
    rng.shuffle(combos)
    if n > len(combos):  # longer runs: number the repeats so every idea stays distinct
        combos = [f"{c} (variation {k})" for k in range(n // len(combos) + 1) for c in combos]
    return combos[:n]


def write_ideas(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ideas-{n}.jsonl"
    with path.open("w") as f:
        for i, idea in enumerate(ideas(n)):
            f.write(json.dumps({"id": f"idea-{i:05d}", TEMPLATE_VAR: idea}) + "\n")
    return path


def rendered_chats(n: int) -> list[list[dict[str, str]]]:
    """The chat messages mmsynth sends for each idea, rendered with mmsynth.prompts (not timed)."""
    from mmsynth.prompts import TemplateRegistry, render_template

    tpl = TemplateRegistry().get(TEMPLATE)
    chats = []
    for idea in ideas(n):
        prompt = render_template(tpl, {TEMPLATE_VAR: idea})
        chats.append([{"role": m.role, "content": m.text} for m in prompt.messages])
    return chats


def write_recipe(
    folder: Path,
    ideas_path: Path,
    model_dir: Path,
    batch_size: int,
    max_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    device: str = "cpu",
    dtype: str = "float32",
) -> Path:
    """A recipe: the ideas JSONL -> t2i.expand on the transformers backend, fixed max_tokens (greedy
    unless `temperature` > 0), heuristics + exact_dedup. chunk_size is a multiple of batch_size so the batches are the same ones
    the plain loop forms. The response cache stays at its default, inside each fresh run folder."""
    chunk = batch_size * max(1, 256 // batch_size)
    text = f"""\
name: bench-overhead
seed: 0
seeds:
  type: jsonl
  path: {json.dumps(str(ideas_path))}
  id_field: id
models:
  lm:
    backend: transformers
    model: {json.dumps(str(model_dir))}
    batch_size: {batch_size}
    device: {device}
    dtype: {dtype}
tasks:
  - name: expand
    template: {TEMPLATE}
    model: lm
    sampling: {{temperature: {float(temperature)}, top_p: {float(top_p)}, max_tokens: {max_tokens}}}
validators:
  - {{type: heuristics}}
  - {{type: exact_dedup}}
output:
  chunk_size: {chunk}
"""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(text)
    return path


def run_mmsynth(recipe: Path, out: Path, expect_requests: int | None = None) -> tuple[float, float, dict]:
    """One in-process `mmsynth run` into a fresh folder; returns (wall s, process CPU s, stats.json).

    CPU time is the whole process's (all threads: the event loop and the backend's worker thread)."""
    from mmsynth.factory.engine.runner import run_recipe

    if out.exists():
        shutil.rmtree(out)
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_recipe(recipe, out, fresh=True, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stats = json.loads((result.run_dir / "stats.json").read_text())
    if expect_requests is not None and stats["requests"]["sent"] != expect_requests:
        raise SystemExit(
            f"mmsynth sent {stats['requests']['sent']} requests, expected {expect_requests} "
            f"(cached: {stats['requests']['cached']}): the response cache was shared; the timing is invalid"
        )
    if stats["requests"]["failed"]:
        raise SystemExit(f"mmsynth: {stats['requests']['failed']} requests failed: {stats['reject_reasons']}")
    return wall, cpu, stats


def mmsynth_outputs(run_dir: Path, key: str = "id") -> dict[str, str]:
    """seed field `key` -> output text, from the run's Parquet shards (accepted and rejected)."""
    import pyarrow.parquet as pq

    out = {}
    for p in sorted((run_dir / "data").rglob("*.parquet")):
        for row in pq.read_table(p, columns=["seed", "output"]).to_pylist():
            out[json.loads(row["seed"])[key]] = row["output"]
    return out


def alternate(repeats: int, plain, mmsynth) -> tuple[list[float], list[float], list[float], list[float]]:
    """Run both sides `repeats` times, alternating which goes first (so neither always runs warm);
    each side returns (wall s, CPU s, ...) and `mmsynth` may be None (plain only). Prints each repeat.
    Returns the plain side's wall and CPU times, then mmsynth's."""
    a_times, a_cpu, b_times, b_cpu = [], [], [], []
    for r in range(repeats):
        for side in ("a", "b") if r % 2 == 0 else ("b", "a"):
            if side == "a":
                t, c, *_ = plain()
                a_times.append(t)
                a_cpu.append(c)
            elif mmsynth is not None:
                t, c, *_ = mmsynth()
                b_times.append(t)
                b_cpu.append(c)
        line = f"repeat {r + 1}/{repeats}: plain {a_times[-1]:.2f}s (cpu {a_cpu[-1]:.2f}s)"
        if b_times:
            line += f"  mmsynth {b_times[-1]:.2f}s (cpu {b_cpu[-1]:.2f}s)"
        print(line, flush=True)
    return a_times, a_cpu, b_times, b_cpu


def scratch(prefix: str) -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=CACHE_DIR))


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:.2f}" for x in xs) + "]"
