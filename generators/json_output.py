"""The one parser of a model's JSON answer: the backend's repair loop, the validators and the factory
all decide "is this JSON?" with it, so they never disagree about an output."""

from __future__ import annotations

import json
import re
from typing import Any

# A fence that opens with ``` (optionally ```json) and its body up to the closing fence, if any.
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_CLOSER = {"{": "}", "[": "]"}


def parse_json_output(text: str) -> tuple[Any, str | None]:
    """Decode a model's JSON answer: `(value, None)` on success, `(None, error)` otherwise.

    Accepts bare JSON, JSON in a ``` fence, or JSON with prose around it (the first balanced top-level
    {...} or [...] that decodes). A truncated object is an error, never repaired: an inner complete
    object of a cut-off answer is not the answer. Raw control characters inside strings (a literal
    newline in a paragraph) are accepted: models and grammar engines emit them, and the heuristics
    validator, not the parser, is the place to judge the characters.
    """
    s = text.strip()
    if not s:
        return None, "empty output"
    try:
        return json.loads(s, strict=False), None
    except (ValueError, RecursionError) as e:
        whole_error = _describe(e)

    fence = _FENCE.search(s)
    if fence is not None:
        s = fence.group(1).strip()
        try:
            return json.loads(s, strict=False), None
        except (ValueError, RecursionError) as e:
            whole_error = _describe(e)

    start = _next_opener(s, 0)
    while start is not None:
        end = _balanced_end(s, start)
        if end is None:
            return None, f"truncated: '{s[start]}' at char {start} is never closed"
        try:
            return json.loads(s[start : end + 1], strict=False), None
        except (ValueError, RecursionError) as e:
            whole_error = _describe(e)
        start = _next_opener(s, end + 1)
    if _next_opener(s, 0) is None:
        return None, "no JSON object or array found"
    return None, whole_error


def _describe(e: BaseException) -> str:
    return "nested too deeply" if isinstance(e, RecursionError) else str(e)


def _next_opener(s: str, pos: int) -> int | None:
    hits = [i for i in (s.find("{", pos), s.find("[", pos)) if i >= 0]
    return min(hits) if hits else None


def _balanced_end(s: str, start: int) -> int | None:
    """Index of the bracket closing the one at `start`, skipping brackets inside JSON strings; None if unclosed."""
    stack = [_CLOSER[s[start]]]
    in_string = escaped = False
    for i in range(start + 1, len(s)):
        ch = s[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in _CLOSER:
            stack.append(_CLOSER[ch])
        elif ch in "]}":
            if ch != stack.pop():
                return i  # mismatched bracket: let json.loads give the precise error
            if not stack:
                return i
    return None


__all__ = ["parse_json_output"]
