"""Grounding checks on QA outputs: answers against the exact scene, across samples, and question diversity.

- `scene_grounding`: a rendered scene's seed carries its objects; every question the scene answers
  (see generators/scenes/truth.py, answer_question) is checked, the rest are not counted. With
  `captions: true`, a caption's object mentions are checked too (generators/scenes/claims.py): a
  caption that names an object the scene does not have, or miscounts one, is a hallucination.
- `answer_consistency`: samples of one request (same task, prompt and images, in one batch) that ask
  the same question should agree; a sample that disagrees with the majority is rejected.
- `question_diversity`: one QA list should not ask the same thing twice (token Jaccard of questions).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Literal

from pydantic import Field

from mmsynth.generators.scenes.claims import check_caption
from mmsynth.generators.scenes.truth import NUMBER_WORDS, answer_is_correct, answer_question, normalise_words
from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.text.qa_items import clip, normalise, qa_items, well_formed
from mmsynth.validators.types import Candidate, Verdict

_WORD = re.compile(r"\w+")


class SceneGroundingConfig(ValidatorConfig):
    type: Literal["scene_grounding"] = Field(
        default="scene_grounding", description="Registry key: 'scene_grounding'."
    )
    field: str = Field(default="pairs", description="Where a QA output keeps its list of items.")
    objects_field: str = Field(
        default="objects",
        description="Seed field holding the scene's objects (as the `scenes` seed source writes them).",
    )
    min_fraction_correct: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Reject when fewer than this share of the checkable answers are correct.",
    )
    min_checked: int = Field(
        default=1,
        ge=1,
        description="Fewest checkable questions for the share to count; with fewer the candidate is kept (or rejected with `require_checkable`).",
    )
    require_checkable: bool = Field(
        default=False,
        description="Reject a QA output with fewer than `min_checked` questions the scene can answer.",
    )
    captions: bool = Field(
        default=False,
        description="Also check captions (text outputs, or the `caption` field of a JSON output): every "
        "object the caption mentions must be in the scene, with the count, colour, size and place it says.",
    )


class SceneGroundingValidator(ConfiguredValidator[SceneGroundingConfig]):
    """Checks QA answers against the scene in the candidate's seed; candidates without a scene are kept."""

    config_cls = SceneGroundingConfig

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        return [self._check_one(c) for c in candidates]

    def _check_one(self, c: Candidate) -> Verdict:
        cfg = self.config
        objects = c.seed.get(cfg.objects_field)
        items = qa_items(c.parsed, cfg.field)
        if isinstance(objects, list) and items is None and cfg.captions:
            return self._check_caption(objects, c)
        if not isinstance(objects, list) or items is None:
            return Verdict.ok(self.name)  # not a scene, or not a QA output: nothing to ground
        checked, wrong = 0, []
        for i, question, answer in well_formed(items):
            truth = answer_question(objects, question)
            if truth is None:
                continue
            checked += 1
            kind, exact = truth
            if not answer_is_correct(kind, exact, answer):
                wrong.append((i, question, answer, exact))
        if checked < cfg.min_checked:
            if cfg.require_checkable:
                return Verdict.reject(
                    self.name, f"unverifiable: {checked} checkable questions < {cfg.min_checked}"
                )
            return Verdict.ok(self.name)
        share = (checked - len(wrong)) / checked
        if share + 1e-9 < cfg.min_fraction_correct:
            i, q, a, exact = wrong[0]
            return Verdict.reject(
                self.name,
                f"wrong answer: {checked - len(wrong)} of {checked} checked correct "
                f"(min {cfg.min_fraction_correct:.0%}); #{i} {clip(q)!r} answered {clip(a, 40)!r}, "
                f"the scene says {exact!r}",
                share,
            )
        return Verdict.ok(self.name, share)

    def _check_caption(self, objects: list, c: Candidate) -> Verdict:
        parsed = c.parsed
        text = parsed.get("caption") if isinstance(parsed, dict) else c.text
        if not isinstance(text, str):
            return Verdict.ok(self.name)
        checked, wrong = check_caption(objects, text)
        if checked < self.config.min_checked:
            if self.config.require_checkable:
                return Verdict.reject(
                    self.name, f"unverifiable: the caption mentions {checked} scene objects"
                )
            return Verdict.ok(self.name)
        share = (checked - len(wrong)) / checked
        if share + 1e-9 < self.config.min_fraction_correct:
            claim, why = wrong[0]
            return Verdict.reject(
                self.name,
                f"hallucination: {checked - len(wrong)} of {checked} mentions true; "
                f"the caption says {clip(claim.text, 60)!r}, {why}",
                share,
            )
        return Verdict.ok(self.name, share)


class AnswerConsistencyConfig(ValidatorConfig):
    type: Literal["answer_consistency"] = Field(
        default="answer_consistency", description="Registry key: 'answer_consistency'."
    )
    field: str = Field(default="pairs", description="Where a QA output keeps its list of items.")
    min_samples: int = Field(
        default=3,
        ge=2,
        description="Fewest samples asking the same question before a majority is trusted.",
    )
    max_disagreements: int = Field(
        default=0, ge=0, description="Reject a sample with more answers against the majority than this."
    )


class AnswerConsistencyValidator(ConfiguredValidator[AnswerConsistencyConfig]):
    """Groups the batch's samples by request (task, prompt text, image hashes); for each question asked in
    at least `min_samples` of them, an answer differing from a strict majority counts against its sample.

    The samples of one request always arrive in one batch (one seed's outputs are validated together),
    so the check needs no memory; with no strict majority (a tie) nothing is rejected.
    """

    config_cls = AnswerConsistencyConfig

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        answers: list[dict[str, tuple[str, str]]] = []
        for k, c in enumerate(candidates):
            items = qa_items(c.parsed, self.config.field)
            # One sample's answers by normalised question (its first answer to a repeated question).
            mine: dict[str, tuple[str, str]] = {}
            for _, q, a in well_formed(items or []):
                mine.setdefault(normalise(q), (q, a))
            answers.append(mine)
            if mine:
                groups[(c.task, c.prompt_text, tuple(img.sha256 for img in c.images))].append(k)
        against: dict[int, list[str]] = defaultdict(list)
        for members in groups.values():
            if len(members) < self.config.min_samples:
                continue
            for q in set().union(*(answers[k] for k in members)):
                said = {k: _answer_key(answers[k][q][1]) for k in members if q in answers[k]}
                if len(said) < self.config.min_samples:
                    continue
                top, votes = Counter(said.values()).most_common(1)[0]
                if votes * 2 <= len(said):
                    continue  # no strict majority
                for k, a in said.items():
                    if a != top:
                        question, answer = answers[k][q]
                        against[k].append(
                            f"{clip(question)!r}: {clip(answer, 40)!r} vs majority {top!r} ({votes} of {len(said)})"
                        )
        verdicts = []
        for k in range(len(candidates)):
            bad = sorted(against.get(k, []))
            if len(bad) > self.config.max_disagreements:
                more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
                verdicts.append(
                    Verdict.reject(self.name, f"disagrees with majority: {bad[0]}{more}", len(bad))
                )
            else:
                verdicts.append(Verdict.ok(self.name))
        return verdicts


def _answer_key(answer: str) -> str:
    # Number words and digits, 'color'/'colour', case and punctuation all compare equal.
    words = normalise_words(answer)
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words) or normalise(answer)


# "no" and "none" stay words here: as answers they mean "no", not the count zero.
_NUMBER_WORDS = {w: str(n) for w, n in NUMBER_WORDS.items() if w not in ("no", "none")}


class QuestionDiversityConfig(ValidatorConfig):
    type: Literal["question_diversity"] = Field(
        default="question_diversity", description="Registry key: 'question_diversity'."
    )
    field: str = Field(default="pairs", description="Where a QA output keeps its list of items.")
    max_jaccard: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Reject when two questions of one list have a word-set Jaccard similarity above this.",
    )


class QuestionDiversityValidator(ConfiguredValidator[QuestionDiversityConfig]):
    """Rejects a QA list with two near-identical questions; the score is the highest pairwise Jaccard."""

    config_cls = QuestionDiversityConfig

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        return [self._check_one(c) for c in candidates]

    def _check_one(self, c: Candidate) -> Verdict:
        items = qa_items(c.parsed, self.config.field)
        if items is None:
            return Verdict.ok(self.name)
        questions = [
            (i, set(_WORD.findall(item["question"].casefold())))
            for i, item in enumerate(items)
            if isinstance(item, dict) and isinstance(item.get("question"), str)
        ]
        if len(questions) < 2:
            return Verdict.ok(self.name)
        best: tuple[float, int, int] = (0.0, 0, 0)
        for x in range(len(questions)):
            for y in range(x + 1, len(questions)):
                (i, a), (j, b) = questions[x], questions[y]
                sim = _jaccard(a, b)
                if sim > best[0]:
                    best = (sim, i, j)
        sim, i, j = best
        if sim > self.config.max_jaccard:
            return Verdict.reject(
                self.name,
                f"near-duplicate questions: #{i} and #{j} (Jaccard {sim:.2f} > {self.config.max_jaccard:.2f})",
                sim,
            )
        return Verdict.ok(self.name, sim)


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)
