from __future__ import annotations

import pytest

from mmsynth.validators import JsonSchemaConfig, JsonSchemaValidator, parse_json_output

SCHEMA = {
    "type": "object",
    "properties": {
        "question": {"type": "string", "minLength": 1},
        "answers": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "when": {"type": "string", "format": "date"},
    },
    "required": ["question", "answers"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ("  [1, 2]\n", [1, 2]),
        ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
        ('Here you go:\n```\n{"a": 1}\n```\nAnything else?', {"a": 1}),
        ('Sure! The answer is {"a": "braces } and { inside"} as requested.', {"a": "braces } and { inside"}),
        ('Note {not json} then {"ok": true}', {"ok": True}),
        ('[{"a": 1}, {"b": 2}] trailing', [{"a": 1}, {"b": 2}]),
        ('{"quote": "he said \\"}\\""}', {"quote": 'he said "}"'}),
        # The fence wins over an unmatched brace in the prose before it.
        ('Use the form {name: ... like this:\n```json\n{"name": "x"}\n```', {"name": "x"}),
        ("```json\n42\n```", 42),
    ],
)
def test_parse_json_output_accepts(text, value):
    assert parse_json_output(text) == (value, None)


@pytest.mark.parametrize(
    ("text", "error_start"),
    [
        ("", "empty output"),
        ("no json here", "no JSON object or array found"),
        ('{"a": {"b": 1}', "truncated"),  # the complete inner object is not the answer
        ('```json\n{"a": [1, 2', "truncated"),
        ('{"a": 1]', "Expecting"),
        ("{'a': 1}", "Expecting property name"),
    ],
)
def test_parse_json_output_rejects(text, error_start):
    value, error = parse_json_output(text)
    assert value is None
    assert error is not None and error.startswith(error_start)


def structured(make_candidate, text, schema=SCHEMA):
    value, error = parse_json_output(text)
    return make_candidate(text, task="qa", parsed=value, parse_error=error, output_schema=schema)


def test_valid_output_kept(make_candidate):
    c = structured(make_candidate, '{"question": "What colour?", "answers": ["red"]}')
    [v] = JsonSchemaValidator().check([c])
    assert v.keep and v.reason is None and v.validator == "json_schema"


def test_fenced_output_kept(make_candidate):
    c = structured(make_candidate, '```json\n{"question": "Q?", "answers": ["a"]}\n```')
    assert JsonSchemaValidator().check([c])[0].keep


def test_invalid_json_rejected_with_parse_error(make_candidate):
    c = structured(make_candidate, '{"question": "Q?", "answers": ["a"')
    [v] = JsonSchemaValidator().check([c])
    assert not v.keep
    assert v.reason == f"output is not valid JSON: {c.parse_error}"
    assert v.reason.startswith("output is not valid JSON: truncated")


def test_unparsed_candidate_is_parsed_by_the_validator(make_candidate):
    good = make_candidate('{"question": "Q?", "answers": ["a"]}', output_schema=SCHEMA)
    bad = make_candidate("I cannot answer that.", output_schema=SCHEMA)
    v_good, v_bad = JsonSchemaValidator().check([good, bad])
    assert v_good.keep
    assert not v_bad.keep and v_bad.reason == "output is not valid JSON: no JSON object or array found"


def test_schema_violation_names_the_path(make_candidate):
    c = structured(make_candidate, '{"question": "Q?", "answers": ["a", 7]}')
    [v] = JsonSchemaValidator().check([c])
    assert not v.keep
    assert v.reason == "schema: $.answers[1]: 7 is not of type 'string'"


def test_schema_missing_property_at_root(make_candidate):
    c = structured(make_candidate, '{"question": "Q?"}')
    [v] = JsonSchemaValidator().check([c])
    assert v.reason == "schema: $: 'answers' is a required property"


def test_long_messages_are_cut(make_candidate):
    c = structured(make_candidate, '{"question": "Q?", "answers": ["a"], "extra": "' + "x" * 1000 + '"}')
    [v] = JsonSchemaValidator().check([c])
    assert not v.keep and v.reason.startswith("schema: $: Additional properties")
    assert len(v.reason) < 260


def test_no_schema_kept(make_candidate):
    [v] = JsonSchemaValidator().check([make_candidate("not json at all")])
    assert v.keep and v.reason is None


def test_formats_checked_only_when_asked(make_candidate):
    c = structured(make_candidate, '{"question": "Q?", "answers": ["a"], "when": "yesterday"}')
    assert JsonSchemaValidator().check([c])[0].keep
    [v] = JsonSchemaValidator(JsonSchemaConfig(check_formats=True)).check([c])
    assert not v.keep and v.reason == "schema: $.when: 'yesterday' is not a 'date'"


def test_invalid_schema_raises(make_candidate):
    c = make_candidate('{"a": 1}', parsed={"a": 1}, output_schema={"type": "no-such-type"})
    with pytest.raises(ValueError, match="not a valid JSON schema"):
        JsonSchemaValidator().check([c])


def test_batch_verdicts_in_order(make_candidate):
    texts = ['{"question": "Q", "answers": ["a"]}', "oops", '{"question": "", "answers": ["a"]}']
    verdicts = JsonSchemaValidator().check([structured(make_candidate, t) for t in texts])
    assert [v.keep for v in verdicts] == [True, False, False]
    assert verdicts[2].reason.startswith("schema: $.question: ")


def test_best_match_prefers_the_shallow_error(make_candidate):
    schema = {
        "type": "object",
        "properties": {"box": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        "required": ["label"],
    }
    c = structured(make_candidate, '{"box": {"x": "left"}}', schema)
    [v] = JsonSchemaValidator().check([c])
    assert v.reason == "schema: $: 'label' is a required property"
