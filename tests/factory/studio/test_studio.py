"""The template studio's API and CLI: render, lint, run, compare and save, on the tiny VLM."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from studio_helpers import with_schema, write_recipe

from mmsynth.factory.cli.main import main
from mmsynth.factory.studio.app import create_app
from mmsynth.factory.studio.preview import StudioError, StudioSession, parse_editor_text, read_source
from mmsynth.factory.studio.versions import propose_version, save_version, set_version
from mmsynth.prompts import TemplateRegistry, load_template


@pytest.fixture(scope="module")
def session(tmp_path_factory, tiny_vlm):
    """One session for the module: the model loads once, on the first run."""
    s = StudioSession(write_recipe(tmp_path_factory.mktemp("studio"), tiny_vlm))
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(session):
    with TestClient(create_app(session, hosts=["testserver"])) as c:
        yield c


@pytest.fixture
def fresh(tmp_path, tiny_vlm):
    """A session of its own, for tests that write versions (no model is loaded unless one runs)."""
    s = StudioSession(write_recipe(tmp_path / "r", tiny_vlm))
    yield s
    s.close()


def caption_source() -> str:
    return read_source(TemplateRegistry().get("caption.short@1"))


def line_of(source: str, needle: str) -> int:
    return next(i for i, line in enumerate(source.split("\n"), 1) if needle in line)


# -- pages and rendering ---------------------------------------------------------------------------------


def test_pages_list_the_tasks_and_open_the_editor(client):
    index = client.get("/")
    assert index.status_code == 200
    assert "/tasks/captions" in index.text and "caption.short@1" in index.text
    page = client.get("/tasks/captions")
    assert page.status_code == 200
    assert '<textarea id="editor"' in page.text
    assert "id: caption.short" in page.text  # the file's text is in the editor
    assert client.get("/tasks/nope").status_code == 404
    assert client.get("/static/studio.js").status_code == 200
    # Served, not grepped: what the highlighter does is checked in a real browser, on the editor's
    # spans, by test_studio_browser.py::test_edit_preview_run_compare_and_save_in_chromium.
    assert client.get("/static/highlight.js").status_code == 200


def test_render_follows_the_edit_and_shows_images(client):
    source = caption_source()
    edited = source.replace("Write alt text for this image", "Name every colour in this image")
    data = client.post("/api/render", json={"task": "captions", "source": edited, "samples": 3}).json()
    assert data["issues"] == [] and data["error"] is None
    assert len(data["samples"]) == 3
    for sample in data["samples"]:
        (user,) = [m for m in sample["messages"] if m["role"] == "user"]
        kinds = [p["type"] for p in user["parts"]]
        assert kinds[0] == "image" and user["parts"][0]["src"].startswith("data:image/png;base64,")
        text = "".join(p["text"] for p in user["parts"] if p["type"] == "text")
        assert "Name every colour in this image" in text and "Write alt text for this image" not in text
        assert sample["seed"]["image"].startswith("data:image/png;base64,")
    # Another task maps the seed's description to `scene`: it shows up in that task's prompt.
    qa = client.post(
        "/api/render",
        json={"task": "qa", "source": read_source(TemplateRegistry().get("vqa.pairs")), "samples": 1},
    ).json()
    (sample,) = qa["samples"]
    user_text = "".join(p.get("text", "") for m in sample["messages"] for p in m["parts"])
    assert f"Scene: {sample['seed']['fields']['description']}" in user_text


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        (  # a variable the template never declares
            "Reply with the sentence only.",
            "Reply in {{ language }}.",
            "{{ language }}",
            "variable 'language' is not declared",
        ),
        (  # declared, but no seed field gives it (scenes have no `mood`)
            "  image: image\n",
            "  image: image\n  mood: text\n",
            "Reply in the {{ mood }} mood.",
            "variable 'mood' is not provided by the seeds",
        ),
        ("output_schema: null", "output_schema: {type: 12}", "output_schema:", "not a valid JSON Schema"),
        (
            "Reply with the sentence only.",
            "Reply in {{ 'English' + }}.",
            "{{ 'English' + }}",
            "Jinja syntax error",
        ),
    ],
)
def test_lint_on_every_edit_names_the_problem_and_its_line(client, old, new, needle, message):
    source = caption_source().replace(old, new)
    if needle not in source:  # the mood case: use the declared input in the body
        source = source.replace("Reply with the sentence only.", needle)
    issues = client.post("/api/lint", json={"task": "captions", "source": source}).json()["issues"]
    hits = [i for i in issues if message in i["message"]]
    assert hits, issues
    assert hits[0]["severity"] == "error"
    assert hits[0]["line"] == line_of(source, needle)
    # The unedited template is clean.
    assert (
        client.post("/api/lint", json={"task": "captions", "source": caption_source()}).json()["issues"] == []
    )


def test_the_sandbox_stays_on(client):
    escape = caption_source().replace("Reply with the sentence only.", "{{ ''.__class__.__mro__ }}")
    data = client.post("/api/render", json={"task": "captions", "source": escape, "samples": 1}).json()
    assert "blocked by the sandbox" in data["samples"][0]["error"]
    assert data["samples"][0]["messages"] == []
    include = caption_source().replace("Reply with the sentence only.", "{% include '/etc/passwd' %}")
    data = client.post("/api/render", json={"task": "captions", "source": include, "samples": 1}).json()
    assert data["samples"] == [] and "include" in data["error"]
    assert any("include" in i["message"] for i in data["issues"])


# -- runs and comparisons --------------------------------------------------------------------------------


def test_run_gives_outputs_next_to_their_verdicts(client):
    kept = client.post("/api/run", json={"task": "captions", "source": caption_source(), "samples": 2}).json()
    assert kept["total"] == 4 and len(kept["samples"]) == 2  # 2 seeds, n=2
    for sample in kept["samples"]:
        for out in sample["outputs"]:
            assert out["accepted"] and out["reason"] is None
            assert [v["validator"] for v in out["verdicts"]] == ["heuristics", "json_schema"]
    assert kept["pass_rate"] == 1.0

    rejected = client.post(
        "/api/run", json={"task": "captions", "source": with_schema(caption_source()), "samples": 2}
    ).json()
    assert rejected["total"] == 4 and rejected["accepted"] == 0
    for sample in rejected["samples"]:
        for out in sample["outputs"]:
            assert not out["accepted"]
            assert out["reason"].startswith("json_schema:")
            assert out["verdicts"][-1] == {**out["verdicts"][-1], "validator": "json_schema", "keep": False}

    again = client.post(
        "/api/run", json={"task": "captions", "source": caption_source(), "samples": 2}
    ).json()
    assert again["sent"] == 0  # the same requests are answered from the session's answers
    assert [o["text"] for s in again["samples"] for o in s["outputs"]] == [
        o["text"] for s in kept["samples"] for o in s["outputs"]
    ]


def test_compare_runs_two_versions_on_the_same_samples(client):
    data = client.post(
        "/api/compare",
        json={
            "task": "captions",
            "a": {"task": "captions", "ref": "caption.short@1"},
            "b": {"task": "captions", "source": with_schema(caption_source())},
            "samples": 2,
        },
    ).json()
    a, b = data["a"], data["b"]
    assert [s["seed"]["id"] for s in a["samples"]] == [s["seed"]["id"] for s in b["samples"]]
    assert a["ref"] == b["ref"] == "caption.short@1" and a["hash"] != b["hash"]
    assert (a["edited"], b["edited"]) == (False, True)
    assert (a["pass_rate"], b["pass_rate"]) == (1.0, 0.0)


def test_bad_requests_say_why(client):
    r = client.post("/api/run", json={"task": "nope", "source": caption_source()})
    assert r.status_code == 400 and "no task 'nope'" in r.json()["error"]
    r = client.post("/api/run", json={"task": "captions", "source": "no front matter"})
    assert r.status_code == 400 and "front matter" in r.json()["error"]
    r = client.post("/api/run", json={"task": "captions", "source": caption_source(), "samples": 999})
    assert r.status_code == 422


def test_only_local_host_names_are_served(session):
    with TestClient(create_app(session), base_url="http://evil.example") as c:
        assert c.get("/").status_code == 400
    with TestClient(create_app(session), base_url="http://127.0.0.1:7860") as c:
        assert c.get("/").status_code == 200


# -- versions ---------------------------------------------------------------------------------------------


def test_save_shows_the_diff_first_then_writes_the_next_version(fresh):
    client = TestClient(create_app(fresh, hosts=["testserver"]))
    edited = caption_source().replace("at most 25 words", "at most 15 words")
    target = fresh.recipe.base_dir / "tmpl" / "caption.short@2.j2"

    shown = client.post(
        "/api/save", json={"task": "captions", "base_ref": "caption.short@1", "source": edited}
    ).json()
    assert shown["written"] is False and shown["ref"] == "caption.short@2"
    assert Path(shown["path"]) == target and not target.exists()  # nothing written before confirming
    assert "-version: 1\n" in shown["diff"] and "+version: 2\n" in shown["diff"]
    assert re.search(r"^\+.*at most 15 words", shown["diff"], re.M)
    assert re.search(r"^-.*at most 25 words", shown["diff"], re.M)

    saved = client.post(
        "/api/save",
        json={
            "task": "captions",
            "base_ref": "caption.short@1",
            "source": edited,
            "version": shown["version"],
        },
    ).json()
    assert saved["written"] is True and saved["note"] is None  # the recipe reads tmpl/
    on_disk = load_template(target)
    assert (on_disk.id, on_disk.version) == ("caption.short", 2)
    assert on_disk.hash == saved["hash"] != TemplateRegistry().get("caption.short@1").hash
    assert "at most 15 words" in target.read_text() and target.read_text() == saved["source"]
    # The recipe's task names `caption.short` (the latest), so it now runs version 2.
    (captions,) = [t for t in client.get("/api/tasks").json() if t["name"] == "captions"]
    assert captions["template"] == "caption.short@2" and captions["versions"] == [
        "caption.short@1",
        "caption.short@2",
    ]

    # Confirming the same diff again would overwrite nothing: the next version is now 3.
    again = client.post(
        "/api/save",
        json={"task": "captions", "base_ref": "caption.short@1", "source": edited, "version": 2},
    )
    assert again.status_code == 400 and "no longer the next version" in again.json()["error"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["caption.short@2.j2"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s, "nothing to save"),
        (lambda s: s.replace("id: caption.short", "id: caption.tiny"), "the id changed"),
        (lambda s: s.replace("{% endblock %}", "{% endif %}", 1), "has errors"),
    ],
)
def test_save_refuses_unchanged_renamed_or_broken_text(fresh, edit, message):
    base = fresh.template("caption.short@1")
    with pytest.raises(StudioError, match=message):
        propose_version(fresh, base, edit(caption_source()))
    assert not (fresh.recipe.base_dir / "tmpl" / "caption.short@2.j2").exists()


def test_a_recipe_without_template_folders_saves_beside_it_and_says_so(tmp_path, tiny_vlm):
    session = StudioSession(write_recipe(tmp_path, tiny_vlm, templates=False))
    try:
        proposal = propose_version(session, session.template("caption.short"), caption_source() + "\n")
        assert proposal.path == tmp_path / "templates" / "caption.short@2.j2"
        assert "add it under `templates:`" in proposal.note
        saved = save_version(session, proposal)
        assert saved.ref == "caption.short@2" and proposal.path.exists()
        assert session.template("caption.short").version == 2  # the studio sees it
        assert (
            session.task("captions").template.version == 1
        )  # the recipe does not, until it lists the folder
    finally:
        session.close()


def test_set_version_changes_only_the_front_matter_line():
    source = "---\nid: a.b\nversion: 3   # bumped\ninputs: {version: text}\n---\n{% block user %}version: 3{% endblock %}\n"
    out = set_version(source, 4)
    assert out == source.replace("version: 3   # bumped", "version: 4   # bumped")
    assert parse_editor_text(out).version == 4
    with pytest.raises(StudioError, match="no top-level `version:`"):
        set_version("---\nid: a.b\n---\nx\n", 2)


# -- the terminal ----------------------------------------------------------------------------------------


def test_cli_preview_prints_outputs_and_verdicts(session, capsys):
    recipe = str(session.recipe_path)
    assert main(["prompts", "preview", "caption.short", "--recipe", recipe, "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "caption.short@1 on task 'captions'" in out
    assert out.count("KEEP") == 4 and "pass rate 4/4 (100%)" in out

    assert main(["prompts", "preview", "vqa.pairs", "--recipe", recipe, "--samples", "1", "--no-run"]) == 0
    out = capsys.readouterr().out
    assert "[user] <image" in out and "Scene: " in out

    assert main(["prompts", "preview", "caption.nope", "--recipe", recipe]) == 2
    assert "unknown template 'caption.nope'" in capsys.readouterr().err


def test_cli_diff_compares_two_versions(session, tmp_path, capsys):
    v2 = tmp_path / "caption.short@2.j2"
    v2.write_text(set_version(with_schema(caption_source()), 2))
    recipe = str(session.recipe_path)
    assert main(["prompts", "diff", "caption.short@1", str(v2), "--recipe", recipe, "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "+version: 2" in out and "+output_schema: {type: object" in out
    assert "A: caption.short@1: pass rate 4/4 (100%)" in out
    assert "B: caption.short@2: pass rate 0/4 (0%)" in out
    assert out.count("REJECT") == 4 and "<- json_schema:" in out
