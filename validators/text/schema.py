"""The validator that checks JSON outputs against the task's schema (the parser itself: generators/json_output.py)."""

from __future__ import annotations

import json
from typing import Any, Literal

from jsonschema import FormatChecker
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator as SchemaChecker
from jsonschema.validators import validator_for
from pydantic import Field

from mmsynth.generators.json_output import parse_json_output
from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.types import Candidate, Verdict

_MAX_MESSAGE = 200


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
