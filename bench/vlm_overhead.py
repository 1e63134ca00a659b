"""mmsynth's transformers backend on a VLM against a plain batched `model.generate` loop, same images and chats.

    python bench/vlm_overhead.py [--model DIR] [--device cuda --dtype bfloat16] [--n 256]
                                 [--batch-size 32] [--max-tokens 64] [--repeats 3]

Before the timers: `--n` rendered shape scenes (mmsynth's `scenes` world, at the model's vision image
size) are written as PNG files into a folder, and each file's `caption.short` chat (system + user
with one image) is rendered with mmsynth.prompts.

(a) plain: `AutoProcessor` + `AutoModelForImageTextToText.from_pretrained`, then for each batch of
    `--batch-size` files: open and decode the PNGs (PIL, RGB), `processor.apply_chat_template`,
    `processor(text, images, padding=True)` (left padding), greedy `model.generate(max_new_tokens=...)`,
    decode, and write one JSONL line per output.
(b) mmsynth: `run_recipe(recipe, fresh run folder, fresh=True)`: an `image_folder` seed source on the
    same folder, the built-in `caption.short` template, the `transformers` backend on the same model
    folder, greedy, the same batch size and max_tokens, the `heuristics` validator, Parquet shards
    (with the images), stats, card. Its response cache lives in the fresh run folder, so every request
    is generated (checked: stats.json requests.sent == n).

Both sides load the model inside the timed region. One untimed warm-up of each side (one batch) pays the one-off
imports and CUDA initialisation; repeats alternate which side goes first. The headline, printed last:
`vlm_overhead ratio=<mmsynth completion tokens/s / plain completion tokens/s>` (1.0 = no cost; higher
is better for mmsynth). The default model is the tiny random Idefics3 (`make_tiny("vlm")`); the GPU
script (bench/gpu.sh) passes the realistic random models of bench/make_realistic.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import _common as C  # before anything imports torch: pins threads, offline mode

TEMPLATE = "caption.short"


def write_images(folder: Path, n: int, size: int) -> list[Path]:
    """`n` rendered scenes as PNG files (deterministic: scene i of seed 0), named in sorted order."""
    from mmsynth.generators.scenes.world import make_scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"scene-{i:05d}.png"
        path.write_bytes(make_scene(0, i, size=size, max_objects=4)["image"].data)
        paths.append(path)
    return paths


def rendered_chats(paths: list[Path]) -> list[list[dict]]:
    """Each image's caption.short chat in the content-parts form the processor's template takes."""
    from mmsynth.prompts import TemplateRegistry, render_template
    from mmsynth.prompts.media import ImageRef
    from mmsynth.prompts.messages import TextPart

    tpl = TemplateRegistry().get(TEMPLATE)
    chats = []
    for p in paths:
        prompt = render_template(tpl, {"image": ImageRef.from_path(p)})
        chats.append(
            [
                {
                    "role": m.role,
                    "content": [
                        {"type": "text", "text": part.text}
                        if isinstance(part, TextPart)
                        else {"type": "image"}
                        for part in m.parts
                    ],
                }
                for m in prompt.messages
            ]
        )
    return chats


def write_recipe(
    folder: Path, images: Path, model_dir: Path, batch_size: int, max_tokens: int, device: str, dtype: str
) -> Path:
    """image_folder -> caption.short on the transformers backend, greedy. chunk_size is a multiple of
    batch_size so mmsynth forms the same batches as the plain loop."""
    chunk = batch_size * max(1, 256 // batch_size)
    text = f"""\
name: bench-vlm-overhead
seed: 0
seeds:
  type: image_folder
  path: {json.dumps(str(images))}
models:
  vlm:
    backend: transformers
    model: {json.dumps(str(model_dir))}
    batch_size: {batch_size}
    device: {device}
    dtype: {dtype}
tasks:
  - name: caption
    template: {TEMPLATE}
    model: vlm
    sampling: {{temperature: 0.0, top_p: 1.0, max_tokens: {max_tokens}}}
validators:
  - {{type: heuristics}}
output:
  chunk_size: {chunk}
"""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(text)
    return path


def plain_loop(
    model_dir: Path,
    paths: list[Path],
    chats: list,
    batch_size: int,
    max_tokens: int,
    out_path: Path,
    device: str = "cpu",
    dtype: str = "float32",
) -> tuple[float, float, int, list[str]]:
    """(wall s, process CPU s, completion tokens, outputs) of the plain batched VLM loop."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # as mmsynth does: no per-load bars on either side
    t0, c0 = time.perf_counter(), time.process_time()
    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    torch_dtype = getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch_dtype).to(device).eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    outputs: list[str] = []
    completion = 0
    with out_path.open("w") as f:
        for start in range(0, len(chats), batch_size):
            images = []
            for p in paths[start : start + batch_size]:
                with Image.open(p) as img:
                    images.append([img.convert("RGB")])
            texts = [
                processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                for c in chats[start : start + batch_size]
            ]
            enc = processor(
                text=texts, images=images, padding=True, return_tensors="pt", add_special_tokens=False
            )
            enc = {
                k: (v.to(device, dtype=torch_dtype) if v.is_floating_point() else v.to(device))
                for k, v in enc.items()
            }
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False)
            for ids in out[:, enc["input_ids"].shape[1] :].tolist():
                end = next((i for i, t in enumerate(ids) if t in eos), None)
                completion += len(ids) if end is None else end + 1
                text = processor.tokenizer.decode(ids if end is None else ids[:end], skip_special_tokens=True)
                outputs.append(text)
                f.write(json.dumps({"output": text}) + "\n")
    return time.perf_counter() - t0, time.process_time() - c0, completion, outputs


def vision_image_size(model_dir: Path) -> int:
    """The model's vision tower input size (what the scenes are rendered at)."""
    config = json.loads((model_dir / "config.json").read_text())
    return int(config.get("vision_config", {}).get("image_size", 64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="images per run (default 256)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each side; the median is reported")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a local Idefics3-style VLM folder with a processor (default: the tiny random Idefics3)",
    )
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: both sides run there")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    args = ap.parse_args()
    C.one_thread()

    if args.model:
        model_dir = args.model.resolve()
    else:
        from mmsynth.generators.tiny.builders import make_tiny

        model_dir = make_tiny("vlm", C.CACHE_DIR / "tiny-vlm")
    work = C.scratch("vlm-overhead-")
    try:
        size = vision_image_size(model_dir)
        paths = write_images(work / "images", args.n, size)
        chats = rendered_chats(paths)
        shape = (args.batch_size, args.max_tokens)
        where = {"device": args.device, "dtype": args.dtype}
        recipe = write_recipe(work, work / "images", model_dir, *shape, **where)

        # Warm-up (not timed): imports, CUDA context and kernels, first-call initialisation of both
        # paths. One full batch is enough for that and keeps the GPU script inside its time budget.
        warm = min(args.n, args.batch_size)
        warm_paths = write_images(work / "warm-images", warm, size)
        plain_loop(model_dir, warm_paths, chats[:warm], *shape, work / "warm.jsonl", **where)
        warm_recipe = write_recipe(work / "warm", work / "warm-images", model_dir, *shape, **where)
        C.run_mmsynth(warm_recipe, work / "warm-run", expect_requests=warm)

        plain_result: dict = {}

        def plain() -> tuple[float, float]:
            t, c, plain_result["tokens"], plain_result["out"] = plain_loop(
                model_dir, paths, chats, *shape, work / "plain.jsonl", **where
            )
            return t, c

        def by_mmsynth() -> tuple[float, float]:
            t, c, plain_result["stats"] = C.run_mmsynth(recipe, work / "run", expect_requests=args.n)
            return t, c

        a_times, a_cpu, b_times, b_cpu = C.alternate(args.repeats, plain, by_mmsynth)
        a_tokens, a_out = plain_result["tokens"], plain_result["out"]
        b_tokens = plain_result["stats"]["tokens"]["completion"]

        b_out = C.mmsynth_outputs(work / "run", key="filename")
        same = sum(a_out[i] == b_out.get(p.name) for i, p in enumerate(paths))
        a_med, b_med = C.median(a_times), C.median(b_times)
        a_rate, b_rate = a_tokens / a_med, b_tokens / b_med
        print()
        print(
            f"images={args.n} ({size}px) batch_size={args.batch_size} max_new_tokens={args.max_tokens} greedy, "
            f"{args.device}/{args.dtype}, model {model_dir.name}"
        )
        # Greedy on both sides with the same batches: the same tokens. On a GPU in bf16 a batch's
        # kernels may still round differently between two loads, so a small difference is reported,
        # not fatal; the headline is a rate, so it stays comparable.
        diff = abs(a_tokens - b_tokens) / max(a_tokens, 1)
        verdict = "equal" if a_tokens == b_tokens else f"differ by {100 * diff:.2f}%"
        print(
            f"completion tokens: plain={a_tokens} mmsynth={b_tokens} (n * max_tokens = {args.n * args.max_tokens}): {verdict}"
        )
        print(f"identical outputs: {same}/{args.n}")
        print(
            f"(a) plain VLM loop:    median {a_med:.3f}s of {C.fmt(a_times)} = {a_rate:.1f} tokens/s; cpu median {C.median(a_cpu):.3f}s"
        )
        print(
            f"(b) mmsynth run_recipe: median {b_med:.3f}s of {C.fmt(b_times)} = {b_rate:.1f} tokens/s; cpu median {C.median(b_cpu):.3f}s"
        )
        paired = C.median([(b_tokens / b) / (a_tokens / a) for a, b in zip(a_times, b_times, strict=True)])
        print(f"    median of paired rate ratios (b/a per repeat): {paired:.3f}")
        if diff > 0.05:
            raise SystemExit(
                "completion tokens differ by more than 5%: the two sides did not do the same work"
            )
        print(f"vlm_overhead ratio={b_rate / a_rate:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
