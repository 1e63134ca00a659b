"""mmsynth against distilabel 1.5.3 on the same prompts, the same local model and the same token work.

    .venv/bin/python bench/vs_distilabel.py [--n 500] [--repeats 3] [--batch-size 16] [--max-tokens 32]
                                            [--diagnose]

distilabel runs in its own virtual environment, bench/.cache/venv-distilabel, made on first use:
CPU torch==2.13.0 first (so nothing pulls a CUDA build; on these machines pip finds the +cpu wheel in
its local wheel folder), then `distilabel[hf-transformers]==1.5.3`, requests and pillow.

distilabel: `LoadDataFromDicts >> TextGeneration(TransformersLLM(local tiny model folder))`,
    `input_batch_size` = `batch_size` = --batch-size, greedy, max_new_tokens = --max-tokens, no
    repetition penalty, `pipeline.run(use_cache=False)`, offline; one fresh process per repeat
    (bench/_distilabel_side.py). Timed: `pipeline.run` (its step processes, model load, generation).
mmsynth: as in bench/overhead.py: `run_recipe` in this process (warm), a JSONL seed source, the built-in
    t2i.expand template, the transformers backend, greedy, the same batch size and max_tokens,
    heuristics + exact_dedup, a fresh run folder and response cache per repeat (requests.sent == n
    is checked). Timed: `run_recipe` (model load included).
Both get exactly the same chat messages (rendered with mmsynth.prompts beforehand) and one thread.
Also measured, not in the headline: each side as a whole fresh process (python start-up and imports
included; mmsynth through its CLI, `mmsynth run RECIPE --out DIR -q`).

--diagnose adds two runs of distilabel's TransformersLLM without its pipeline: as it is, and with
the transformers pipeline inside it forced to batch (which distilabel's API does not offer).

The headline, printed last: `vs_distilabel ratio=<median distilabel / median mmsynth>` (target >= 3).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # before anything imports torch: pins threads, offline mode

DISTILABEL_VERSION = "1.5.3"
SIDE_SCRIPT = C.BENCH_DIR / "_distilabel_side.py"


def venv_ready(py: Path) -> str | None:
    """The versions line when `py` has distilabel 1.5.3, torch and transformers importable, else None."""
    if not py.exists():
        return None
    code = (
        "import distilabel, torch, transformers; "
        f"assert distilabel.__version__ == {DISTILABEL_VERSION!r}, distilabel.__version__; "
        "print(f'distilabel {distilabel.__version__}, transformers {transformers.__version__}, "
        "torch {torch.__version__} (cuda {torch.version.cuda})')"
    )
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_venv(venv: Path) -> Path:
    py = venv / "bin" / "python"
    versions = venv_ready(py)
    if versions:
        print(f"distilabel venv: {venv} ({versions})")
        return py
    print(f"installing distilabel {DISTILABEL_VERSION} into {venv} (a few minutes, once)", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    log = venv.parent / "venv-distilabel-install.log"
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        # CPU torch first: distilabel's extra asks for torch, and a bare `torch` resolves to a CUDA build.
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "torch==2.13.0"],
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            f"distilabel[hf-transformers]=={DISTILABEL_VERSION}",
            "requests",
            "pillow",
        ],
    ]
    with log.open("w") as f:
        for cmd in steps:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                tail = "\n".join(log.read_text().splitlines()[-30:])
                raise SystemExit(
                    f"installing the distilabel venv failed at: {' '.join(cmd)}\n{tail}\n(log: {log})"
                )
    versions = venv_ready(py)
    if not versions:
        r = subprocess.run(
            [str(py), "-c", "import distilabel, torch, transformers"], capture_output=True, text=True
        )
        raise SystemExit(f"the distilabel venv installed but does not import:\n{r.stderr[-3000:]}")
    if "cuda None" not in versions:
        print(
            f"warning: the distilabel venv has a CUDA build of torch ({versions}); on a CPU machine it still runs"
        )
    print(f"distilabel venv: {venv} ({versions})")
    return py


def write_rows(folder: Path, n: int) -> Path:
    """The messages for distilabel: the system and user text mmsynth renders from t2i.expand."""
    path = folder / f"rows-{n}.jsonl"
    with path.open("w") as f:
        for i, chat in enumerate(C.rendered_chats(n)):
            roles = {m["role"]: m["content"] for m in chat}
            assert set(roles) == {"system", "user"}, roles
            f.write(
                json.dumps(
                    {"id": f"idea-{i:05d}", "system_prompt": roles["system"], "instruction": roles["user"]}
                )
                + "\n"
            )
    return path


def run_distilabel(py: Path, model_dir: Path, rows: Path, args, work: Path, mode: str = "pipeline") -> dict:
    """One fresh distilabel process; its result JSON plus `process_wall` (the whole process)."""
    tag = f"{mode}-{time.monotonic_ns()}"
    result = work / f"distilabel-{tag}.json"
    log = work / f"distilabel-{tag}.log"
    cmd = [
        str(py),
        str(SIDE_SCRIPT),
        "--model",
        str(model_dir),
        "--data",
        str(rows),
        "--batch-size",
        str(args.batch_size),
        "--max-tokens",
        str(args.max_tokens),
        "--cache-dir",
        str(work / "distilabel-cache" / tag),
        "--result",
        str(result),
        "--mode",
        mode,
        "--device",
        args.device,
        "--dtype",
        args.dtype,
    ]
    t0 = time.perf_counter()
    with log.open("w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=work)
    process_wall = time.perf_counter() - t0
    if r.returncode != 0 or not result.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"distilabel ({mode}) failed with exit code {r.returncode}:\n{tail}")
    out = json.loads(result.read_text())
    out["process_wall"] = process_wall
    shutil.rmtree(work / "distilabel-cache" / tag, ignore_errors=True)
    return out


def run_mmsynth_cli(recipe: Path, out: Path, n: int) -> float:
    """`mmsynth run RECIPE --out DIR -q` as a fresh process; its wall time (imports included)."""
    if out.exists():
        shutil.rmtree(out)
    exe = Path(sys.executable).parent / "mmsynth"
    t0 = time.perf_counter()
    r = subprocess.run(
        [str(exe), "run", str(recipe), "--out", str(out), "-q"], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"mmsynth run failed ({r.returncode}):\n{r.stderr[-3000:]}")
    sent = json.loads((out / "stats.json").read_text())["requests"]["sent"]
    if sent != n:
        raise SystemExit(f"mmsynth CLI sent {sent} requests, expected {n}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="prompts per run (default 500)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each side; the median is reported")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    C.add_model_args(ap)
    ap.add_argument("--venv", type=Path, default=C.CACHE_DIR / "venv-distilabel", help="distilabel's venv")
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="also time distilabel's TransformersLLM alone, unbatched and batched",
    )
    args = ap.parse_args()
    C.one_thread()

    py = ensure_venv(args.venv.resolve())
    model_dir = C.model_dir(args)
    work = C.scratch("vs-distilabel-")
    try:
        rows = write_rows(work, args.n)
        where = {"device": args.device, "dtype": args.dtype}
        recipe = C.write_recipe(
            work, C.write_ideas(work, args.n), model_dir, args.batch_size, args.max_tokens, **where
        )

        # Warm-up (not timed): this process's imports for mmsynth; file caches and .pyc for distilabel.
        warm = min(args.n, 2 * args.batch_size)
        warm_recipe = C.write_recipe(
            work / "warm",
            C.write_ideas(work / "warm", warm),
            model_dir,
            args.batch_size,
            args.max_tokens,
            **where,
        )
        C.run_mmsynth(warm_recipe, work / "warm-run", expect_requests=warm)
        run_distilabel(py, model_dir, write_rows(work / "warm", warm), args, work)

        d_runs: list[dict] = []
        m_times, m_cpu, m_process = [], [], []
        for r in range(args.repeats):
            order = ("d", "m") if r % 2 == 0 else ("m", "d")
            for side in order:
                if side == "d":
                    d = run_distilabel(py, model_dir, rows, args, work)
                    if d["rows"] != args.n or d["failed"]:
                        raise SystemExit(
                            f"distilabel returned {d['rows']} rows, {d['failed']} failed; expected {args.n}"
                        )
                    d_runs.append(d)
                else:
                    t, c, _ = C.run_mmsynth(recipe, work / "run", expect_requests=args.n)
                    m_times.append(t)
                    m_cpu.append(c)
                    m_process.append(run_mmsynth_cli(recipe, work / "run-cli", args.n))
            d = d_runs[-1]
            print(
                f"repeat {r + 1}/{args.repeats}: distilabel pipeline.run {d['wall']:.2f}s "
                f"(load {d['load_seconds']:.2f}s, generate {d['generate_seconds']:.2f}s; process {d['process_wall']:.2f}s)"
                f"  mmsynth run_recipe {m_times[-1]:.2f}s (process {m_process[-1]:.2f}s)",
                flush=True,
            )

        m_out = C.mmsynth_outputs(work / "run")
        d_out = d_runs[-1]["outputs"]
        same = sum(d_out.get(k) == v for k, v in m_out.items())
        d_med = C.median([d["wall"] for d in d_runs])
        m_med = C.median(m_times)
        d_gen = C.median([d["generate_seconds"] for d in d_runs])
        d_load = C.median([d["load_seconds"] for d in d_runs])
        d_proc = C.median([d["process_wall"] for d in d_runs])
        m_proc = C.median(m_process)
        print()
        print(f"versions: {d_runs[-1]['versions']}")
        print(
            f"prompts={args.n} batch_size={args.batch_size} max_new_tokens={args.max_tokens} greedy, 1 thread, "
            f"{args.device}/{args.dtype}, model {model_dir.name}; "
            f"distilabel generate() calls per run: {d_runs[-1]['generate_calls']}"
        )
        print(
            f"identical outputs distilabel vs mmsynth: {same}/{args.n}; distilabel output tokens "
            f"(its own count, re-encoded text): {d_runs[-1]['output_tokens_reencoded']}"
        )
        print(f"distilabel pipeline.run: median {d_med:.3f}s of {C.fmt([d['wall'] for d in d_runs])}")
        print(
            f"    inside it: TransformersLLM.load median {d_load:.3f}s, TransformersLLM.generate median {d_gen:.3f}s"
        )
        print(
            f"mmsynth run_recipe:      median {m_med:.3f}s of {C.fmt(m_times)}; cpu median {C.median(m_cpu):.3f}s"
        )
        print(
            f"whole fresh processes (imports included): distilabel median {d_proc:.3f}s, "
            f"mmsynth CLI median {m_proc:.3f}s, ratio {d_proc / m_proc:.2f}"
        )
        print(f"distilabel's generate() alone vs all of mmsynth run_recipe: {d_gen / m_med:.2f}")

        if args.diagnose:
            for mode in ("llm", "llm-batched"):
                d = run_distilabel(py, model_dir, rows, args, work, mode=mode)
                same = sum(d["outputs"].get(k) == v for k, v in m_out.items())
                print(
                    f"diagnose {mode}: TransformersLLM load {d['load_seconds']:.2f}s, generate_outputs over "
                    f"{args.n} prompts {d['generate_seconds']:.2f}s; identical outputs {same}/{args.n}"
                )
        print(f"vs_distilabel ratio={d_med / m_med:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
