"""Evaluation tasks: which examples a task takes, how long an answer may be, how a completion is scored.

The contract is small on purpose (nanochat's Task): `select` picks the task's examples from a split,
`prepare` turns one into the prompt and references to score against, `score` turns completions into
one number per example (the report averages them; the bootstrap resamples them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mmsynth.trainer.cider import cider_d, tokenize_caption
from mmsynth.trainer.data import Example
from mmsynth.trainer.vqa_eval import exact_match, normalize_answer, vqa_accuracy


@dataclass(frozen=True)
class EvalTask:
    """One evaluation task: an example kind, a metric and an answer length."""

    name: str
    kind: str
    metric: str
    max_new_tokens: int

    def select(self, examples: Sequence[Example]) -> list[Example]:
        """The examples of this task's kind that can be scored (a reference answer exists)."""
        return [prepare(ex) for ex in examples if ex.kind == self.kind and (ex.references or ex.target)]

    def score(self, predictions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """One score per example, in the metric's units (CIDEr-D is x10 as published; the others in [0, 1])."""
        refs = [list(ex.references or (ex.target,)) for ex in examples]
        if self.metric == "cider":
            return cider_d(list(predictions), refs)[1]
        if self.metric == "vqa_accuracy":
            return [vqa_accuracy(p, r) for p, r in zip(predictions, refs, strict=True)]
        if self.metric == "exact_match":
            return [exact_match(p, r) for p, r in zip(predictions, refs, strict=True)]
        if self.metric == "token_f1":
            return [max(token_f1(p, x) for x in r) for p, r in zip(predictions, refs, strict=True)]
        raise ValueError(f"unknown metric {self.metric!r}")


def prepare(ex: Example) -> Example:
    """Text examples with no prompt (plain text) become continuation tasks: first half in, second half out."""
    if ex.kind != "text" or ex.prompt:
        return ex
    words = ex.target.split()
    cut = max(1, len(words) // 2)
    rest = " ".join(words[cut:])
    return replace(ex, prompt="Continue the text: " + " ".join(words[:cut]), target=rest, references=(rest,))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style F1 over normalised word tokens."""
    p, r = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


TASKS: dict[str, EvalTask] = {
    "caption": EvalTask("caption", "caption", "cider", 48),
    "vqa": EvalTask("vqa", "vqa", "vqa_accuracy", 12),
    "qa_exact": EvalTask("qa_exact", "vqa", "exact_match", 12),
    "text": EvalTask("text", "text", "token_f1", 48),
}


def get_task(name: str) -> EvalTask:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}") from None


__all__ = ["TASKS", "EvalTask", "get_task", "prepare", "token_f1", "tokenize_caption"]
