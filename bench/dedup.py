"""MinHash near-duplicate dedup: mmsynth's `minhash_dedup` against datasketch's `MinHash` + `MinHashLSH`
and Data-Juicer 1.6.1's `document_minhash_deduplicator`, on the same synthetic documents with planted
near-duplicates.

    .venv/bin/python bench/dedup.py [--n 100000] [--num-perm 128] [--threshold 0.7] [--verify both|on|off]
                                    [--peers datasketch,data-juicer]

Input (written once to bench/.cache/dedup/docs-<n>.jsonl, fixed seed): documents of 40-300 words drawn
from a 50,000-word pseudo-vocabulary (Zipf-like), with planted pairs: 12% of the documents are an
original plus a near-duplicate of it (words replaced until the 5-word-shingle Jaccard falls in
[0.72, 1.0]), 3% are "hard negative" pairs (Jaccard 0.3-0.55, must both be kept); the rest are
unrelated. The true Jaccard of every planted pair is computed exactly.

Both sides: 5-word shingles of lower-cased whitespace words (the synthetic words have no punctuation,
so mmsynth's `\\w+` words are the same), the same num_perm and threshold, bands/rows from the same
datasketch optimal-parameter rule, one thread, each in its own fresh process. Memory: the process's
peak RSS (VmHWM) is reset once the documents are loaded, so "peak" is the peak during the dedup and
"added" is that minus the RSS after loading.
- mmsynth: `MinHashDedupValidator.check` + `remember` of the kept records, streaming in batches of
  1,000 (what the factory does). Timed: that loop.
- datasketch (a bench-only dependency of the main venv: `pip install datasketch`), run by
  bench/_datasketch_side.py with the same streaming and the same verify setting(s) as mmsynth: with
  verify on, an LSH candidate counts only when `MinHash.jaccard` reaches the threshold. Timed:
  shingling, `MinHash.generator`, `query` and `insert`.
- Data-Juicer: in bench/.cache/venv-dj (made on first use: `py-data-juicer==1.6.1` plus `aiohttp`
  and `scipy`, which its import path and optimal_param need but it does not declare), run by
  bench/_dj_side.py. Timed: `map(compute_hash)` + `process`.
Scores on the planted pairs: a pair is found when either member is removed; recall = found / pairs;
precision = removed documents that were the second copy of a still-kept near-duplicate / all removed.

Each peer's ratio is printed as `dedup-vs-<peer> ratio=<mmsynth records/s / peer records/s>`, for
mmsynth's default settings (verify on; datasketch with verify on too). The headline, printed last:
`dedup ratio=<the smallest of those>`, i.e. against the fastest peer (target > 1 at equal or better
recall).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # one thread, offline
from _rss import peak_rss_kib, reset_peak_rss

DJ_VERSION = "1.6.1"
DJ_SIDE = C.BENCH_DIR / "_dj_side.py"
DATASKETCH_SIDE = C.BENCH_DIR / "_datasketch_side.py"
PEERS = ("datasketch", "data-juicer")
NGRAM = 5


# -- the documents ------------------------------------------------------------------------------


def shingles(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def mutate(words: list[str], target: float, rng: random.Random) -> tuple[list[str], float]:
    """Replace random words of a copy until its Jaccard with `words` drops to about `target`."""
    out = list(words)
    j = 1.0
    while True:
        k = rng.randrange(len(out))
        trial = [*out[:k], f"z{rng.randrange(10**7)}", *out[k + 1 :]]
        jt = jaccard(words, trial)
        if jt < target:
            return out, j
        out, j = trial, jt


def make_docs(
    n: int, seed: int = 0
) -> tuple[list[dict], list[tuple[str, str, float]], list[tuple[str, str, float]]]:
    """(documents {id, text}, positive pairs (id, id, jaccard), hard-negative pairs)."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ne", "ru", "ta", "vi", "so", "pe", "du", "ga", "ho", "ji", "be", "fo", "qu"]
    vocab = list(
        dict.fromkeys("".join(rng.choice(syll) for _ in range(rng.randint(2, 4))) for _ in range(80000))
    )
    vocab = vocab[:50000]
    cum_weights = list(itertools.accumulate(1 / (r + 10) for r in range(len(vocab))))

    def doc() -> list[str]:
        return rng.choices(vocab, cum_weights=cum_weights, k=rng.randint(40, 300))

    n_pos, n_neg = int(n * 0.06), int(n * 0.015)  # pairs: 12% and 3% of the documents
    texts: list[list[str]] = []
    pos, neg = [], []
    for _ in range(n_pos):
        a = doc()
        b, j = mutate(a, rng.uniform(0.72, 1.0), rng) if rng.random() > 0.05 else (list(a), 1.0)
        texts += [a, b]
        pos.append((len(texts) - 2, len(texts) - 1, j))
    for _ in range(n_neg):
        a = doc()
        b, j = mutate(a, rng.uniform(0.3, 0.55), rng)
        texts += [a, b]
        neg.append((len(texts) - 2, len(texts) - 1, j))
    while len(texts) < n:
        texts.append(doc())
    order = list(range(n))
    rng.shuffle(order)
    ids = {old: f"doc-{new:06d}" for new, old in enumerate(order)}
    docs = [{"id": ids[old], "text": " ".join(texts[old])} for old in sorted(order, key=lambda o: ids[o])]
    return docs, [(ids[a], ids[b], j) for a, b, j in pos], [(ids[a], ids[b], j) for a, b, j in neg]


def write_docs(n: int) -> tuple[Path, Path]:
    folder = C.CACHE_DIR / "dedup"
    folder.mkdir(parents=True, exist_ok=True)
    data, truth = folder / f"docs-{n}.jsonl", folder / f"truth-{n}.json"
    if not (data.exists() and truth.exists()):
        t0 = time.perf_counter()
        docs, pos, neg = make_docs(n)
        with data.open("w") as f:
            for d in docs:
                f.write(json.dumps(d) + "\n")
        truth.write_text(json.dumps({"positive": pos, "negative": neg}))
        print(
            f"wrote {n} documents ({len(pos)} near-duplicate pairs, {len(neg)} hard negatives) "
            f"in {time.perf_counter() - t0:.1f} s: {data}"
        )
    return data, truth


def score(all_ids: list[str], kept: set[str], truth: dict) -> dict:
    removed = {i for i in all_ids if i not in kept}
    found = 0
    good = 0
    buckets: dict[str, list[int]] = {"0.72-0.8": [0, 0], "0.8-0.9": [0, 0], "0.9-1.0": [0, 0]}
    for a, b, j in truth["positive"]:
        hit = a in removed or b in removed
        found += hit
        good += (a in removed) != (b in removed)  # exactly one copy removed: a correct removal
        key = "0.72-0.8" if j < 0.8 else "0.8-0.9" if j < 0.9 else "0.9-1.0"
        buckets[key][0] += hit
        buckets[key][1] += 1
    neg_hit = sum(a in removed or b in removed for a, b, _ in truth["negative"])
    return {
        "removed": len(removed),
        "recall": found / len(truth["positive"]),
        "precision": good / len(removed) if removed else 1.0,
        "recall_by_jaccard": {k: f"{h}/{t} = {h / t:.3f}" for k, (h, t) in buckets.items() if t},
        "hard_negatives_removed": neg_hit,
    }


# -- the two sides ------------------------------------------------------------------------------


def mmsynth_side(args) -> None:
    """Runs in a fresh process (this script with --side mmsynth); writes its result JSON."""
    from mmsynth.validators.dedup.minhash import MinHashDedupConfig, MinHashDedupValidator
    from mmsynth.validators.types import Candidate

    with open(args.data) as f:
        cands = [
            Candidate(id=d["id"], task="docs", text=d["text"], finish_reason="stop")
            for d in map(json.loads, f)
        ]
    rss_loaded = reset_peak_rss()
    cfg = MinHashDedupConfig(
        num_perm=args.num_perm, threshold=args.threshold, ngram=NGRAM, verify=args.verify == "on"
    )
    dedup = MinHashDedupValidator(cfg)
    kept = []
    t0 = time.perf_counter()
    for s in range(0, len(cands), 1000):
        batch = cands[s : s + 1000]
        for c, v in zip(batch, dedup.check(batch), strict=True):
            if v.keep:
                dedup.remember(c)
                kept.append(c.id)
    n_mem = len(dedup)  # flushes the last queued records: part of the work
    seconds = time.perf_counter() - t0
    result = {
        "bands": dedup.bands,
        "rows": dedup.rows,
        "seconds": seconds,
        "kept_ids": kept,
        "remembered": n_mem,
        "state_bytes": dedup.nbytes(),
        "bytes_per_record": dedup.bytes_per_record,
        "rss_loaded_kib": rss_loaded,
        "rss_peak_kib": peak_rss_kib(),
    }
    Path(args.result).write_text(json.dumps(result))


def run_side(cmd: list[str], result: Path, what: str) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not result.exists():
        raise SystemExit(f"{what} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-4000:]}")
    out = json.loads(result.read_text())
    out["process_s"] = time.perf_counter() - t0
    return out


def ensure_dj_venv(venv: Path) -> Path:
    py = venv / "bin" / "python"
    check = [
        str(py),
        "-c",
        "import data_juicer, scipy, aiohttp; "
        "from data_juicer.ops.deduplicator.document_minhash_deduplicator import DocumentMinhashDeduplicator; "
        "print(data_juicer.__version__)",
    ]
    if py.exists():
        r = subprocess.run(check, capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip().endswith(DJ_VERSION):
            return py
    print(f"installing Data-Juicer {DJ_VERSION} into {venv} (a minute or two, once)", flush=True)
    log = venv.parent / "venv-dj-install.log"
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        # aiohttp and scipy: data_juicer.utils.file_utils imports aiohttp and optimal_param uses
        # scipy.integrate, but py-data-juicer 1.6.1 declares neither.
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            f"py-data-juicer=={DJ_VERSION}",
            "aiohttp",
            "scipy",
        ],
    ]
    with log.open("w") as f:
        for cmd in steps:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode != 0:
                tail = "\n".join(log.read_text().splitlines()[-30:])
                raise SystemExit(f"installing Data-Juicer failed at: {' '.join(cmd)}\n{tail}\n(log: {log})")
    r = subprocess.run(check, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"Data-Juicer installed but does not import:\n{r.stderr[-3000:]}")
    return py


def show(name: str, n: int, res: dict, sc: dict) -> None:
    mib = 1024
    print(
        f"{name}: {n / res['seconds']:,.0f} records/s ({res['seconds']:.2f} s; whole process {res['process_s']:.1f} s), "
        f"bands x rows {res['bands']} x {res['rows']}"
    )
    print(
        f"  peak RSS {res['rss_peak_kib'] / mib:.0f} MiB (added by dedup {(res['rss_peak_kib'] - res['rss_loaded_kib']) / mib:.0f} MiB)"
        + (
            f", state {res['state_bytes'] / 2**20:.1f} MiB for {res['remembered']} records "
            f"({res['bytes_per_record']} B/record + ids)"
            if "state_bytes" in res
            else ""
        )
    )
    print(
        f"  removed {sc['removed']}, recall {sc['recall']:.4f}, precision {sc['precision']:.4f}, "
        f"hard negatives removed {sc['hard_negatives_removed']}"
    )
    print(f"  recall by Jaccard: {sc['recall_by_jaccard']}")


def side_cmd(py: str, script: Path | str, data: Path, out: Path, args, *extra: str) -> list[str]:
    return [
        py,
        str(script),
        "--data",
        str(data),
        "--result",
        str(out),
        "--num-perm",
        str(args.num_perm),
        "--threshold",
        str(args.threshold),
        *extra,
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument(
        "--verify",
        choices=("on", "off", "both"),
        default="both",
        help="verify setting(s) to run for mmsynth and datasketch; the headline uses 'on' (the default)",
    )
    ap.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated peers to run against mmsynth, of: {', '.join(PEERS)}",
    )
    ap.add_argument("--venv", type=Path, default=C.CACHE_DIR / "venv-dj")
    ap.add_argument("--side", choices=("mmsynth",), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side == "mmsynth":
        return mmsynth_side(args)
    peers = [p for p in args.peers.split(",") if p]
    if unknown := set(peers) - set(PEERS):
        raise SystemExit(f"unknown peers {sorted(unknown)}; known: {', '.join(PEERS)}")

    data, truth_path = write_docs(args.n)
    truth = json.loads(truth_path.read_text())
    all_ids = [json.loads(line)["id"] for line in data.open()]
    work = C.scratch("dedup-")
    verifies = ["on", "off"] if args.verify == "both" else [args.verify]
    head_verify = "on" if "on" in verifies else verifies[0]
    rates: dict[str, float] = {}
    for verify in verifies:
        out = work / f"mmsynth-{verify}.json"
        res = run_side(
            side_cmd(sys.executable, __file__, data, out, args, "--side", "mmsynth", "--verify", verify),
            out,
            f"mmsynth (verify {verify})",
        )
        show(
            f"mmsynth minhash_dedup (verify {verify})",
            args.n,
            res,
            score(all_ids, set(res["kept_ids"]), truth),
        )
        rates[f"mmsynth-{verify}"] = args.n / res["seconds"]

    if "datasketch" in peers:
        for verify in verifies:
            out = work / f"datasketch-{verify}.json"
            cmd = side_cmd(sys.executable, DATASKETCH_SIDE, data, out, args, "--ngram", str(NGRAM))
            res = run_side([*cmd, "--verify", verify], out, f"datasketch (verify {verify})")
            sc = score(all_ids, set(res["kept_ids"]), truth)
            show(f"datasketch {res['version']} MinHash + MinHashLSH (verify {verify})", args.n, res, sc)
            rates[f"datasketch-{verify}"] = args.n / res["seconds"]

    if "data-juicer" in peers:
        py = ensure_dj_venv(args.venv.resolve())
        out = work / "dj.json"
        extra = ("--ngram", str(NGRAM), "--cache-dir", str(work / "hf"))
        dj = run_side(side_cmd(str(py), DJ_SIDE, data, out, args, *extra), out, "Data-Juicer")
        dj_score = score(all_ids, set(dj["kept_ids"]), truth)
        show(f"Data-Juicer {dj['version']} document_minhash_deduplicator", args.n, dj, dj_score)
        print(
            f"  (of which map(compute_hash) {dj['hash_s']:.2f} s, process (LSH tables, union-find, filter) {dj['lsh_s']:.2f} s)"
        )
        rates["data-juicer"] = args.n / dj["seconds"]

    ours = rates[f"mmsynth-{head_verify}"]
    ratios = {}
    if "datasketch" in peers:
        ratios["datasketch"] = ours / rates[f"datasketch-{head_verify}"]
    if "data-juicer" in peers:
        ratios["data-juicer"] = ours / rates["data-juicer"]
    for peer, r in ratios.items():
        print(f"dedup-vs-{peer} ratio={r:.3f}")
    if ratios:
        print(f"dedup ratio={min(ratios.values()):.3f}")


if __name__ == "__main__":
    main()
