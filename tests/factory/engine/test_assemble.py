"""Record assembly (`assemble_records`): a backend's answer to one (seed, task) becomes its records.

Fast: no model is loaded; the answers are Generation values written here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from mmsynth.factory.dataset.records import record_id
from mmsynth.factory.engine.answers import assemble_records
from mmsynth.factory.engine.plan import TaskPlan, build_request
from mmsynth.factory.engine.stats import ChunkStats
from mmsynth.factory.seeds.base import Seed
from mmsynth.generators.types import Generation, Output
from mmsynth.prompts.messages import stable_hash
from mmsynth.prompts.registry import TemplateRegistry

STAMP = 1_700_000_000.5  # when the answer was cached: every record of it carries this time


@dataclass
class Model:
    """What a record takes from its backend: the identity that goes into lineage and request keys."""

    name: str = "transformers"
    model: str = "tiny:vlm"
    revision: str = "local-0123456789abcdef"


@pytest.fixture(scope="module")
def templates():
    return TemplateRegistry()


def task(templates, ref: str, name: str, n: int = 1) -> TaskPlan:
    t = templates.get(ref)
    return TaskPlan(name, t, "vlm", n, {"temperature": 0.8, "max_tokens": 24}, {"image": "image"}, Model())


@pytest.fixture
def seed(red):
    return Seed("seed-7", 7, {"image": red, "description": "a red square"})


def test_one_record_per_output_with_ids_tokens_and_lineage(templates, seed):
    captions = task(templates, "caption.short", "captions", n=3)
    prompt, request = build_request(captions, seed.fields, seed.id, run_seed=0)
    gen = Generation(
        (Output("a red square", "stop"), Output("red", "length"), Output("square", "stop")),
        prompt_tokens=11,
        completion_tokens=8,
    )
    stats = ChunkStats()
    records = assemble_records(seed, captions, request, (gen, STAMP), None, stats)

    assert [r.id for r in records] == [record_id(request.key, i) for i in range(3)]
    assert len({r.id for r in records}) == 3
    assert [(r.output, r.finish_reason, r.sample_index) for r in records] == [
        ("a red square", "stop", 0),
        ("red", "length", 1),
        ("square", "stop", 2),
    ]
    # The prompt is counted once; completion tokens are shared out, the remainder to the first outputs.
    assert [(r.prompt_tokens, r.completion_tokens) for r in records] == [(11, 3), (0, 3), (0, 2)]
    assert (stats.prompt_tokens, stats.completion_tokens, stats.requests_failed) == (11, 8, 0)
    first = records[0]
    assert first.request_key == request.key and first.sample_seed == request.sampling.seed
    assert first.sampling == request.sampling.to_dict()
    assert first.images == prompt.images and len(first.images) == 1
    assert first.seed == {"description": "a red square"}  # images stay out of the seed column
    assert (first.seed_id, first.seed_index, first.task) == ("seed-7", 7, "captions")
    assert (first.template_id, first.template_version, first.template_hash) == (
        "caption.short",
        1,
        captions.template.hash,
    )
    assert (first.model, first.model_revision, first.backend) == (
        "tiny:vlm",
        "local-0123456789abcdef",
        "transformers",
    )
    assert first.created_at == datetime.fromtimestamp(STAMP, timezone.utc).isoformat()
    assert "<image>" in first.prompt and first.system
    assert all(r.accepted and r.error is None for r in records)  # no verdicts yet


def test_a_failed_generation_is_one_rejected_record_with_the_backend_reason(templates, seed):
    captions = task(templates, "caption.short", "captions", n=2)
    _, request = build_request(captions, seed.fields, seed.id, run_seed=0)
    stats = ChunkStats()
    failed = Generation.failed("prompt of 900 tokens + max_tokens 24 exceeds the context length 512")
    [record] = assemble_records(seed, captions, request, (failed, STAMP), None, stats)
    assert record.id == record_id(request.key, 0) and record.request_key == request.key
    assert not record.accepted and record.finish_reason == "error"
    assert (
        record.reject_reason == "backend: prompt of 900 tokens + max_tokens 24 exceeds the context length 512"
    )
    assert stats.requests_failed == 1


def test_no_request_is_one_rejected_record_named_by_seed_and_task(templates, seed):
    captions = task(templates, "caption.short", "captions")
    stats = ChunkStats()
    [record] = assemble_records(seed, captions, None, None, "render: 'image' is undefined", stats)
    assert record.id == record_id(stable_hash(["no-request", seed.id, "captions"]), 0)
    assert record.reject_reason == "render: 'image' is undefined" and record.request_key == ""
    assert record.images == (seed.fields["image"],)  # the seed's image, so a viewer can show what failed
    assert (stats.prompt_tokens, stats.requests_failed) == (0, 0)
    other = assemble_records(seed, task(templates, "caption.short", "alt"), None, None, None, stats)[0]
    assert other.id != record.id and other.reject_reason == "no request"


def test_structured_outputs_are_parsed_or_say_why_not(templates, seed):
    qa = task(templates, "vqa.pairs", "qa", n=2)
    _, request = build_request(qa, seed.fields, seed.id, run_seed=0)
    good = {"pairs": [{"question": "What colour?", "answer": "red", "type": "colour"}]}
    gen = Generation((Output(json.dumps(good), "stop"), Output('{"pairs": [', "length")))
    ok, cut = assemble_records(seed, qa, request, (gen, STAMP), None, ChunkStats())
    assert ok.parsed == good and ok.parse_error is None
    assert cut.parsed is None and cut.parse_error
    assert ok.output_schema == qa.template.output_schema is not None


def test_a_generated_image_is_the_records_image(templates, seed, blue):
    captions = task(templates, "caption.short", "images")
    _, request = build_request(captions, seed.fields, seed.id, run_seed=0)
    params = {"seed": 5, "steps": 2, "width": 8, "height": 6}
    gen = Generation((Output("a blue square", "stop", image=blue, params=params),))
    [record] = assemble_records(seed, captions, request, (gen, STAMP), None, ChunkStats())
    assert record.images == (blue,) and record.generation == params
    assert record.output == "a blue square"
