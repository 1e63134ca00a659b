"""Stages, documents and mixtures, piece by piece: derived seeds, the document assembler, seed shares."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mmsynth.factory.dataset.records import Record
from mmsynth.factory.engine.documents import assemble_documents
from mmsynth.factory.engine.plan import TaskPlan
from mmsynth.factory.engine.stages import derived_seeds, mixture_task
from mmsynth.factory.errors import RecipeError
from mmsynth.factory.recipe import DocumentSpec, load_recipe
from mmsynth.factory.seeds.base import Seed
from mmsynth.prompts.media import ImageRef
from mmsynth.validators.types import Verdict


def rec(id: str, task: str, *, seed: dict | None = None, parsed=None, output="", images=(), ok=True, **kw):
    return Record(
        id=id,
        task=task,
        seed_id="s0",
        seed_index=0,
        seed=seed or {},
        images=tuple(images),
        system="",
        prompt="",
        output=output,
        parsed=parsed,
        parse_error=None,
        finish_reason="stop",
        prompt_tokens=0,
        completion_tokens=0,
        template_id="t",
        template_version=1,
        template_hash="h",
        model="m",
        model_revision="r",
        backend="b",
        sampling={},
        sample_seed=1,
        sample_index=0,
        request_key="k",
        created_at="now",
        verdicts=[Verdict.ok("v") if ok else Verdict.reject("v", f"bad {id}")],
        **kw,
    )


def task(name="t", **kw) -> TaskPlan:
    return TaskPlan(name, template=None, model_name="m", n=1, sampling={}, inputs={}, **kw)


IMG = ImageRef.from_bytes(b"\x89PNG fake", source="test")
PLAN = {
    "title": "Bees",
    "segments": [
        {"type": "text", "text": "Bees make honey."},
        {"type": "image", "description": "a bee on a flower"},
        {"type": "text", "text": "They store it in combs."},
        {"type": "image", "description": "a honeycomb"},
    ],
}


# --- derived seeds ---------------------------------------------------------------------------------


def test_a_derived_seed_keeps_the_root_fields_and_adds_the_parent():
    root = Seed("s0", 3, {"topic": "bees", "image": IMG})
    parent = rec("p1", "plan", parsed={"title": "Bees"}, output='{"title": "Bees"}')
    (s,) = derived_seeds(task(source="plan"), parent, root)
    assert s.id == "p1" and s.index == 3
    assert s.fields["topic"] == "bees" and s.fields["title"] == "Bees"
    assert s.fields["output"] == parent.output and s.fields["parent_id"] == "p1"
    assert s.fields["image"] is IMG  # the parent made no image: the one it read carries on


def test_a_generated_image_replaces_the_read_one():
    made = ImageRef.from_bytes(b"\x89PNG made")
    (s,) = derived_seeds(
        task(source="images"), rec("i1", "images", images=[made]), Seed("s0", 0, {"image": IMG})
    )
    assert s.fields["image"] is made


def test_for_each_fans_out_over_the_filtered_items():
    parent = rec("p1", "plan", parsed=PLAN)
    seeds = derived_seeds(
        task(source="plan", for_each="segments", where={"type": "image"}), parent, Seed("s0", 0, {})
    )
    assert [s.id for s in seeds] == ["p1/1", "p1/3"]
    assert [s.fields["description"] for s in seeds] == ["a bee on a flower", "a honeycomb"]
    assert all(s.fields["item_of"] == "p1" for s in seeds)
    assert [s.fields["item_index"] for s in seeds] == [1, 3]


@pytest.mark.parametrize("parsed", [None, {"segments": "not a list"}, {"other": []}])
def test_for_each_over_nothing_gives_no_seeds(parsed):
    t = task(source="plan", for_each="segments")
    assert derived_seeds(t, rec("p1", "plan", parsed=parsed), Seed("s0", 0, {})) == []


# --- documents -------------------------------------------------------------------------------------


def slot_records(plan_id: str, i: int, *, image_ok=True, caption_ok=True):
    image = rec(f"img{i}", "images", seed={"item_of": plan_id, "item_index": i}, images=[IMG], ok=image_ok)
    caption = rec(f"cap{i}", "captions", output=f"caption {i}", ok=caption_ok, parent_id=image.id)
    return [image, caption]


SPEC = DocumentSpec(name="documents", plan="plan", images="images", captions="captions")


def test_a_document_aligns_texts_and_images_in_plan_order():
    records = [rec("p1", "plan", parsed=PLAN), *slot_records("p1", 1), *slot_records("p1", 3)]
    (doc,) = assemble_documents(SPEC, records)
    assert doc.error is None and doc.task == "documents" and doc.parent_id == "p1"
    assert doc.texts == ["Bees make honey.", None, "They store it in combs.", None]
    assert [img is not None for img in doc.doc_images] == [False, True, False, True]
    assert doc.parsed == {"title": "Bees", "alt_texts": ["caption 1", "caption 3"]}
    assert doc.output.count("<image>") == 2
    view = doc.candidate().parsed
    assert view["images"] == [None, IMG.sha256, None, IMG.sha256]


def test_a_rejected_caption_rejects_the_document_and_says_which_slot():
    records = [
        rec("p1", "plan", parsed=PLAN),
        *slot_records("p1", 1),
        *slot_records("p1", 3, caption_ok=False),
    ]
    (doc,) = assemble_documents(SPEC, records)
    assert not doc.accepted
    assert doc.error == "slot 3: caption rejected (v: bad cap3)"


def test_a_slot_whose_prompt_was_rejected_names_that_stage():
    prompt = rec("pr1", "image_prompts", seed={"item_of": "p1", "item_index": 1}, ok=False)
    records = [rec("p1", "plan", parsed=PLAN), prompt, *slot_records("p1", 3)]
    (doc,) = assemble_documents(SPEC, records)
    assert doc.error == "slot 1: image_prompts rejected (v: bad pr1)"


def test_rejected_plans_make_no_document():
    assert assemble_documents(SPEC, [rec("p1", "plan", parsed=PLAN, ok=False)]) == []


def test_a_document_row_has_the_obelics_columns():
    records = [rec("p1", "plan", parsed=PLAN), *slot_records("p1", 1), *slot_records("p1", 3)]
    row = assemble_documents(SPEC, records)[0].to_row()
    assert len(row["texts"]) == len(row["images"]) == 4
    assert row["images"][0] is None and row["images"][1]["bytes"] == IMG.data
    assert row["image"] is None  # a document's images live in `images`, not in the single-image column


# --- mixtures --------------------------------------------------------------------------------------


def test_mixture_shares_are_met_from_the_first_seeds_on():
    shares = {"captions": 45, "documents": 45, "text": 10}
    for n in (20, 100, 1000):
        counts = Counter(mixture_task(i, shares) for i in range(n))
        for name, share in shares.items():
            assert abs(counts[name] - n * share / 100) <= 2, (n, counts)


def test_mixture_assignment_depends_only_on_the_index():
    shares = {"a": 1, "b": 3}
    assert [mixture_task(i, shares) for i in range(50)] == [mixture_task(i, dict(shares)) for i in range(50)]


# --- recipe checks ---------------------------------------------------------------------------------

BASE = """\
name: p
seeds: {type: scenes, count: 2}
models: {m: {backend: transformers, model: tiny:vlm}}
tasks:
  - {name: a, template: caption.short, model: m}
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  - {name: b, template: caption.short, model: m, from: zz}\n", "not an earlier task"),
        ("  - {name: b, template: caption.short, model: m, for_each: segments}\n", "need `from`"),
        ("documents: [{name: d, plan: a, images: nope}]\n", "unknown task 'nope'"),
        ("documents: [{name: a, plan: a, images: a}]\n", "already a task name"),
        ("mixture: {zz: 1}\n", "not a task that reads the seeds"),
    ],
)
def test_pipeline_mistakes_are_refused_at_their_line(tmp_path: Path, extra: str, message: str):
    path = tmp_path / "r.yaml"
    path.write_text(BASE + extra)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert message in str(e.value) and "r.yaml:" in str(e.value)


def test_validator_paths_resolve_against_the_recipe_folder(tmp_path: Path, monkeypatch):
    from mmsynth.factory.engine.plan import build_plan

    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "bench.jsonl").write_text(
        '{"question": "what colour is the big square in the middle"}\n'
    )
    (tmp_path / "r.yaml").write_text(
        BASE
        + "validators:\n"
        + "  - {type: decontamination, ngram: 4, evals: [{name: bench, path: evals/bench.jsonl, text_fields: [question]}]}\n"
    )
    monkeypatch.chdir(tmp_path.parent)  # the working directory is elsewhere: the recipe's folder must win
    (v,) = build_plan(load_recipe(tmp_path / "r.yaml")).validators
    from mmsynth.validators.types import Candidate

    dirty, clean = v.check(
        [
            Candidate("a", "a", "so what colour is the big square in the middle?", "stop"),
            Candidate("b", "a", "a small red circle at the top", "stop"),
        ]
    )
    assert not dirty.keep and dirty.reason.startswith("contaminated: bench") and clean.keep
