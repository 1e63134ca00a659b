"""VQA accuracy with the standard answer normalisation of the VQA v2 evaluation.

Normalisation: punctuation removed (or turned into a space), periods kept only inside numbers, commas
inside numbers dropped, number words to digits, articles removed, contractions restored
("dont" -> "don't"). Accuracy of an answer: for each of the 10 ways to leave one human answer out,
min(#remaining humans who gave it / 3, 1), averaged. With a single reference answer it is exact match
after normalisation (the leave-one-out formula would always give 0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PUNCT = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
_COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_IN_NUMBER = re.compile(r"(?<!\d)\.(?!\d)")
_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
# The VQA evaluation restores the apostrophe of common contractions written without one.
_CONTRACTED = [
    "ain't",
    "aren't",
    "can't",
    "could've",
    "couldn't",
    "couldn't've",
    "didn't",
    "doesn't",
    "don't",
    "hadn't",
    "hadn't've",
    "hasn't",
    "haven't",
    "he'd",
    "he'd've",
    "he's",
    "how'd",
    "how'll",
    "how's",
    "i'd",
    "i'd've",
    "i'm",
    "i've",
    "isn't",
    "it'd",
    "it'd've",
    "it'll",
    "let's",
    "ma'am",
    "mightn't",
    "mightn't've",
    "might've",
    "mustn't",
    "must've",
    "needn't",
    "not've",
    "o'clock",
    "oughtn't",
    "'ow's'at",
    "shan't",
    "she'd've",
    "she's",
    "should've",
    "shouldn't",
    "shouldn't've",
    "somebody'd",
    "somebody'd've",
    "somebody'll",
    "somebody's",
    "someone'd",
    "someone'd've",
    "someone'll",
    "someone's",
    "something'd",
    "something'd've",
    "something'll",
    "that's",
    "there'd",
    "there'd've",
    "there're",
    "there's",
    "they'd",
    "they'd've",
    "they'll",
    "they're",
    "they've",
    "'twas",
    "wasn't",
    "we'd've",
    "we've",
    "weren't",
    "what'll",
    "what're",
    "what's",
    "what've",
    "when's",
    "where'd",
    "where's",
    "where've",
    "who'd",
    "who'd've",
    "who'll",
    "who's",
    "who've",
    "why'll",
    "why're",
    "why's",
    "won't",
    "would've",
    "wouldn't",
    "wouldn't've",
    "y'all",
    "y'all'll",
    "y'all'd've",
    "you'd",
    "you'd've",
    "you'll",
    "you're",
    "you've",
]
_CONTRACTIONS = {c.replace("'", ""): c for c in _CONTRACTED}


def _punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        # A mark next to a space (or a comma inside a number) is dropped; one inside a word becomes a space.
        if f"{p} " in text or f" {p}" in text or _COMMA_IN_NUMBER.search(text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_IN_NUMBER.sub("", out)


def _digits_articles(text: str) -> str:
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """The VQA-normalised form of an answer: what the accuracy compares."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(_punctuation(text))


def vqa_accuracy(answer: str, human_answers: Sequence[str]) -> float:
    """Standard VQA accuracy of `answer` against the human answers (normally 10), in [0, 1]."""
    if not human_answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    a = normalize_answer(answer)
    gts = [normalize_answer(h) for h in human_answers]
    if len(gts) == 1:
        return float(a == gts[0])
    accs = []
    for i in range(len(gts)):
        matches = sum(1 for j, g in enumerate(gts) if j != i and g == a)
        accs.append(min(1.0, matches / 3))
    return sum(accs) / len(accs)


def exact_match(answer: str, references: Sequence[str]) -> float:
    """1.0 when the normalised answer equals any normalised reference, else 0.0."""
    a = normalize_answer(answer)
    return float(any(a == normalize_answer(r) for r in references))
