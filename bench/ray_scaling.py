"""The same job locally and on a local Ray instance with 1 and 2 actors: records/s and the ratios.

    .venv/bin/python bench/ray_scaling.py [--seeds 256] [--repeats 1] [--max-tokens 32] [--local-threads 1]

The job: scene seeds -> short captions (n=2) and QA pairs from the tiny random VLM on the CPU, batch 8,
chunks of 8 seeds, validators heuristics + json_schema + exact_dedup, Parquet shards; a fresh run folder
and a fresh response cache each time, so every request is generated (checked). A worker is one copy of
the model computing on one thread: locally the driver itself (torch pinned to `--local-threads`, 1), on Ray 1 or 2
actors of 1 CPU each (Ray gives an actor as many threads as CPUs). Ray is started once with 2 CPUs,
before the Ray runs and outside the timing; each timed run includes loading the model (in the driver,
or in every actor), as a real job does. Records are checked identical across the three sides.

The headline, printed last: `ray_scaling ratio=<records/s with 2 actors / records/s locally>`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
os.environ.setdefault("MMSYNTH_HOME", str(BENCH_DIR / ".cache" / "mmsynth-home"))
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_var] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


def write_recipe(path: Path, seeds: int, max_tokens: int, actors: int) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""\
            name: ray_scaling
            seed: 3
            seeds: {{type: scenes, count: {seeds}, image_size: 64}}
            models:
              vlm: {{backend: transformers, model: "tiny:vlm", batch_size: 8, device: cpu}}
            tasks:
              - name: captions
                template: caption.short
                model: vlm
                n: 2
                sampling: {{temperature: 0.8, max_tokens: {max_tokens}}}
              - name: qa
                template: vqa.pairs
                model: vlm
                inputs: {{scene: description}}
                sampling: {{max_tokens: {max_tokens}}}
            validators:
              - {{type: heuristics, min_chars: 4, reject_truncated: false}}
              - {{type: json_schema}}
              - {{type: exact_dedup}}
            output: {{chunk_size: 8}}
            ray:
              models:
                vlm: {{actors: {actors}, num_cpus: 1}}
            """
        )
    )
    return path


def run_once(work: Path, side: str, args) -> tuple[float, int, list]:
    """(wall s, records, sorted (id, output) rows) of one fresh run of the job on `side`."""
    import pyarrow.parquet as pq

    from mmsynth.factory.engine.runner import run_recipe
    from mmsynth.factory.executors.ray import RayOptions

    actors = {"local": 1, "ray-1": 1, "ray-2": 2}[side]
    recipe = write_recipe(work / f"{side}.yaml", args.seeds, args.max_tokens, actors)
    out = work / f"run-{side}"
    shutil.rmtree(out, ignore_errors=True)
    ray = None if side == "local" else RayOptions()
    t0 = time.perf_counter()
    result = run_recipe(recipe, out, progress=False, ray=ray)
    wall = time.perf_counter() - t0
    stats = result.stats
    assert stats["requests"]["cached"] == 0 and stats["requests"]["sent"] == 2 * args.seeds, stats["requests"]
    rows = sorted(
        (i, o)
        for f in (out / "data").rglob("*.parquet")
        for i, o in zip(*pq.read_table(f, columns=["id", "output"]).to_pydict().values(), strict=True)
    )
    return wall, stats["records"]["total"], rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 256 seeds: about 30 s a side here, so the actors' start-up (a few seconds) does not dominate.
    ap.add_argument("--seeds", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--local-threads", type=int, default=1, help="torch threads of the local run (default 1: one worker)"
    )
    args = ap.parse_args()

    import ray
    import torch

    from mmsynth.generators.model_paths import resolve_model_path

    torch.set_num_threads(args.local_threads)
    resolve_model_path("tiny:vlm")  # built once, outside the timing
    work = Path(tempfile.mkdtemp(prefix="ray_scaling-"))
    sides = ("local", "ray-1", "ray-2")
    walls: dict[str, list[float]] = {s: [] for s in sides}
    records, reference = 0, None
    try:
        # One untimed local run pays the one-off imports (transformers, datasets) for every side.
        run_once(work, "local", args)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        for r in range(args.repeats):
            for side in sides if r % 2 == 0 else sides[::-1]:
                wall, records, rows = run_once(work, side, args)
                reference = reference or rows
                assert rows == reference, f"{side} wrote different records"
                walls[side].append(wall)
                print(f"{side:6s} repeat {r}: {wall:6.2f} s  {records / wall:6.2f} records/s", flush=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    rate = {s: records / statistics.median(w) for s, w in walls.items()}
    print(
        f"\n{records} records per run ({args.seeds} seeds, {2 * args.seeds} requests), {os.cpu_count()} cores"
    )
    for s in sides:
        print(f"{s:6s} median {statistics.median(walls[s]):6.2f} s  {rate[s]:6.2f} records/s")
    print(
        f"ratio ray-1/local={rate['ray-1'] / rate['local']:.3f}  ray-2/ray-1={rate['ray-2'] / rate['ray-1']:.3f}"
    )
    print(f"ray_scaling ratio={rate['ray-2'] / rate['local']:.3f}")


if __name__ == "__main__":
    main()
