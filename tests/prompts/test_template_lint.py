"""Lint: each kind of issue with its line and severity; a clean template gives none; it never raises."""

from __future__ import annotations

import pytest

from mmsynth.prompts import LintIssue, lint_template

CLEAN = """\
---
id: lint.clean
version: 1
inputs:
  image: image
  scene: {type: text, optional: true}
---
{% block system %}You annotate.{% endblock %}
{% block user %}
{{ image }}Describe it.{% if scene %} Hint: {{ scene }}{% endif %}
{% endblock %}
"""


def issues_of(write_template, text: str, **kwargs) -> list[tuple[int, str, str]]:
    path = write_template(text)
    issues = lint_template(path, **kwargs)
    assert all(i.path == str(path) for i in issues)
    return [(i.line, i.severity, i.message) for i in issues]


def test_clean_template_has_no_issues(write_template):
    assert issues_of(write_template, CLEAN) == []
    assert issues_of(write_template, CLEAN, available_vars={"image", "scene", "id"}) == []


def test_front_matter_error_is_reported(write_template):
    [(line, severity, message)] = issues_of(write_template, CLEAN.replace("version: 1", "version: 0"))
    assert (line, severity) == (3, "error")
    assert message.startswith("invalid version 0. Use an integer >= 1.")


def test_several_front_matter_errors_are_all_reported(write_template):
    text = CLEAN.replace("version: 1", "version: 0").replace("scene: {type: text", "scene: {type: txt")
    assert [(line, sev) for line, sev, _ in issues_of(write_template, text)] == [(3, "error"), (6, "error")]


def test_jinja_syntax_error_with_file_line(write_template):
    text = CLEAN.replace("{% if scene %}", "{% if scene %")
    [(line, severity, message)] = issues_of(write_template, text)
    assert (line, severity) == (10, "error") and "Jinja syntax error" in message


def test_invalid_output_schema(write_template):
    text = CLEAN.replace("inputs:", "output_schema: {type: object, required: caption}\ninputs:")
    [(line, severity, message)] = issues_of(write_template, text)
    assert (line, severity) == (4, "error") and "not a valid JSON Schema" in message


def test_undeclared_variable_is_an_error_at_its_line(write_template):
    text = CLEAN.replace("Describe it.", "Describe it.\nStyle: {{ style }}")
    assert issues_of(write_template, text) == [
        (11, "error", "variable 'style' is not declared in `inputs`. Declare it with its type.")
    ]


def test_unused_input_is_a_warning_at_its_declaration(write_template):
    text = CLEAN.replace("  scene:", "  mood: text\n  scene:")
    assert issues_of(write_template, text) == [
        (6, "warning", "input 'mood' is declared but never used. Use it or remove it.")
    ]


def test_image_outside_user_block_is_a_warning(write_template):
    text = CLEAN.replace(
        "{% block system %}You annotate.", "{% block system %}You annotate {{ image }}."
    ).replace("{{ image }}Describe", "Describe")
    [(line, severity, message)] = issues_of(write_template, text)
    assert (line, severity) == (
        8,
        "warning",
    ) and "image input 'image' is not placed in the user block" in message


def test_exemplars_never_used_is_a_warning(write_template):
    text = CLEAN.replace("inputs:", "exemplars:\n  - {scene: beach, output: sand}\ninputs:")
    [(line, severity, message)] = issues_of(write_template, text)
    assert (line, severity) == (10, "warning") and "exemplars are given but the body never uses" in message


def test_variables_the_seeds_do_not_provide(write_template):
    issues = issues_of(write_template, CLEAN, available_vars={"scene"})
    assert issues == [(10, "error", "variable 'image' is not provided by the seeds. Available: scene.")]
    # optional inputs may be missing from the seeds
    assert issues_of(write_template, CLEAN, available_vars={"image"}) == []


def test_issues_are_sorted_by_line(write_template):
    text = CLEAN.replace("  scene:", "  mood: text\n  scene:").replace("Describe it.", "{{ style }}")
    assert [line for line, _, _ in issues_of(write_template, text)] == [6, 11]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"---\n: : :\n---\n",
        b"---\nid: x\nversion: 1\n---\n{% block user %}{{ x.__class__ }",
    ],
)
def test_never_raises(tmp_path, content):
    path = tmp_path / "bad.j2"
    path.write_bytes(content)
    issues = lint_template(path)
    assert issues and all(i.severity == "error" for i in issues)


def test_missing_file(tmp_path):
    [issue] = lint_template(tmp_path / "nope.j2")
    assert issue.severity == "error" and "cannot read the file" in issue.message


def test_issue_str():
    assert str(LintIssue("a.j2", 3, "warning", "x.")) == "a.j2:3: warning: x."
