"""The studio judges with the run's plan: its validators (paths resolved against the recipe), built once
per session and closed with it, and the run's verdicts for the same samples."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import ClassVar

import pyarrow.parquet as pq
import pytest
from studio_helpers import LOOSE_HEURISTICS

from mmsynth.factory.cli.main import main
from mmsynth.factory.studio.preview import StudioError, StudioSession, parse_editor_text
from mmsynth.validators import VALIDATORS
from mmsynth.validators.dedup.decontam import DecontaminationConfig, DecontaminationValidator

# A sentence of caption.short's prompt: every captions record is contaminated through its prompt,
# whatever the model writes; the qa prompt shares no 13 words with it.
BENCH = (
    "Write alt text for this image: one sentence of at most 25 words. "
    "Name the main subject first, then the action or setting that matters."
)


def write_recipe(folder: Path, model: Path) -> Path:
    """A recipe whose eval set path is relative to the recipe's folder."""
    (folder / "evals").mkdir(parents=True)
    (folder / "evals" / "bench.jsonl").write_text(json.dumps({"text": BENCH}) + "\n")
    path = folder / "recipe.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: studio-plan
            seed: 3
            seeds: {{type: scenes, count: 2, image_size: 32}}
            models:
              vlm: {{backend: transformers, model: "{model}", batch_size: 4, device: cpu}}
            tasks:
              - {{name: captions, template: caption.short, model: vlm, sampling: {{max_tokens: 4}}}}
              - {{name: qa, template: vqa.pairs, model: vlm, inputs: {{scene: description}}, sampling: {{max_tokens: 4}}}}
            validators:
              - {{type: decontamination, check: [prompt], evals: [{{name: bench, path: evals/bench.jsonl, text_fields: [text]}}]}}
              - {LOOSE_HEURISTICS}
            """
        )
    )
    return path


def shard_rows(out: Path, task: str) -> list[dict]:
    return [r for f in sorted((out / "data" / task).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def verdicts_of(rows) -> dict[str, tuple]:
    return {
        r["id"]: (
            r["accepted"],
            r["reject_reason"],
            [(v["validator"], v["keep"], v["reason"]) for v in r["verdicts"]],
        )
        for r in rows
    }


def test_a_relative_eval_set_gives_the_run_s_verdicts(tmp_path, tiny_vlm, monkeypatch):
    recipe = write_recipe(tmp_path / "project", tiny_vlm)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # relative paths must resolve against the recipe, not here
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 0

    session = StudioSession(recipe)
    try:
        for task in ("captions", "qa"):
            report = session.run(task, session.task(task).template, 2)
            studio = verdicts_of(
                {
                    "id": r.id,
                    "accepted": r.accepted,
                    "reject_reason": r.reject_reason,
                    "verdicts": [vars(v) for v in r.verdicts],
                }
                for r in report.records
            )
            assert studio == verdicts_of(shard_rows(out, task))
    finally:
        session.close()
    # The eval set was read, and decides: every caption is contaminated, no qa record is.
    captions = verdicts_of(shard_rows(out, "captions")).values()
    assert len(captions) == 2
    assert all(reason.startswith("decontamination: contaminated: bench (") for _, reason, _ in captions)
    qa = verdicts_of(shard_rows(out, "qa")).values()
    assert qa and all(verdicts[0] == ("decontamination", True, None) for *_, verdicts in qa)


class CountingDecontamination(DecontaminationValidator):
    """The real validator, counting how often it is built and closed."""

    built: ClassVar[list[CountingDecontamination]] = []
    closed: ClassVar[list[CountingDecontamination]] = []

    def __init__(self, config=None) -> None:
        super().__init__(config)
        CountingDecontamination.built.append(self)

    def close(self) -> None:
        CountingDecontamination.closed.append(self)


@pytest.fixture
def counting(monkeypatch):
    monkeypatch.setitem(VALIDATORS, "decontamination", (DecontaminationConfig, CountingDecontamination))
    monkeypatch.setattr(CountingDecontamination, "built", [])
    monkeypatch.setattr(CountingDecontamination, "closed", [])
    return CountingDecontamination


def test_validators_are_built_once_per_session_and_closed_with_it(tmp_path, tiny_vlm, counting):
    session = StudioSession(write_recipe(tmp_path, tiny_vlm))
    try:
        template = session.task("captions").template
        first = session.run("captions", template, 2)
        second = session.run("captions", template, 2)
        session.render("qa", session.task("qa").template, 1)
        session.reload()  # the recipe's validators did not change: the built ones are kept
        assert len(counting.built) == 1 and counting.closed == []
        # Not remembered between previews: the second is judged as the first was, not as duplicates.
        assert [r.reject_reason for r in second.records] == [r.reject_reason for r in first.records]
    finally:
        session.close()
    assert counting.closed == counting.built
    session.close()  # a second close closes nothing twice
    assert len(counting.closed) == 1


def test_a_changed_validators_list_closes_the_old_ones(tmp_path, tiny_vlm, counting):
    recipe = write_recipe(tmp_path, tiny_vlm)
    session = StudioSession(recipe)
    try:
        recipe.write_text(recipe.read_text().replace("check: [prompt]", "check: [output, prompt]"))
        session.reload()
        assert len(counting.built) == 2 and counting.closed == counting.built[:1]
    finally:
        session.close()
    assert counting.closed == counting.built


def test_an_edit_the_run_would_refuse_is_refused_with_the_run_s_message(tmp_path, tiny_vlm):
    session = StudioSession(write_recipe(tmp_path, tiny_vlm))
    try:
        source = Path(session.task("captions").template.path).read_text()
        edited = parse_editor_text(source.replace("  image: image\n", "  image: image\n  mood: text\n"))
        with pytest.raises(
            StudioError, match="needs variable 'mood', but the scenes seeds provide no field 'mood'"
        ):
            session.render("captions", edited, 1)
    finally:
        session.close()


def test_the_page_shows_the_lint_and_the_run_s_refusal_together(tmp_path, tiny_vlm):
    from fastapi.testclient import TestClient

    from mmsynth.factory.studio.app import create_app

    session = StudioSession(write_recipe(tmp_path, tiny_vlm))
    try:
        client = TestClient(create_app(session, hosts=["testserver"]))
        source = Path(session.task("captions").template.path).read_text()
        broken = source.replace("Reply with the sentence only.", "Reply in {{ language }}.")
        data = client.post("/api/render", json={"task": "captions", "source": broken, "samples": 1}).json()
        assert any("variable 'language' is not declared" in i["message"] for i in data["issues"])
        assert data["samples"] == [] and "needs variable 'language'" in data["error"]
    finally:
        session.close()
