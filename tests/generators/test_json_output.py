"""The one JSON-output parser, on the outputs where the backend's repair loop and the factory used to
disagree (prose around the JSON, raw control characters in strings)."""

from __future__ import annotations

import pytest

from mmsynth.generators.json_output import parse_json_output
from mmsynth.validators import parse_json_output as validators_parse


def test_the_validators_export_is_this_parser():
    assert validators_parse is parse_json_output


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('Here is the JSON: {"a": 1}', {"a": 1}),
        ('{"a": 1}\nHope this helps!', {"a": 1}),
        ('{"caption": "two lines:\nfirst\tand second"}', {"caption": "two lines:\nfirst\tand second"}),
        ('```json\n{"a": "raw\ttab"}\n```', {"a": "raw\ttab"}),
    ],
)
def test_accepts_what_the_factory_accepts(text, value):
    assert parse_json_output(text) == (value, None)


@pytest.mark.parametrize("text", ['{"a": ', "```json\n```", "not json at all", '{"a": 1'])
def test_still_refuses_what_is_not_json(text):
    value, error = parse_json_output(text)
    assert value is None and error
