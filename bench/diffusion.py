"""Images/s of `mmsynth run` with the diffusers backend against a plain batched diffusers loop.

    .venv/bin/python bench/diffusion.py [--n 64] [--repeats 5] [--batch-size 8] [--steps 4] [--size 64]

(a) plain: `DiffusionPipeline.from_pretrained`, then for each batch of `--batch-size` prompts one
    pipeline call (the same steps, guidance, size; one seeded CPU generator per image) and each image
    saved as a PNG file.
(b) mmsynth: `run_recipe(recipe, fresh run folder, fresh=True)`: a JSONL seed source of the same
    prompts, the built-in `image.render` template, the `diffusers` backend on the same pipeline folder,
    the same batch size and settings; images and their generation parameters go into Parquet shards,
    with stats and a card. Its response cache lives in the fresh run folder, so every request is
    generated (checked: stats.json requests.sent == n).

Both sides load the pipeline inside the timed region. One untimed warm-up of each side pays the
one-off imports first; repeats alternate which side goes first. One thread for both. The default
pipeline is the tiny random-weight Stable Diffusion of the tests (`make_tiny("sd")`); `--model` takes
any local pipeline folder. The headline, printed last: `diffusion ratio=<mmsynth images/s / plain
images/s>` (target >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import _common as C  # before anything imports torch: pins threads, offline mode

GUIDANCE = 5.0


def tiny_sd() -> Path:
    """The tiny random-weight Stable Diffusion pipeline of mmsynth's tests, built once into bench/.cache."""
    from mmsynth.generators.tiny.builders import make_tiny

    return make_tiny("sd", C.CACHE_DIR / "tiny-sd")


def write_prompts(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prompts.jsonl"
    with path.open("w") as f:
        for i, idea in enumerate(C.ideas(n)):
            f.write(json.dumps({"id": f"p-{i:05d}", "prompt": idea}) + "\n")
    return path


def write_recipe(
    folder: Path,
    prompts: Path,
    model_dir: Path,
    batch_size: int,
    steps: int,
    size: int,
    device: str,
    dtype: str,
) -> Path:
    """The bench-diffusion recipe: prompts.jsonl -> image.render on the diffusers backend. chunk_size is a
    multiple of batch_size so mmsynth forms the same full batches as the plain loop."""
    chunk = batch_size * max(1, 64 // batch_size)
    text = f"""\
name: bench-diffusion
seed: 0
seeds:
  type: jsonl
  path: {json.dumps(str(prompts))}
  id_field: id
models:
  sd:
    backend: diffusers
    model: {json.dumps(str(model_dir))}
    batch_size: {batch_size}
    device: {device}
    dtype: {dtype}
tasks:
  - name: images
    template: image.render
    model: sd
    image: {{steps: {steps}, guidance_scale: {GUIDANCE}, width: {size}, height: {size}}}
output:
  chunk_size: {chunk}
"""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(text)
    return path


def plain_loop(
    model_dir: Path,
    prompts: list[str],
    batch_size: int,
    steps: int,
    size: int,
    out_dir: Path,
    device: str = "cpu",
    dtype: str = "float32",
) -> tuple[float, float]:
    """(wall s, process CPU s) of the plain batched pipeline loop, PNG files included."""
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.utils import deprecation_utils
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as hf_logging

    # As mmsynth does: no per-component loading bars on either side.
    diffusers_logging.disable_progress_bar()
    hf_logging.disable_progress_bar()

    # Newer diffusers renamed torch_dtype to dtype (and warn on the old name).
    dtype_kw = "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    t0, c0 = time.perf_counter(), time.process_time()
    pipe = DiffusionPipeline.from_pretrained(model_dir, **{dtype_kw: getattr(torch, dtype)}).to(device)
    pipe.set_progress_bar_config(disable=True)
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        gens = [torch.Generator("cpu").manual_seed(start + i) for i in range(len(batch))]
        with torch.inference_mode():
            images = pipe(
                prompt=batch,
                num_inference_steps=steps,
                guidance_scale=GUIDANCE,
                width=size,
                height=size,
                generator=gens,
            ).images
        for i, img in enumerate(images):
            img.save(out_dir / f"{start + i:05d}.png")
    return time.perf_counter() - t0, time.process_time() - c0


def count_images(run_dir: Path) -> int:
    """Rows of the run's accepted shards that carry an image."""
    import pyarrow.parquet as pq

    n = 0
    for p in sorted((run_dir / "data").rglob("*.parquet")):
        if "rejected" in p.as_posix():
            continue
        n += sum(1 for row in pq.read_table(p, columns=["image"]).to_pylist() if row["image"])
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="images per run (default 64)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each side; the median is reported")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="image width and height in pixels")
    ap.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a local diffusers pipeline folder (default: the tiny random SD, built into bench/.cache)",
    )
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: both sides run there")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--plain-only", action="store_true", help="time only the plain loop (no mmsynth side)")
    args = ap.parse_args()
    C.one_thread()

    model_dir = args.model.resolve() if args.model else tiny_sd()
    work = C.scratch("diffusion-")
    try:
        prompts = C.ideas(args.n)
        recipe = write_recipe(
            work,
            write_prompts(work, args.n),
            model_dir,
            args.batch_size,
            args.steps,
            args.size,
            args.device,
            args.dtype,
        )
        where = {"device": args.device, "dtype": args.dtype}
        shape = (args.batch_size, args.steps, args.size)

        # Warm-up (not timed): imports and first-call initialisation of both paths.
        warm = min(args.n, 2 * args.batch_size)
        plain_loop(model_dir, prompts[:warm], *shape, work / "warm-png", **where)
        if not args.plain_only:
            warm_recipe = write_recipe(
                work / "warm", write_prompts(work / "warm", warm), model_dir, *shape, **where
            )
            C.run_mmsynth(warm_recipe, work / "warm-run", expect_requests=warm)

        a_times, a_cpu, b_times, b_cpu = C.alternate(
            args.repeats,
            lambda: plain_loop(model_dir, prompts, *shape, work / "png", **where),
            None if args.plain_only else lambda: C.run_mmsynth(recipe, work / "run", expect_requests=args.n),
        )

        a_med = C.median(a_times)
        print()
        print(
            f"images={args.n} batch_size={args.batch_size} steps={args.steps} {args.size}x{args.size} "
            f"guidance={GUIDANCE}, 1 thread, {args.device}/{args.dtype}, pipeline {model_dir.name}"
        )
        print(
            f"(a) plain diffusers loop: median {a_med:.3f}s of {C.fmt(a_times)} = {args.n / a_med:.2f} images/s; "
            f"cpu median {C.median(a_cpu):.3f}s"
        )
        if args.plain_only:
            return
        made = count_images(work / "run")
        if made != args.n:
            raise SystemExit(f"mmsynth wrote {made} images, expected {args.n}: the timing is invalid")
        b_med = C.median(b_times)
        paired = C.median([a / b for a, b in zip(a_times, b_times, strict=True)])
        print(
            f"(b) mmsynth run_recipe:   median {b_med:.3f}s of {C.fmt(b_times)} = {args.n / b_med:.2f} images/s; "
            f"cpu median {C.median(b_cpu):.3f}s"
        )
        print(f"    images in the run's shards: {made}/{args.n}")
        print(
            f"    median of paired ratios (a/b per repeat): {paired:.3f}; "
            f"process CPU time ratio (a/b): {C.median(a_cpu) / C.median(b_cpu):.3f}"
        )
        print(f"diffusion ratio={a_med / b_med:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
