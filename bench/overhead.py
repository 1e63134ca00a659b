"""mmsynth's overhead over a plain batched transformers loop, on the same prompts and the same model.

    .venv/bin/python bench/overhead.py [--n 500] [--repeats 5] [--batch-size 16] [--max-tokens 32]

(a) plain: load tokenizer + model, then for each batch of `--batch-size` chats: apply the chat
    template, tokenize with left padding, greedy `model.generate(max_new_tokens=...)`, decode, and
    write the outputs to a JSONL file.
(b) mmsynth: `run_recipe(recipe, fresh run folder, fresh=True)`: a JSONL seed source of the same ideas,
    the built-in `t2i.expand` template, the transformers backend on the same model folder, greedy,
    the same batch size and max_tokens, validators heuristics + exact_dedup, Parquet shards, stats,
    card. Its response cache lives in the fresh run folder, so every request is generated
    (checked: stats.json requests.sent == n).

Both sides load the model inside the timed region; the prompts of (a) are rendered with
mmsynth.prompts beforehand (not timed), so both send the same messages. One untimed warm-up of each
side pays the one-off imports first; repeats alternate which side goes first. One thread for both.
The headline, printed last: `overhead ratio=<median b / median a>` (target <= 1.10).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import _common as C  # before anything imports torch: pins threads, offline mode


def plain_loop(
    model_dir: Path,
    chats: list,
    batch_size: int,
    max_tokens: int,
    out_path: Path,
    temperature: float = 0.0,
    top_p: float = 1.0,
    device: str = "cpu",
    dtype: str = "float32",
) -> tuple[float, float, int, list[str]]:
    """(wall s, process CPU s, completion tokens, outputs) of the plain batched loop."""
    if temperature > 0:  # transformers' own sampling; top_k off, as in mmsynth
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    else:
        sampling = {"do_sample": False}
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0, c0 = time.perf_counter(), time.process_time()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device).eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    outputs: list[str] = []
    completion = 0
    with out_path.open("w") as f:
        for start in range(0, len(chats), batch_size):
            batch = chats[start : start + batch_size]
            texts = tok.apply_chat_template(batch, add_generation_prompt=True, tokenize=False)
            enc = tok(texts, padding=True, return_tensors="pt", add_special_tokens=False).to(device)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=max_tokens, **sampling)
            new = out[:, enc["input_ids"].shape[1] :].tolist()
            for ids in new:
                end = next((i for i, t in enumerate(ids) if t in eos), None)
                completion += len(ids) if end is None else end + 1
                body = ids if end is None else ids[:end]
                text = tok.decode(body, skip_special_tokens=True)
                outputs.append(text)
                f.write(json.dumps({"output": text}) + "\n")
    return time.perf_counter() - t0, time.process_time() - c0, completion, outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="prompts per run (default 500)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each side; the median is reported")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="0 (default): greedy on both sides, identical outputs. >0: both sides sample (mmsynth with its "
        "seeded per-row sampler, the plain loop with transformers' do_sample); outputs then differ",
    )
    ap.add_argument("--top-p", type=float, default=1.0)
    C.add_model_args(ap)
    args = ap.parse_args()
    C.one_thread()

    model_dir = C.model_dir(args)
    work = C.scratch("overhead-")
    try:
        ideas_path = C.write_ideas(work, args.n)
        sampling = {"temperature": args.temperature, "top_p": args.top_p}
        where = {"device": args.device, "dtype": args.dtype}
        recipe = C.write_recipe(
            work, ideas_path, model_dir, args.batch_size, args.max_tokens, **sampling, **where
        )
        chats = C.rendered_chats(args.n)

        # Warm-up (not timed): imports, first-call initialisation of both paths.
        warm = min(args.n, 2 * args.batch_size)
        warm_ideas = C.write_ideas(work / "warm", warm)
        warm_recipe = C.write_recipe(
            work / "warm", warm_ideas, model_dir, args.batch_size, args.max_tokens, **sampling, **where
        )
        plain_loop(
            model_dir,
            chats[:warm],
            args.batch_size,
            args.max_tokens,
            work / "warm.jsonl",
            **sampling,
            **where,
        )
        C.run_mmsynth(warm_recipe, work / "warm-run", expect_requests=warm)

        a_times, b_times, a_cpu, b_cpu = [], [], [], []
        a_tokens = b_tokens = None
        a_out: list[str] = []
        for r in range(args.repeats):
            order = ("a", "b") if r % 2 == 0 else ("b", "a")
            for side in order:
                if side == "a":
                    t, c, a_tokens, a_out = plain_loop(
                        model_dir,
                        chats,
                        args.batch_size,
                        args.max_tokens,
                        work / "plain.jsonl",
                        **sampling,
                        **where,
                    )
                    a_times.append(t)
                    a_cpu.append(c)
                else:
                    t, c, stats = C.run_mmsynth(recipe, work / "run", expect_requests=args.n)
                    b_tokens = stats["tokens"]["completion"]
                    b_times.append(t)
                    b_cpu.append(c)
            print(
                f"repeat {r + 1}/{args.repeats}: plain {a_times[-1]:.2f}s (cpu {a_cpu[-1]:.2f}s)  "
                f"mmsynth {b_times[-1]:.2f}s (cpu {b_cpu[-1]:.2f}s)",
                flush=True,
            )

        b_out = C.mmsynth_outputs(work / "run")
        same = sum(a_out[i] == b_out.get(f"idea-{i:05d}") for i in range(args.n))
        a_med, b_med = C.median(a_times), C.median(b_times)
        paired = C.median([b / a for a, b in zip(a_times, b_times, strict=True)])
        cpu_ratio = C.median(b_cpu) / C.median(a_cpu)
        print()
        mode = (
            "greedy"
            if args.temperature <= 0
            else f"sampled (temperature {args.temperature}, top_p {args.top_p})"
        )
        print(
            f"prompts={args.n} batch_size={args.batch_size} max_new_tokens={args.max_tokens} {mode}, 1 thread, "
            f"{args.device}/{args.dtype}, model {model_dir.name}"
        )
        # Greedy: the same tokens exactly, or the run is invalid. Sampled: rows that draw EOS early
        # differ by chance (a few %), but a finished row stays in its padded batch until the batch
        # ends, so both sides still do the same compute; the difference is reported, not fatal.
        if a_tokens == b_tokens:
            verdict = "equal"
        elif args.temperature > 0:
            diff = 100 * abs(a_tokens - b_tokens) / max(a_tokens, 1)
            verdict = f"differ by {diff:.1f}% (sampled: EOS draws differ; padded batches do the same compute)"
        else:
            verdict = "MISMATCH"
        print(
            f"completion tokens: plain={a_tokens} mmsynth={b_tokens} "
            f"(n * max_tokens = {args.n * args.max_tokens}): {verdict}"
        )
        print(f"identical outputs: {same}/{args.n}")
        print(
            f"(a) plain transformers loop: median {a_med:.3f}s of {C.fmt(a_times)}; cpu median {C.median(a_cpu):.3f}s"
        )
        print(
            f"(b) mmsynth run_recipe:      median {b_med:.3f}s of {C.fmt(b_times)}; cpu median {C.median(b_cpu):.3f}s"
        )
        print(
            f"    difference of medians: {b_med - a_med:+.3f}s = {1000 * (b_med - a_med) / args.n:+.2f} ms per request"
        )
        print(
            f"    median of paired ratios (b/a per repeat): {paired:.3f}; process CPU time ratio: {cpu_ratio:.3f}"
        )

        if verdict == "MISMATCH":
            raise SystemExit("completion token totals differ: the two sides did not do the same work")
        print(f"overhead ratio={b_med / a_med:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
