"""Finding question-answer items in a parsed output, the one place the QA shapes are recognised."""

from __future__ import annotations

import re
from typing import Any

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def qa_items(parsed: Any, field: str = "pairs") -> list[Any] | None:
    """The QA items of a parsed output, or None when it is not a QA output.

    Recognised: {field: [...]} (the vqa.pairs form), one {"question", "answer"} object, or a list of
    such objects. Items are returned as they are (possibly malformed), for the caller to judge.
    """
    if isinstance(parsed, dict):
        items = parsed.get(field)
        if isinstance(items, list):
            return items
        if "question" in parsed and "answer" in parsed:
            return [parsed]
        return None
    if isinstance(parsed, list) and parsed and all(isinstance(x, dict) and "question" in x for x in parsed):
        return parsed
    return None


def well_formed(items: list[Any]) -> list[tuple[int, str, str]]:
    """(index, question, answer) of the items whose question and answer are strings (numbers allowed as answers)."""
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        q, a = item.get("question"), item.get("answer")
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            a = str(a)
        if isinstance(q, str) and isinstance(a, str):
            out.append((i, q, a))
    return out


def normalise(text: str) -> str:
    """Case-folded, punctuation dropped, whitespace collapsed: how questions and answers are compared."""
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.casefold())).strip()


def clip(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters for a reason string."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
