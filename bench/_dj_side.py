"""The Data-Juicer side of bench/dedup.py. Runs with the python of bench/.cache/venv-dj (py-data-juicer
1.6.1), never with the main venv; dedup.py starts it and reads its JSON result.

    python _dj_side.py --data docs.jsonl --num-perm 128 --threshold 0.7 --ngram 5 --result out.json

`document_minhash_deduplicator` with tokenization 'space', window_size --ngram, lowercase, the same
num_permutations and jaccard_threshold (bands and rows from its optimal_param, as mmsynth's). Timed:
`dataset.map(op.compute_hash)` (one process, as Deduplicator.run does it) plus `op.process(dataset)`
(LSH tables, union-find, filter). Reading the JSONL into a `datasets` Dataset is not timed.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from _rss import peak_rss_kib, reset_peak_rss  # noqa: E402  (bench/ is on sys.path: this script runs from it)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--result", required=True)
    args = ap.parse_args()

    import datasets
    from data_juicer import __version__ as dj_version
    from data_juicer.ops.deduplicator.document_minhash_deduplicator import DocumentMinhashDeduplicator

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=args.data, split="train", cache_dir=args.cache_dir)
    rss_loaded = reset_peak_rss()
    op = DocumentMinhashDeduplicator(
        tokenization="space",
        window_size=args.ngram,
        lowercase=True,
        num_permutations=args.num_perm,
        jaccard_threshold=args.threshold,
    )
    t0 = time.perf_counter()
    hashed = ds.map(op.compute_hash, num_proc=1)
    t1 = time.perf_counter()
    kept, _ = op.process(hashed)
    t2 = time.perf_counter()
    result = {
        "version": dj_version,
        "bands": op.num_bands,
        "rows": op.num_rows_per_band,
        "hash_s": t1 - t0,
        "lsh_s": t2 - t1,
        "seconds": t2 - t0,
        "kept_ids": list(kept["id"]),
        "rss_loaded_kib": rss_loaded,
        "rss_peak_kib": peak_rss_kib(),
    }
    with open(args.result, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
