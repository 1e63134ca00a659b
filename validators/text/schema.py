"""JSON outputs: the parser the factory uses, and the validator that checks them against the task's schema."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from jsonschema import FormatChecker
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator as SchemaChecker
from jsonschema.validators import validator_for
from pydantic import Field

from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.types import Candidate, Verdict

# A fence that opens with ``` (optionally ```json) and its body up to the closing fence, if any.
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_CLOSER = {"{": "}", "[": "]"}
_MAX_MESSAGE = 200


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


class JsonSchemaConfig(ValidatorConfig):
    type: Literal["json_schema"] = Field(default="json_schema", description="Registry key: 'json_schema'.")
    check_formats: bool = Field(
        default=False,
        description="Also enforce 'format' keywords (date, email, uri, ...) with jsonschema's FormatChecker.",
    )


class JsonSchemaValidator(ConfiguredValidator[JsonSchemaConfig]):
    """Rejects structured outputs that are not JSON or do not satisfy the candidate's `output_schema`.

    Candidates without a schema are kept. The first error reported is jsonschema's `best_match`. A schema
    that is itself invalid raises ValueError: that is a recipe bug, not a bad record.
    """

    config_cls = JsonSchemaConfig

    def __init__(self, config: JsonSchemaConfig | None = None) -> None:
        super().__init__(config)
        self._checkers: dict[str, SchemaChecker] = {}  # canonical schema JSON -> compiled checker

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        return [self._check_one(c) for c in candidates]

    def _check_one(self, c: Candidate) -> Verdict:
        if c.output_schema is None:
            return Verdict.ok(self.name)
        if c.parse_error is not None:
            return Verdict.reject(self.name, f"output is not valid JSON: {c.parse_error}")
        value = c.parsed
        if value is None:
            # The factory did not parse it (or the answer is a literal null): parse here.
            value, error = parse_json_output(c.text)
            if error is not None:
                return Verdict.reject(self.name, f"output is not valid JSON: {error}")
        err = best_match(self._checker(c.output_schema).iter_errors(value))
        if err is None:
            return Verdict.ok(self.name)
        message = err.message if len(err.message) <= _MAX_MESSAGE else err.message[:_MAX_MESSAGE] + "..."
        return Verdict.reject(self.name, f"schema: {err.json_path}: {message}")

    def _checker(self, schema: dict[str, Any]) -> SchemaChecker:
        key = json.dumps(schema, sort_keys=True, default=str)
        checker = self._checkers.get(key)
        if checker is None:
            cls = validator_for(schema)
            try:
                cls.check_schema(schema)
            except Exception as e:  # jsonschema.SchemaError; re-raised with a short, actionable message
                raise ValueError(
                    f"{self.name}: the task's output_schema is not a valid JSON schema: {e}"
                ) from e
            checker = cls(schema, format_checker=FormatChecker() if self.config.check_formats else None)
            self._checkers[key] = checker
        return checker
