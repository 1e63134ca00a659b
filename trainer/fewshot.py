"""In-context k-shot evaluation: exemplars from the train split, a disjoint evaluation split, fixed seeds.

Exemplars for (trial, example) are drawn by a seeded RNG that does not depend on the arm or the training
seed, so every arm answers exactly the same prompts: the comparison between arms is paired.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import numpy as np

from mmsynth.trainer.data import Example
from mmsynth.trainer.student import Student, generate, usable
from mmsynth.trainer.tasks import EvalTask


def exemplar_rng(seed: int, task: str, shots: int, trial: int, index: int) -> random.Random:
    digest = hashlib.sha256(f"mmsynth.fewshot:{seed}:{task}:{shots}:{trial}:{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def draw_exemplars(
    pool: Sequence[Example], shots: int, seed: int, task: str, trial: int, index: int
) -> list[Example]:
    if shots <= 0:
        return []
    if len(pool) < shots:
        raise ValueError(
            f"{task}: {shots}-shot needs {shots} train exemplars, the train split has {len(pool)}"
        )
    return exemplar_rng(seed, task, shots, trial, index).sample(list(pool), shots)


def evaluate(
    student: Student,
    task: EvalTask,
    eval_examples: Sequence[Example],
    exemplars: Sequence[Example],
    shots: int,
    trials: int = 3,
    seed: int = 0,
    batch_size: int = 16,
) -> tuple[np.ndarray, list[str]]:
    """Scores per evaluation example (mean over trials; 0-shot has one trial) and the first trial's outputs.

    Raises when an exemplar shares an id with an evaluation example: the splits must be disjoint.
    """
    ids = {ex.id for ex in eval_examples}
    clash = [ex.id for ex in exemplars if ex.id in ids]
    if clash:
        raise ValueError(f"{task.name}: exemplar pool overlaps the evaluation split ({clash[:3]} ...)")
    pool = [ex for ex in exemplars if usable(student, ex)]
    evals = [ex for ex in eval_examples if usable(student, ex)]
    n_trials = 1 if shots == 0 else max(1, trials)
    scores = np.zeros((n_trials, len(evals)))
    first: list[str] = []
    for t in range(n_trials):
        prompts = [
            [*((e, e.target) for e in draw_exemplars(pool, shots, seed, task.name, t, i)), (ex, None)]
            for i, ex in enumerate(evals)
        ]
        preds = generate(student, prompts, max_new_tokens=task.max_new_tokens, batch_size=batch_size)
        scores[t] = task.score(preds, evals)
        if t == 0:
            first = preds
    return scores.mean(axis=0), first
