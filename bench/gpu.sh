#!/usr/bin/env bash
# The GPU benchmarks in one go (about 8 minutes at most on one H200), for whenever a GPU is at hand:
# mmsynth's transformers backend against a plain model.generate loop on two random-weight VLMs of
# realistic size (SmolVLM-256M-like, SmolVLM2-2.2B-like), and its diffusers backend against a plain
# diffusers loop on an SD-1.5-sized pipeline, all bf16. No network, no model hub: the models are
# built here by bench/make_realistic.py.
#
#   bench/gpu.sh                              # on the GPU machine
#   bench/gpu.sh --scale tiny --device cpu    # smoke test of the whole chain on a CPU (2 min of CPU)
#   (or GPU_BENCH_SCALE=tiny GPU_BENCH_DEVICE=cpu bench/gpu.sh)
#
# diffusers: the GPU machine may lack it and have no network. Fetch its wheel beforehand, where there
# is network, into bench/wheels/ (git-ignored, never committed):
#   pip download diffusers --no-deps -d bench/wheels
#   pip download importlib_metadata zipp --no-deps -d bench/wheels   # diffusers needs them; may be missing too
# With the device tool, pass carry: ["bench/wheels"] (ignored files travel only when carried).
# The script installs it (into bench/.cache/gpu-pylib, not the system) when diffusers does not import;
# DIFFUSERS_WHEEL=path picks another wheel. Without it, the SD step is skipped and the VLM steps run.
# If mmsynth itself is not installed, the checkout is put on PYTHONPATH under the name `mmsynth`.
#
# Output: one log per step and summary.txt (GPU name, versions, each step's status, time and headline)
# in $OUT when set, else in bench/.cache/gpu/<UTC time>/. The models go to bench/.cache/realistic-<scale>/
# (never under $OUT). Each step runs under `timeout`, clamped to what is left of BUDGET_S (480 s; 3x
# that and 3x each step's limit at --scale tiny, GPU_BENCH_TIMEOUT_SCALE to change). Exit status 0
# when every step passed, 1 when one failed or ran out of time, 2 when no GPU or no mmsynth.
set -uo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
SCALE=${GPU_BENCH_SCALE:-full}
DEVICE=${GPU_BENCH_DEVICE:-cuda}
DTYPE=${GPU_BENCH_DTYPE:-bfloat16}
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --dtype) DTYPE=$2; shift 2 ;;
    *) echo "unknown argument $1 (takes --scale full|tiny, --device cuda|cpu, --dtype bfloat16|float32)" >&2; exit 2 ;;
  esac
done

# The budget and step timeouts are sized for one H200 at full scale. A CPU smoke test on a shared
# machine is slower than that in wall time (imports alone), so tiny scale gets 3x the time.
if [ "$SCALE" = tiny ]; then TSCALE=${GPU_BENCH_TIMEOUT_SCALE:-3}; else TSCALE=${GPU_BENCH_TIMEOUT_SCALE:-1}; fi
BUDGET_S=${BUDGET_S:-$((480 * TSCALE))}

if [ -n "${OUT:-}" ]; then OUTDIR=$OUT; else OUTDIR=bench/.cache/gpu/$(date -u +%Y%m%dT%H%M%SZ); fi
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
SUMMARY=$OUTDIR/summary.txt
MODELS=$REPO/bench/.cache/realistic-$SCALE
PYLIB=$REPO/bench/.cache/gpu-pylib
START=$(date +%s)

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=$REPO/.venv/bin/python
else PY=$(command -v python3 || command -v python); fi

# Sizes per scale. full: batch sizes an H200 holds with room to spare (the 2B VLM at batch 64 needs
# ~5 GB of weights + ~4 GB of KV cache; SD-1.5 at batch 16 with guidance ~10 GB of activations),
# kept small enough in count for the whole script to fit its budget. tiny: a CPU smoke test.
if [ "$SCALE" = tiny ]; then
  VLM_ARGS_256M="--n 8 --batch-size 4 --max-tokens 8 --repeats 1"
  VLM_ARGS_2B="--n 8 --batch-size 4 --max-tokens 8 --repeats 1"
  SD_ARGS="--n 4 --batch-size 2 --steps 2 --size 64 --repeats 1"
else
  VLM_ARGS_256M="--n 256 --batch-size 128 --max-tokens 64 --repeats 3"
  VLM_ARGS_2B="--n 256 --batch-size 64 --max-tokens 64 --repeats 3"
  SD_ARGS="--n 64 --batch-size 16 --steps 10 --size 512 --repeats 3"
fi

say() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME TIMEOUT_S CMD...: run CMD under `timeout` (clamped to the budget left), log to NAME.log,
# record status, seconds and the headline (the last line holding " ratio=") in the summary.
FAILED=0
step() {
  local name=$1 limit=$(($2 * TSCALE)); shift 2
  local left=$((BUDGET_S - ($(date +%s) - START)))
  if [ "$left" -lt 15 ]; then say "$name: SKIPPED (budget of ${BUDGET_S}s spent)"; FAILED=1; return 1; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (timeout ${limit}s): $*" >&2
  local t0=$(date +%s) rc
  timeout -k 10 "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
  rc=$?
  local secs=$(($(date +%s) - t0))
  local head
  head=$(grep -a ' ratio=' "$OUTDIR/$name.log" | tail -1)
  case $rc in
    0) say "$name: ok in ${secs}s${head:+: $head}" ;;
    124|137) say "$name: TIMEOUT after ${secs}s (limit ${limit}s)${head:+ (its headline was out: $head)}"; FAILED=1 ;;
    *) say "$name: FAILED (rc $rc) after ${secs}s; last lines:"; tail -5 "$OUTDIR/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"; FAILED=1 ;;
  esac
  return $rc
}

: > "$SUMMARY"
say "bench/gpu.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) scale=$SCALE device=$DEVICE dtype=$DTYPE commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# --- the GPU ------------------------------------------------------------------------------------
if [ "$DEVICE" = cpu ]; then
  say "gpu: none (CPU run: smoke test only, its timings say nothing about a GPU)"
else
  if ! command -v nvidia-smi > /dev/null; then say "gpu: nvidia-smi not found: no GPU here (use --device cpu for a smoke test)"; exit 2; fi
  say "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
  nvidia-smi > "$OUTDIR/nvidia-smi.txt" 2>&1
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    say "torch.cuda.is_available() is False with $PY: a CPU-only torch? stopping"; exit 2
  fi
fi

# --- imports: mmsynth, diffusers -----------------------------------------------------------------
# Wheels go into bench/.cache/gpu-pylib (on PYTHONPATH), never into the machine's own environment.
# pip when there is one, else unzipped (the wheels needed here are pure Python).
install_wheel() {
  "$PY" -m pip install --no-deps --no-index --target "$PYLIB" "$1" \
    || "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$1" "$PYLIB"
}
export PYTHONPATH=$PYLIB${PYTHONPATH:+:$PYTHONPATH}
if ! "$PY" -c "import mmsynth.factory.engine.runner" 2> /dev/null; then
  # Not installed: the checkout is the package (its folders are mmsynth.*), so link it under that name.
  mkdir -p "$REPO/bench/.cache/pypath"
  ln -sfn "$REPO" "$REPO/bench/.cache/pypath/mmsynth"
  export PYTHONPATH=$REPO/bench/.cache/pypath:$PYTHONPATH
  if ! "$PY" -c "import mmsynth.factory.engine.runner" > "$OUTDIR/import-mmsynth.log" 2>&1; then
    # A dependency of mmsynth is missing: whatever wheels were fetched into bench/wheels/ may hold it.
    for w in bench/wheels/*.whl; do [ -f "$w" ] && install_wheel "$w" >> "$OUTDIR/import-mmsynth.log" 2>&1; done
    if ! "$PY" -c "import mmsynth.factory.engine.runner" >> "$OUTDIR/import-mmsynth.log" 2>&1; then
      say "mmsynth does not import (see import-mmsynth.log): $(tail -1 "$OUTDIR/import-mmsynth.log")"
      say "  fetch the missing package beforehand: pip download <package> --no-deps -d bench/wheels"
      exit 2
    fi
  fi
  say "mmsynth: from the checkout via PYTHONPATH (not installed)"
fi
HAVE_DIFFUSERS=1
if ! "$PY" -c "import diffusers" 2> /dev/null; then
  WHEEL=${DIFFUSERS_WHEEL:-$(ls bench/wheels/diffusers-*.whl 2> /dev/null | sort -V | tail -1)}
  if [ -n "$WHEEL" ] && [ -f "$WHEEL" ]; then
    install_wheel "$WHEEL" > "$OUTDIR/install-diffusers.log" 2>&1
    if ! "$PY" -c "import diffusers" >> "$OUTDIR/install-diffusers.log" 2>&1; then
      # A dependency missing (importlib_metadata is the usual one): the other fetched wheels.
      for w in bench/wheels/*.whl; do [ -f "$w" ] && [ "$w" != "$WHEEL" ] && install_wheel "$w" >> "$OUTDIR/install-diffusers.log" 2>&1; done
    fi
    if "$PY" -c "import diffusers" >> "$OUTDIR/install-diffusers.log" 2>&1; then
      say "diffusers: installed from $WHEEL into $PYLIB"
    else
      HAVE_DIFFUSERS=0
    fi
  else
    HAVE_DIFFUSERS=0
  fi
  if [ $HAVE_DIFFUSERS = 0 ]; then
    say "diffusers: not importable and no usable wheel (pip download diffusers --no-deps -d bench/wheels): the SD step is skipped"
    FAILED=1
  fi
fi
say "versions: $("$PY" -c "
import torch, transformers
try:
    import diffusers; d = diffusers.__version__
except Exception:
    d = 'missing'
print(f'python {__import__(\"sys\").version.split()[0]}, torch {torch.__version__} (cuda {torch.version.cuda}), transformers {transformers.__version__}, diffusers {d}')
")"

# --- models, then the benchmarks ----------------------------------------------------------------
MAKE=("$PY" bench/make_realistic.py "$MODELS" --scale "$SCALE" --device "$([ "$DEVICE" = cpu ] && echo cpu || echo auto)")
step build-vlm-256m 40 "${MAKE[@]}" --only vlm-256m
step build-vlm-2b 70 "${MAKE[@]}" --only vlm-2b
[ $HAVE_DIFFUSERS = 1 ] && step build-sd 45 "${MAKE[@]}" --only sd

WHERE=(--device "$DEVICE" --dtype "$DTYPE")
[ -f "$MODELS/vlm-256m/mmsynth_realistic.json" ] && \
  step vlm-256m 120 "$PY" bench/vlm_overhead.py --model "$MODELS/vlm-256m" "${WHERE[@]}" $VLM_ARGS_256M
[ -f "$MODELS/vlm-2b/mmsynth_realistic.json" ] && \
  step vlm-2b 130 "$PY" bench/vlm_overhead.py --model "$MODELS/vlm-2b" "${WHERE[@]}" $VLM_ARGS_2B
[ $HAVE_DIFFUSERS = 1 ] && [ -f "$MODELS/sd/mmsynth_realistic.json" ] && \
  step sd 75 "$PY" bench/diffusion.py --model "$MODELS/sd" "${WHERE[@]}" $SD_ARGS

say "total: $(($(date +%s) - START))s; logs in $OUTDIR"
exit $FAILED
