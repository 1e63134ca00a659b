"""`mmsynth prompts list|show|render|lint`: handlers through a parser built as the main CLI builds it."""

from __future__ import annotations

import argparse
import json

import pytest

from mmsynth.factory.cli.main import main
from mmsynth.factory.cli.prompts import add_prompts_commands

USER_TEMPLATE = """\
---
id: my.compare
version: 1
task: vqa
description: Compare two images.
inputs:
  images: image
  question: text
---
{% block user %}
{% for img in images %}{{ img }}{% endfor %}
{{ question }}
{% endblock %}
"""


def run(argv: list[str]) -> int:
    # Through `main`: it maps errors to exit codes for every command.
    return main(["prompts", *argv])


def test_list(capsys):
    assert run(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["REF", "TASK", "DESCRIPTION", "HASH"]
    assert len(lines) == 9
    dense = next(line for line in lines if line.startswith("caption.dense@1 "))
    assert " caption " in dense and "Dense, detailed description" in dense
    assert len(dense.split()[-1]) == 12


def test_list_with_user_folder(capsys, write_template):
    path = write_template(USER_TEMPLATE, folder="mine")
    assert run(["list", "--templates", str(path.parent)]) == 0
    assert "my.compare@1" in capsys.readouterr().out


def test_list_with_missing_folder_is_a_user_error(capsys, tmp_path):
    assert run(["list", "--templates", str(tmp_path / "nope")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "templates folder not found" in captured.err


def test_show(capsys):
    assert run(["show", "caption.dense@1"]) == 0
    out = capsys.readouterr().out
    assert "ref:           caption.dense@1" in out
    assert "scene (text, optional)" in out and "caption.dense@1.j2" in out
    assert "{% block user %}" in out and "Hidden context" in out


def test_show_a_file(capsys, write_template):
    path = write_template(USER_TEMPLATE)
    assert run(["show", str(path)]) == 0
    assert f"path:          {path}" in capsys.readouterr().out


def test_show_unknown_suggests(capsys):
    assert run(["show", "caption.dens"]) == 2
    assert "Did you mean 'caption.dense'" in capsys.readouterr().err


def test_render_with_images_relative_to_vars_file(capsys, write_template, tmp_path, red, blue):
    template = write_template(USER_TEMPLATE, folder="templates")
    (tmp_path / "vars" / "img").mkdir(parents=True)
    (tmp_path / "vars" / "img" / "a.png").write_bytes(red.data)
    (tmp_path / "vars" / "img" / "b.png").write_bytes(blue.data)
    vars_file = tmp_path / "vars" / "v.yaml"
    vars_file.write_text("images: [img/a.png, img/b.png]\nquestion: Which is red?\n")
    assert run(["render", "my.compare", "--vars", str(vars_file), "--templates", str(template.parent)]) == 0
    out = capsys.readouterr().out
    # trim_blocks: the newline after {% endfor %} is dropped
    expected = f"=== user ===\n<image {red.sha256[:12]} 8x6><image {blue.sha256[:12]} 5x4>Which is red?\n"
    assert expected in out


def test_render_builtin_with_json_vars(capsys, tmp_path, red):
    (tmp_path / "cat.png").write_bytes(red.data)
    vars_file = tmp_path / "v.json"
    vars_file.write_text(json.dumps({"image": "cat.png"}))
    assert run(["render", "caption.grounded", "--vars", str(vars_file)]) == 0
    out = capsys.readouterr().out
    assert out.index("=== system ===") < out.index("=== user ===") < out.index("=== output_schema ===")
    assert f"=== user ===\n<image {red.sha256[:12]} 8x6>\nLook at this image" in out


@pytest.mark.parametrize(
    ("vars_text", "error"),
    [
        ("{}", "required input 'image' is missing"),
        ("image: missing.png", "cannot read image 'missing.png'"),
        ("image: [1, 2]", "an image must be given as a file path"),
        ("- a list", "variables must be a mapping"),
        ("image: [unclosed", "cannot parse variables"),
    ],
)
def test_render_user_errors(capsys, tmp_path, vars_text, error):
    vars_file = tmp_path / "v.yaml"
    vars_file.write_text(vars_text)
    assert run(["render", "caption.short", "--vars", str(vars_file)]) == 2
    captured = capsys.readouterr()
    assert error in captured.err


def test_render_missing_vars_file(capsys, tmp_path):
    assert run(["render", "caption.short", "--vars", str(tmp_path / "nope.json")]) == 2
    assert "cannot read variables" in capsys.readouterr().err


def test_lint_clean_folder(capsys, write_template):
    path = write_template(USER_TEMPLATE, folder="ok")
    assert run(["lint", str(path.parent)]) == 0
    assert capsys.readouterr().out == "1 file: 0 errors, 0 warnings\n"


def test_lint_builtins_are_clean(capsys):
    from importlib.resources import files

    assert run(["lint", str(files("mmsynth.prompts.builtin"))]) == 0
    assert capsys.readouterr().out == "8 files: 0 errors, 0 warnings\n"


def test_lint_error_exits_1(capsys, write_template):
    good = write_template(USER_TEMPLATE, name="good.j2")
    bad = write_template(USER_TEMPLATE.replace("{{ question }}", "{{ questoin }}"), name="bad.j2")
    assert run(["lint", str(good), str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{bad}:8: warning: input 'question' is declared but never used. Use it or remove it." in out
    assert (
        f"{bad}:12: error: variable 'questoin' is not declared in `inputs`. Declare it with its type." in out
    )
    assert out[-1] == "2 files: 1 errors, 1 warnings"


def test_lint_warnings_only_exits_0(capsys, write_template):
    path = write_template(USER_TEMPLATE.replace("  question: text", "  question: text\n  spare: text"))
    assert run(["lint", str(path)]) == 0
    assert f"{path}:9: warning: input 'spare' is declared but never used" in capsys.readouterr().out


def test_lint_missing_path_is_a_user_error(capsys, tmp_path):
    assert run(["lint", str(tmp_path / "nope.j2")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_handlers_are_set_as_func():
    parser = argparse.ArgumentParser()
    add_prompts_commands(parser.add_subparsers())
    for argv, name in [
        (["prompts", "list"], "cmd_list"),
        (["prompts", "show", "x"], "cmd_show"),
        (["prompts", "render", "x", "--vars", "v.json"], "cmd_render"),
        (["prompts", "lint", "x"], "cmd_lint"),
    ]:
        assert parser.parse_args(argv).func.__name__ == name
