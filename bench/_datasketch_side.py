"""The datasketch side of bench/dedup.py: `MinHash` + `MinHashLSH`, used the way its README shows, on
the same documents and shingles as the other two sides. Runs in a fresh process of the main venv
(datasketch is a bench-only dependency: `pip install datasketch`); dedup.py starts it and reads its
JSON result.

    python _datasketch_side.py --data docs.jsonl --num-perm 128 --threshold 0.7 --ngram 5 --verify on --result out.json

Streaming, as mmsynth's side: batches of 1,000 documents are hashed with `MinHash.generator` (its bulk
path), then each document is queried against the LSH and inserted when kept, so a later document of
the same batch sees the earlier kept ones. `MinHashLSH(threshold, num_perm)` picks bands x rows with
the same optimal-parameter rule as the other sides. With `--verify on` a candidate counts only when
the Jaccard estimated from the two full MinHashes (`MinHash.jaccard`) reaches the threshold, which
means keeping every kept document's `LeanMinHash`; with `off` any LSH candidate is a duplicate.
Timed: shingling, hashing, queries and inserts. Loading the JSONL is not timed.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402

from _rss import peak_rss_kib, reset_peak_rss  # noqa: E402  (bench/ is on sys.path: this script runs from it)

BATCH = 1000


def shingle_bytes(text: str, ngram: int) -> list[bytes]:
    """Lower-cased whitespace words, `ngram`-word shingles as UTF-8 bytes (what datasketch hashes)."""
    words = text.lower().split()
    if len(words) < ngram:
        return [" ".join(words).encode()]
    return list({" ".join(words[i : i + ngram]).encode() for i in range(len(words) - ngram + 1)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--verify", choices=("on", "off"), default="on")
    ap.add_argument("--result", required=True)
    args = ap.parse_args()

    from datasketch import LeanMinHash, MinHash, MinHashLSH

    with open(args.data) as f:
        docs = [(d["id"], d["text"]) for d in map(json.loads, f)]
    rss_loaded = reset_peak_rss()
    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm)
    stored: dict[str, LeanMinHash] = {}
    kept: list[str] = []
    t0 = time.perf_counter()
    for s in range(0, len(docs), BATCH):
        batch = docs[s : s + BATCH]
        hashes = MinHash.generator((shingle_bytes(t, args.ngram) for _, t in batch), num_perm=args.num_perm)
        for (doc_id, _), m in zip(batch, hashes, strict=True):
            hits = lsh.query(m)
            if args.verify == "on":
                hits = [h for h in hits if m.jaccard(stored[h]) >= args.threshold]
            if hits:
                continue
            lean = LeanMinHash(m)
            lsh.insert(doc_id, lean)
            if args.verify == "on":
                stored[doc_id] = lean
            kept.append(doc_id)
    seconds = time.perf_counter() - t0
    result = {
        "version": version("datasketch"),
        "bands": lsh.b,
        "rows": lsh.r,
        "seconds": seconds,
        "kept_ids": kept,
        "rss_loaded_kib": rss_loaded,
        "rss_peak_kib": peak_rss_kib(),
    }
    with open(args.result, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
