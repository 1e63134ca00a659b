"""JSON repair: re-ask for outputs that are not JSON or break the schema, with the error as a new turn.

"Not JSON" is decided by `parse_json_output`, the parser the factory and the json_schema validator
use, so an output the factory would accept is never re-asked (and never replaced by the re-ask).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mmsynth.generators.json_output import parse_json_output
from mmsynth.generators.openai.chat import content
from mmsynth.generators.openai.errors import Rejected
from mmsynth.generators.types import Generation, Output

log = logging.getLogger(__name__)

Post = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]  # body -> the server's JSON answer


class SchemaChecks:
    """`check(schema, text)`: None for a valid output, else what is wrong, in words for the model."""

    def __init__(self) -> None:
        self._validators: dict[str, Any] = {}  # canonical schema JSON -> compiled jsonschema validator

    def check(self, schema: dict[str, Any], text: str) -> str | None:
        value, err = parse_json_output(text)
        if err is not None:
            return f"it is not JSON ({err})"
        errors = sorted(self._validator(schema).iter_errors(value), key=lambda e: e.path)
        if errors:
            e = errors[0]
            where = "/".join(map(str, e.absolute_path)) or "the top level"
            return f"it breaks the schema at {where}: {e.message}"
        return None

    def _validator(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            import jsonschema

            validator = self._validators[key] = jsonschema.validators.validator_for(schema)(schema)
        return validator


async def repair(
    gen: Generation,
    schema: dict[str, Any],
    body: dict[str, Any],
    attempts: int,
    checks: SchemaChecks,
    post: Post,
    scrub: Callable[[str], str],
) -> tuple[Generation, int]:
    """`gen` with bad outputs re-asked at most `attempts` times each; (generation, re-asks made).

    A re-ask's answer replaces the output (valid or not: the validators decide) and its tokens are
    added; a refused re-ask (the longer conversation no longer fits) keeps the output as it was.
    """
    outputs = list(gen.outputs)
    prompt_tokens, completion_tokens, repairs = gen.prompt_tokens, gen.completion_tokens, 0
    for round_ in range(attempts):
        bad = [(i, err) for i, o in enumerate(outputs) if (err := checks.check(schema, o.text))]
        if not bad:
            break
        answers = await asyncio.gather(
            *(
                _ask_again(post, scrub, body, outputs[i].text, err, round_ * len(outputs) + i)
                for i, err in bad
            )
        )
        for (i, _), answer in zip(bad, answers, strict=True):
            repairs += 1
            if answer is None:
                continue
            outputs[i], pt, ct = answer
            prompt_tokens += pt
            completion_tokens += ct
    extra = {**gen.extra, "json_repairs": repairs} if repairs else gen.extra
    return Generation(tuple(outputs), prompt_tokens, completion_tokens, None, extra), repairs


async def _ask_again(
    post: Post, scrub: Callable[[str], str], body: dict[str, Any], text: str, error: str, k: int
) -> tuple[Output, int, int] | None:
    follow_up = (
        f"Your answer is not valid: {error}. Reply again with only the JSON value, "
        "complete and matching the schema, and nothing else."
    )
    again = {
        **body,
        "n": 1,
        "messages": [
            *body["messages"],
            {"role": "assistant", "content": text},
            {"role": "user", "content": follow_up},
        ],
    }
    if body.get("seed") is not None:
        again["seed"] = (body["seed"] + 1 + k) % (2**31)  # a new seed, still derived from the request's
    try:
        data = await post(again)
    except Rejected as e:  # e.g. the longer conversation no longer fits: keep the first answer
        log.debug("json repair refused: %s", scrub(str(e)))
        return None
    choices = data.get("choices") or []
    if not choices:
        return None
    usage = data.get("usage") or {}
    c = choices[0]
    return (
        Output(content(c), c.get("finish_reason") or "stop"),
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )
