"""An undefined name is an error wherever it is used: never `Undefined` or `[Undefined]` in a prompt."""

from __future__ import annotations

import pytest

from mmsynth.prompts import TemplateRenderError, parse_template, render_template


def render(body: str, **variables) -> str:
    text = f"---\nid: t.undef\nversion: 1\ninputs: {{}}\n---\n{{% block user %}}{body}{{% endblock %}}\n"
    return render_template(parse_template(text, "mem/undef.j2"), variables).messages[0].parts[0].text


@pytest.mark.parametrize(
    "body",
    [
        "{{ [missing] }}",  # the trick: a list prints its items with repr(), which said 'Undefined'
        "{{ (missing,) }}",
        "{{ {'a': missing} }}",
        "{{ [missing]|string }}",
        "{{ [missing]|pprint }}",
        "{{ [missing]|default('fallback') }}",
        "{{ '%r' % missing }}",
        "{{ '%r'|format(missing) }}",
        "{{ '{!r}'.format(missing) }}",
        "{{ missing|list }}",
        "{{ [missing]|join }}",
        "{{ 'a' ~ missing }}",
        "{{ [missing]|tojson }}",
        "{{ missing|tojson }}",
        "{{ [missing]|first }}",
        "{{ [1, missing]|sort }}",
        "{{ [missing]|map('upper')|list }}",
        "{{ known.missing }}",
        "{{ [known.missing] }}",
        "{% for x in [missing] %}{{ x }}{% endfor %}",
    ],
)
def test_every_use_of_an_undefined_name_is_an_error(body):
    with pytest.raises(TemplateRenderError, match="undefined") as e:
        render(body, known={"here": 1})
    assert e.value.line == 6


def test_default_and_defined_tests_still_work():
    out = render(
        "{{ missing|default('d') }} {{ missing is defined }} {{ [missing|default(1)] }} {{ known.get('x', 2) }}",
        known={},
    )
    assert out == "d False [1] 2"
