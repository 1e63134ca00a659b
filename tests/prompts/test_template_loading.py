"""Loading template files: front matter validation with file:line messages, body checks, the hash."""

from __future__ import annotations

import hashlib
import re

import pytest

from mmsynth.prompts import InputSpec, TemplateError, load_template, parse_template

GOOD = """\
---
id: caption.dense
version: 2
task: caption
description: Dense description.
inputs:
  image: image
  scene: {type: text, optional: true}
  count: {type: number, optional: true, default: 3}
output_schema: {type: object, properties: {caption: {type: string}}, required: [caption]}
sampling: {temperature: 0.7, max_tokens: 128, stop: ["\\n\\n"]}
exemplars:
  - {scene: a beach, output: Sand and sea.}
---
{% block system %}You are a careful annotator.{% endblock %}
{% block user %}
{{ image }}Describe every object.{% if scene %} Hint: {{ scene }}{% endif %} ({{ count }}, {{ extra }})
{% endblock %}
"""


def test_good_template_loads_every_field(write_template):
    path = write_template(GOOD)
    t = load_template(path)
    assert (t.id, t.version, t.task, t.ref) == ("caption.dense", 2, "caption", "caption.dense@2")
    assert t.description == "Dense description."
    assert t.inputs == {
        "image": InputSpec("image"),
        "scene": InputSpec("text", optional=True),
        "count": InputSpec("number", optional=True, default=3),
    }
    assert t.inputs["scene"].line == 8
    assert t.output_schema == {
        "type": "object",
        "properties": {"caption": {"type": "string"}},
        "required": ["caption"],
    }
    assert t.sampling == {"temperature": 0.7, "max_tokens": 128, "stop": ["\n\n"]}
    assert t.exemplars == ({"scene": "a beach", "output": "Sand and sea."},)
    assert t.path == str(path)
    assert t.body_line == 15
    assert t.body.startswith("{% block system %}")


def test_variables_and_required_variables(write_template):
    t = load_template(write_template(GOOD))
    assert t.variables() == {"image", "scene", "count", "extra"}
    assert t.required_variables() == {"image", "extra"}


def test_hash_is_sha256_of_bytes_and_ignores_line_endings(write_template):
    path = write_template(GOOD)
    t = load_template(path)
    assert t.hash == hashlib.sha256(GOOD.encode()).hexdigest()
    crlf = write_template(GOOD.replace("\n", "\r\n"), name="crlf.j2")
    assert load_template(crlf).hash == t.hash
    assert load_template(path).hash == t.hash  # stable across loads


def test_hash_changes_on_any_edit(write_template):
    before = load_template(write_template(GOOD)).hash
    after = load_template(write_template(GOOD.replace("careful", "very careful"))).hash
    whitespace = load_template(write_template(GOOD.replace("{% endblock %}\n", "{% endblock %}\n\n"))).hash
    assert len({before, after, whitespace}) == 3


def test_crlf_file_reports_the_same_lines(write_template):
    bad = GOOD.replace("version: 2", "version: zero").replace("\n", "\r\n")
    with pytest.raises(TemplateError, match=r"t\.j2:3: invalid version"):
        load_template(write_template(bad))


def test_minimal_template_defaults():
    t = parse_template("---\nid: a\nversion: 1\n---\n{% block user %}Hi{% endblock %}", "mem.j2")
    assert (t.task, t.description, dict(t.inputs), t.output_schema, t.sampling, t.exemplars) == (
        "",
        "",
        {},
        None,
        {},
        (),
    )


def _front(*lines: str) -> str:
    return "---\n" + "\n".join(lines) + "\n---\n{% block user %}{{ x }}{% endblock %}\n"


BASE = ("id: t.bad", "version: 1", "inputs: {x: text}")

# (file text, line the message must name, words it must contain)
BAD_CASES = {
    "no front matter": ("{% block user %}hi{% endblock %}\n", 1, "does not start with front matter"),
    "unclosed front matter": ("---\nid: a\nversion: 1\n{% block user %}{% endblock %}\n", 1, "never closed"),
    "invalid yaml": (
        _front("id: t.bad", "version: 1", "inputs: {x: text", "task: caption"),
        5,
        "not valid YAML",
    ),
    "not a mapping": (_front("- id", "- version"), 1, "must be a YAML mapping"),
    "missing id": (_front("version: 1", "inputs: {x: text}"), 1, "no 'id'"),
    "bad id": (_front("id: Caption-Dense", "version: 1", "inputs: {x: text}"), 2, "invalid id"),
    "missing version": (_front("id: t.bad", "inputs: {x: text}"), 1, "no 'version'"),
    "version zero": (_front("id: t.bad", "version: 0", "inputs: {x: text}"), 3, "invalid version"),
    "version bool": (_front("id: t.bad", "version: true", "inputs: {x: text}"), 3, "invalid version"),
    "unknown key": (_front(*BASE, "sampleing: {}"), 5, "unknown key 'sampleing'. Did you mean 'sampling'?"),
    "duplicate key": (_front(*BASE, "version: 2"), 5, "duplicate key 'version'"),
    "task not text": (_front(*BASE, "task: [a, b]"), 5, "'task' must be text"),
    "inputs not mapping": (_front("id: t.bad", "version: 1", "inputs: [x]"), 4, "'inputs' must be a mapping"),
    "unknown input type": (
        _front("id: t.bad", "version: 1", "inputs:", "  x: {type: string}"),
        5,
        "unknown type 'string'. Did you mean 'text'?",
    ),
    "reserved input name": (
        _front(*BASE[:2], "inputs: {x: text, exemplars: list}"),
        4,
        "'exemplars' is reserved",
    ),
    "unknown input key": (
        _front("id: t.bad", "version: 1", "inputs:", "  x:", "    type: text", "    optinal: true"),
        7,
        "unknown key 'optinal' in input 'x'. Did you mean 'optional'?",
    ),
    "default not optional": (
        _front("id: t.bad", "version: 1", "inputs:", "  x: {type: text, default: hi}"),
        5,
        "has a default but is not optional",
    ),
    "default wrong type": (
        _front("id: t.bad", "version: 1", "inputs:", "  x: {type: number, optional: true, default: many}"),
        5,
        "default of input 'x' is not number",
    ),
    "invalid output schema": (
        _front(*BASE, "output_schema:", "  type: object", "  properties:", "    caption: {type: strin}"),
        8,
        "output_schema is not a valid JSON Schema",
    ),
    "output schema not mapping": (_front(*BASE, "output_schema: [1]"), 5, "'output_schema' must be"),
    "bad temperature": (
        _front(*BASE, "sampling:", "  max_tokens: 10", "  temperature: -1"),
        7,
        "'temperature'",
    ),
    "unknown sampling key": (_front(*BASE, "sampling: {top_k: 5}"), 5, "unknown sampling key 'top_k'"),
    "exemplar without output": (
        _front(*BASE, "exemplars:", "  - {x: hi}"),
        6,
        "must be a mapping with an 'output'",
    ),
    "exemplar undeclared key": (
        _front(*BASE, "exemplars:", "  - x: hi", "    y: there", "    output: ok"),
        7,
        "'y', which is not a declared input",
    ),
    "jinja syntax error": (
        "---\nid: t.bad\nversion: 1\n---\n{% block user %}\nline six\n{% if %}\n{% endblock %}\n",
        7,
        "Jinja syntax error",
    ),
    "unclosed block": (
        "---\nid: t.bad\nversion: 1\n---\n\n{% block user %}\n{{ x }}\n",
        7,
        "Jinja syntax error",
    ),
    "no user block": (
        "---\nid: t.bad\nversion: 1\n---\n{% block system %}hi{% endblock %}\n",
        5,
        "no {% block user %}",
    ),
    "unknown block": (
        "---\nid: t.bad\nversion: 1\n---\n{% block user %}hi{% endblock %}\n{% block assistant %}x{% endblock %}\n",
        6,
        "unknown block 'assistant'",
    ),
    "text outside blocks": (
        "---\nid: t.bad\nversion: 1\n---\n{% block user %}hi{% endblock %}\n\nstray words\n",
        7,
        "outside the blocks",
    ),
    "include": (
        "---\nid: t.bad\nversion: 1\n---\n{% block user %}\n{% include 'x.j2' %}\n{% endblock %}\n",
        6,
        "{% include %} is not available",
    ),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_template_names_file_and_line(write_template, case):
    text, line, words = BAD_CASES[case]
    path = write_template(text)
    with pytest.raises(TemplateError) as info:
        load_template(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert words in message
    assert (info.value.path, info.value.line) == (str(path), line)
    # "<path>:<line>: <problem>. <hint>": a problem, then a hint or at least a full stop.
    assert re.match(rf"^{re.escape(str(path))}:{line}: [^\n]+\.", message)


def test_error_has_a_hint(write_template):
    path = write_template(_front("id: t.bad", "version: 1", "inputs: {x: strng}"))
    with pytest.raises(TemplateError) as info:
        load_template(path)
    assert info.value.problem == "input 'x' has unknown type 'strng'"
    assert "Types: text, image, json, list, number." in info.value.hint


def test_missing_file_is_a_template_error(tmp_path):
    with pytest.raises(TemplateError, match="cannot read template"):
        load_template(tmp_path / "nope.j2")


def test_non_utf8_file(write_template, tmp_path):
    path = tmp_path / "latin.j2"
    path.write_bytes(b"---\nid: t\nversion: 1\ndescription: caf\xe9\n---\n{% block user %}x{% endblock %}")
    with pytest.raises(TemplateError, match=r"latin\.j2:1: the file is not UTF-8"):
        load_template(path)
