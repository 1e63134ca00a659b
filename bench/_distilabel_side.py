"""The distilabel side of bench/vs_distilabel.py. Runs with the python of bench/.cache/venv-distilabel
(distilabel 1.5.3), never with the main venv; vs_distilabel.py starts it and reads its JSON result.

    python _distilabel_side.py --model DIR --data rows.jsonl --batch-size 16 --max-tokens 32 \
        --cache-dir DIR --result result.json [--mode pipeline|llm|llm-batched]

rows.jsonl: one {"id", "system_prompt", "instruction"} per line: the messages mmsynth renders from
t2i.expand, rendered beforehand in the main venv.

mode pipeline (the measured one): LoadDataFromDicts >> TextGeneration(TransformersLLM), both with
    batch size --batch-size, `pipeline.run(use_cache=False)`; greedy, max_new_tokens, no repetition
    penalty. Timed: `pipeline.run` (its worker processes, model load and generation included).
mode llm: TransformersLLM alone, `load()` then `generate_outputs` on batches of --batch-size, no
    pipeline around it (a diagnosis: how much of the time is the LLM layer itself).
mode llm-batched: the same, with the transformers pipeline inside it told to batch
    (`_pipeline._batch_size = --batch-size`; distilabel 1.5.3 passes no batch size, so its pipeline
    runs one prompt at a time). Diagnosis only: not something distilabel's API offers.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["DISTILABEL_DISABLE_TELEMETRY"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def generation_kwargs(max_tokens: int) -> dict:
    # Greedy, no repetition penalty (distilabel's default is 1.1), fixed max_new_tokens: the same
    # token work as mmsynth's greedy requests. temperature/top_k/top_p are ignored when greedy.
    return {
        "max_new_tokens": max_tokens,
        "do_sample": False,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "repetition_penalty": 1.0,
    }


def time_llm_calls(log_path: Path) -> None:
    """Wrap TransformersLLM.load/generate to log their durations (the step processes are forked, so
    they inherit the wrapper)."""
    from distilabel.models.llms import TransformersLLM

    def wrap(name):
        original = getattr(TransformersLLM, name)

        def timed(self, *a, **kw):
            t0 = time.perf_counter()
            try:
                return original(self, *a, **kw)
            finally:
                with log_path.open("a") as f:
                    f.write(json.dumps({"call": name, "seconds": time.perf_counter() - t0}) + "\n")

        timed.__wrapped__ = original
        setattr(TransformersLLM, name, timed)

    wrap("load")
    wrap("generate")


def run_pipeline(args, rows: list[dict]) -> dict:
    import torch
    from distilabel.models.llms import TransformersLLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    torch.set_num_threads(1)
    log = Path(args.result).with_suffix(".calls.jsonl")
    log.unlink(missing_ok=True)
    time_llm_calls(log)
    with Pipeline(name="bench-vs-mmsynth", cache_dir=args.cache_dir) as pipeline:
        load = LoadDataFromDicts(data=rows, batch_size=args.batch_size)
        generate = TextGeneration(
            llm=TransformersLLM(model=args.model, device=args.device, torch_dtype=args.dtype),
            input_batch_size=args.batch_size,
        )
        load >> generate
    t0, c0 = time.perf_counter(), time.process_time()
    distiset = pipeline.run(
        use_cache=False,
        parameters={generate.name: {"llm": {"generation_kwargs": generation_kwargs(args.max_tokens)}}},
    )
    wall, cpu_parent = time.perf_counter() - t0, time.process_time() - c0
    ds = distiset["default"]["train"]
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    outputs = {r["id"]: r["generation"] for r in ds}
    out_tokens = 0
    for meta in ds["distilabel_metadata"]:
        stats = (meta or {}).get(f"statistics_{generate.name}") or {}
        out_tokens += int(stats.get("output_tokens") or 0)
    return {
        "wall": wall,
        "cpu_parent": cpu_parent,
        "rows": len(ds),
        "failed": sum(o is None for o in outputs.values()),
        "load_seconds": sum(c["seconds"] for c in calls if c["call"] == "load"),
        "generate_seconds": sum(c["seconds"] for c in calls if c["call"] == "generate"),
        "generate_calls": sum(c["call"] == "generate" for c in calls),
        "output_tokens_reencoded": out_tokens,
        "outputs": outputs,
    }


def run_llm(args, rows: list[dict], batched: bool) -> dict:
    import torch
    from distilabel.models.llms import TransformersLLM

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    llm = TransformersLLM(model=args.model, device=args.device, torch_dtype=args.dtype)
    llm.load()
    if batched:
        llm._pipeline._batch_size = args.batch_size
    loaded = time.perf_counter()
    outputs = {}
    for start in range(0, len(rows), args.batch_size):
        batch = rows[start : start + args.batch_size]
        chats = [
            [{"role": "system", "content": r["system_prompt"]}, {"role": "user", "content": r["instruction"]}]
            for r in batch
        ]
        res = llm.generate_outputs(inputs=chats, num_generations=1, **generation_kwargs(args.max_tokens))
        for r, o in zip(batch, res, strict=True):
            outputs[r["id"]] = o["generations"][0]
    end = time.perf_counter()
    return {
        "wall": end - t0,
        "load_seconds": loaded - t0,
        "generate_seconds": end - loaded,
        "rows": len(outputs),
        "failed": sum(o is None for o in outputs.values()),
        "outputs": outputs,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--mode", choices=("pipeline", "llm", "llm-batched"), default="pipeline")
    args = ap.parse_args()
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    if args.mode == "pipeline":
        result = run_pipeline(args, rows)
    else:
        result = run_llm(args, rows, batched=args.mode == "llm-batched")
    import distilabel
    import torch
    import transformers

    result["versions"] = {
        "distilabel": distilabel.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
