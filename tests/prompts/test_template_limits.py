"""Templates are user input: whatever they try, rendering and linting end quickly with a clear error
naming the template and line, and the process never grows to gigabytes."""

from __future__ import annotations

import pytest

from mmsynth.prompts import TemplateRenderError, parse_template, render_template
from mmsynth.prompts.lint import lint_source

BIG = "10000000000"  # 10**10: characters nobody can allocate


def source(body_line: str) -> str:
    # The user block's expression sits on line 6 of the file.
    return (
        f"---\nid: t.hostile\nversion: 1\ninputs: {{}}\n---\n{{% block user %}}{body_line}{{% endblock %}}\n"
    )


def render_error(body_line: str) -> TemplateRenderError:
    t = parse_template(source(body_line), "mem/hostile.j2")
    with pytest.raises(TemplateRenderError) as e:
        render_template(t, {})
    assert e.value.path == "mem/hostile.j2" and e.value.line == 6, str(e.value)
    return e.value


@pytest.fixture(autouse=True)
def small_limits(monkeypatch):
    # Small limits keep each case fast; the defaults are checked in test_defaults_are_documented_values.
    monkeypatch.setenv("MMSYNTH_TEMPLATE_MAX_CHARS", "100000")
    monkeypatch.setenv("MMSYNTH_TEMPLATE_TIMEOUT", "1")
    monkeypatch.setenv("MMSYNTH_TEMPLATE_MAX_RANGE", "1000")


@pytest.mark.parametrize(
    "body",
    [
        f"{{{{ 'x' * {BIG} }}}}",
        f"{{{{ [1] * {BIG} }}}}",
        f"{{{{ 'x'|center({BIG}) }}}}",
        f"{{{{ 'x'|indent({BIG}, true) }}}}",
        f"{{{{ 'x'.ljust({BIG}) }}}}",
        f"{{{{ 'x'.zfill({BIG}) }}}}",
        f"{{{{ 'x'|attr('rjust')({BIG}) }}}}",
        f"{{{{ '%*s' % ({BIG}, 'x') }}}}",
        f"{{{{ '%s'|format('x') ~ ('{{:>{BIG}}}'.format(1)) }}}}",
        f"{{{{ '{{:>{{}}}}'.format(1, {BIG}) }}}}",
        "{{ 'ab'|replace('', 'x' * 50000) }}",
        "{{ ('x' * 50000).expandtabs(100) ~ ('\t' * 5000).expandtabs(1000) }}",
        "{{ (['x' * 50000] * 10)|join }}",
        "{{ ' '.join(['x' * 50000] * 10) }}",
        "{{ ('a ' * 40000)|wordwrap(1, wrapstring='y' * 100) }}",
        f"{{{{ [1]|slice({BIG})|list }}}}",
        "{{ [[1]] * 1000|sum(start=[]) }}",
        f"{{{{ range({BIG})|list }}}}",
        "{{ 10 ** (10 ** 10) }}",
        "{{ 7 ** 100000 }}",
        "{% set s = 'x' * 60000 %}{{ s ~ s }}",
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% set s = 'x' * 60000 %}{% set t %}{{ s }}{{ s }}{% endset %}{{ t }}",
        "{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}x{% endmacro %}{{ f(40) }}",
        "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}{% endfor %}{% endfor %}{% endfor %}",
        "{% for c in 'x' * 90000 %}{% for d in 'y' * 90000 %}{% endfor %}{% endfor %}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{{ lipsum(1000000, min=1000000, max=1000000) }}",
        f"{{{{ [1]|tojson(indent={BIG}) }}}}",
        # One long string referenced many times: each container is small, its text is not.
        "{% set s = 'x' * 90000 %}{{ [s] * 1000 }}",
        "{% set s = 'x' * 90000 %}{{ ([s] * 1000)|string }}",
        "{% set s = 'x' * 90000 %}{{ 'a' ~ ([s] * 1000) }}",
        "{% set s = 'x' * 90000 %}{{ '%s' % ([s] * 1000,) }}",
        "{% set s = 'x' * 90000 %}{{ ([s] * 1000)|tojson }}",
        "{% set s = 'x' * 90000 %}{{ ([s] * 1000)|map('upper')|list|length }}",
        "{% set s = 'x' * 90000 %}{{ ''.join(([s] * 1000)|map('upper')) }}",
        "{% set s = 'x' * 90000 %}{{ ([s] * 1000)|map('upper')|sort|first }}",
    ],
)
def test_hostile_templates_fail_fast_with_file_and_line(body):
    err = render_error(body)
    assert any(
        word in str(err)
        for word in (
            "limit",
            "took more than",
            "recursed",
            "undefined",
            "adds numbers only",
            "bits",
            "tojson",
        )
    ), str(err)


def test_limit_errors_say_how_to_raise_the_limit():
    assert "MMSYNTH_TEMPLATE_MAX_CHARS" in str(render_error(f"{{{{ 'x' * {BIG} }}}}"))
    assert "MMSYNTH_TEMPLATE_MAX_RANGE" in str(render_error(f"{{{{ range({BIG})|list }}}}"))
    slow = "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}{% endfor %}{% endfor %}{% endfor %}"
    assert "MMSYNTH_TEMPLATE_TIMEOUT" in str(render_error(slow))


def test_lint_and_compile_do_not_fold_constants():
    # Jinja's optimizer evaluates constant expressions while compiling: this took 23 GB in lint.
    text = source(f"{{{{ 'x' * {BIG} }}}}{{{{ 'x'|center({BIG}) }}}}")
    assert lint_source(text, "mem/hostile.j2") == []
    t = parse_template(text, "mem/hostile.j2")
    assert t.variables() == set()
    assert "user" in t.jinja.blocks  # compiled, nothing evaluated


def test_parse_of_deeply_nested_expressions_is_a_lint_error():
    issues = lint_source(source("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"), "mem/deep.j2")
    assert [i.severity for i in issues] == ["error"] and "nested too deeply" in issues[0].message


def test_limits_are_configurable_and_bad_values_are_named(monkeypatch):
    t = parse_template(source("{{ 'x' * 200000 }}"), "mem/hostile.j2")
    monkeypatch.setenv("MMSYNTH_TEMPLATE_MAX_CHARS", "300000")
    text = render_template(t, {}).messages[0].parts[0].text
    assert text == "x" * 200000
    monkeypatch.setenv("MMSYNTH_TEMPLATE_MAX_CHARS", "lots")
    with pytest.raises(ValueError, match="MMSYNTH_TEMPLATE_MAX_CHARS='lots' must be a positive int"):
        render_template(t, {})


def test_fixed_limits_are_read_once_for_the_block_and_each_render_still_checks_them(monkeypatch):
    from mmsynth.prompts.limits import fixed_limits

    t = parse_template(source("{{ 'x' * 200000 }}"), "mem/hostile.j2")
    monkeypatch.setenv("MMSYNTH_TEMPLATE_MAX_CHARS", "300000")
    with fixed_limits() as lim:
        monkeypatch.setenv("MMSYNTH_TEMPLATE_MAX_CHARS", "1000")  # not seen inside the block
        assert lim.max_chars == 300000
        assert render_template(t, {}).messages[0].parts[0].text == "x" * 200000
    with pytest.raises(TemplateRenderError, match="over a template limit"):
        render_template(t, {})  # after it: the environment again
    with fixed_limits(), pytest.raises(TemplateRenderError, match="over a template limit"):
        render_template(t, {})  # the fixed limits are limits too


def test_defaults_are_documented_values(monkeypatch):
    from mmsynth.prompts.limits import limits

    for name in ("MMSYNTH_TEMPLATE_MAX_CHARS", "MMSYNTH_TEMPLATE_TIMEOUT", "MMSYNTH_TEMPLATE_MAX_RANGE"):
        monkeypatch.delenv(name)
    assert limits().max_chars == 1_000_000 and limits().timeout == 10 and limits().max_range == 100_000


def test_ordinary_loops_filters_and_arithmetic_still_work():
    t = parse_template(
        source(
            "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
            "{{ loop.index }}/{{ loop.length }} {% endfor %}{{ ns.n }} {{ 'ab' * 2 }} {{ [1, 2]|sum }} "
            "{{ 'x'|center(5) }}|{{ 'a-b'|replace('-', '+') }} {{ ['a', 'b']|join(',') }} {{ 2 ** 10 }} "
            "{{ '%03d' % 7 }} {{ '{:>4}'.format('z') }} {{ 'a' ~ 1 }}{% for x in [] %}{% else %} none{% endfor %}"
            " {{ ''.join(['a', 'b']|map('upper')) }} {{ [3, 1, 2]|sort }} {{ [1, 1]|unique|list }} {{ [1]|string }}"
        ),
        "mem/ok.j2",
    )
    text = render_template(t, {}).messages[0].parts[0].text
    assert text == "1/3 2/3 3/3 3 abab 3   x  |a+b a,b 1024 007    z a1 none AB [1, 2, 3] [1] [1]"
