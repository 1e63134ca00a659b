"""CIDEr-D, computed as pycocoevalcap's `Cider` scorer does (the COCO caption leaderboard's CIDEr).

tf-idf vectors over 1- to 4-grams, document frequencies taken from the references of the evaluated set,
cosine similarity with the candidate's counts clipped to the reference's, a gaussian length penalty
(sigma 6), averaged over references and n, times 10. `cider_d` tokenises raw captions first as
pycocoevalcap does (CoreNLP's PTB tokenizer, lowercased, its punctuation list dropped), with the
Python re-implementation in `mmsynth.trainer.ptb`, so scores are comparable with published CIDEr.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

from mmsynth.trainer.ptb import tokenize_caption

Ngrams = Counter[tuple[str, ...]]


def _ngrams(tokens: Sequence[str], n: int) -> Ngrams:
    counts: Ngrams = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


def _vector(counts: Ngrams, df: dict, log_n_docs: float, n: int):
    """tf-idf vector per n-gram order, its norms, and the length pycocoevalcap uses.

    pycocoevalcap counts length as the number of bigrams (an index quirk); only length differences enter
    the penalty, and those are the same as word-count differences for non-empty captions, so we keep it.
    """
    vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
    norm = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        k = len(gram) - 1
        w = tf * (log_n_docs - math.log(max(1.0, df.get(gram, 0.0))))
        vec[k][gram] = w
        norm[k] += w * w
        if k == 1:
            length += tf
    return vec, [math.sqrt(x) for x in norm], length


def cider_d_scores(
    candidates: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    n: int = 4,
    sigma: float = 6.0,
) -> list[float]:
    """Per-candidate CIDEr-D for tokenised candidates and their tokenised references.

    The corpus score is the mean of these. Document frequencies come from `references`, so scores of one
    example depend on the whole evaluated set, as in pycocoevalcap.
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    if not candidates:
        return []
    ref_counts = [[_ngrams(r, n) for r in refs] for refs in references]
    df: dict[tuple[str, ...], float] = defaultdict(float)
    for refs in ref_counts:
        for gram in set().union(*[set(c) for c in refs]) if refs else ():
            df[gram] += 1
    log_n_docs = math.log(float(len(references)))
    scores = []
    for cand, refs in zip(candidates, ref_counts, strict=True):
        if not refs:
            raise ValueError("every candidate needs at least one reference")
        vh, nh, lh = _vector(_ngrams(cand, n), df, log_n_docs, n)
        total = [0.0] * n
        for ref in refs:
            vr, nr, lr = _vector(ref, df, log_n_docs, n)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
            for k in range(n):
                val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * penalty
        scores.append(10.0 * (sum(total) / n) / len(refs))
    return scores


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """(corpus CIDEr-D, per-example scores) for raw caption strings, tokenised with `tokenize_caption`."""
    per = cider_d_scores(
        [tokenize_caption(c) for c in candidates],
        [[tokenize_caption(r) for r in refs] for refs in references],
    )
    return (sum(per) / len(per) if per else 0.0), per
