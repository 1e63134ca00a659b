"""The registry: built-ins plus user folders, latest and pinned lookups, overrides, duplicates."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmsynth.prompts import TemplateError, TemplateRegistry

BUILTIN_REFS = {
    "caption.short@1",
    "caption.dense@1",
    "caption.grounded@1",
    "vqa.pairs@1",
    "interleaved.plan@1",
    "t2i.expand@1",
    "image.render@1",
    "judge.rubric@1",
}


def template(template_id: str, version: int, text: str = "Hi") -> str:
    return f"---\nid: {template_id}\nversion: {version}\n---\n{{% block user %}}{text}{{% endblock %}}\n"


def test_builtins_are_registered():
    registry = TemplateRegistry()
    assert {t.ref for t in registry.list()} == BUILTIN_REFS
    assert len(registry) == len(BUILTIN_REFS)
    assert "caption.dense" in registry and "caption.dense@1" in registry and "nope" not in registry


def test_get_latest_and_pinned(write_template, tmp_path):
    write_template(template("caption.dense", 2, "v2"), name="dense-v2.j2", folder="user")
    write_template(template("caption.dense", 3, "v3"), name="nested/dense-v3.j2", folder="user")
    registry = TemplateRegistry([tmp_path / "user"])
    assert registry.get("caption.dense").version == 3
    assert registry.get("caption.dense@2").body.strip() == "{% block user %}v2{% endblock %}"
    assert Path(registry.get("caption.dense@1").path).name == "caption.dense@1.j2"


def test_user_folder_overrides_builtin_same_ref(write_template):
    path = write_template(template("caption.short", 1, "mine"), name="anything.j2", folder="user")
    registry = TemplateRegistry([path.parent])
    assert registry.get("caption.short@1").path == str(path)
    assert len(registry) == len(BUILTIN_REFS)


def test_later_folder_overrides_earlier(write_template):
    first = write_template(template("my.task", 1, "first"), folder="a")
    second = write_template(template("my.task", 1, "second"), folder="b")
    assert TemplateRegistry([first.parent, second.parent]).get("my.task").path == str(second)
    assert TemplateRegistry([second.parent, first.parent]).get("my.task").path == str(first)


def test_duplicate_in_one_folder_names_both_files(write_template):
    a = write_template(template("my.task", 1, "a"), name="a.j2", folder="user")
    b = write_template(template("my.task", 1, "b"), name="b.j2", folder="user")
    with pytest.raises(TemplateError, match=r"my\.task@1 is defined twice") as info:
        TemplateRegistry([a.parent])
    assert str(a) in str(info.value) and str(b) in str(info.value)


def test_unknown_id_suggests_close_ids():
    with pytest.raises(TemplateError) as info:
        TemplateRegistry().get("caption.dens")
    message = str(info.value)
    assert "unknown template 'caption.dens'" in message
    assert "Did you mean 'caption.dense'" in message
    known = "Known templates: caption.dense, caption.grounded, caption.short, image.render, interleaved.plan"
    assert known in message


def test_unknown_id_without_close_match_lists_known():
    with pytest.raises(TemplateError, match="Known templates: ") as info:
        TemplateRegistry().get("zzz")
    assert "Did you mean" not in str(info.value)


def test_unknown_version_lists_versions():
    with pytest.raises(TemplateError, match=r"'caption.dense' has no version 7. Known versions: 1"):
        TemplateRegistry().get("caption.dense@7")


@pytest.mark.parametrize("ref", ["caption.dense@", "caption.dense@x", "caption.dense@-1"])
def test_malformed_ref(ref):
    with pytest.raises(TemplateError, match="invalid template reference"):
        TemplateRegistry().get(ref)


def test_list_is_sorted_by_id_then_version(write_template, tmp_path):
    for template_id, version in [("b.x", 2), ("a.x", 10), ("b.x", 1), ("a.x", 9)]:
        write_template(template(template_id, version), name=f"{template_id}-{version}.j2", folder="user")
    registry = TemplateRegistry([tmp_path / "user"], builtin=False)
    assert [t.ref for t in registry.list()] == ["a.x@9", "a.x@10", "b.x@1", "b.x@2"]
    assert registry.ids() == ["a.x", "b.x"]


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(TemplateError, match="templates folder not found"):
        TemplateRegistry([tmp_path / "nope"])


def test_bad_user_template_reports_its_file_and_line(write_template):
    path = write_template(
        "---\nid: my.task\nversion: one\n---\n{% block user %}x{% endblock %}\n", folder="user"
    )
    with pytest.raises(TemplateError, match=rf"{path}:3: invalid version"):
        TemplateRegistry([path.parent])
