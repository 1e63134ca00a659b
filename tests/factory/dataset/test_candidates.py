"""One candidate builder: what validators see of a record is the same live and read back from its row."""

from __future__ import annotations

import json

import pytest

from mmsynth.factory.dataset.records import Record, candidate_from_row
from mmsynth.prompts.media import ImageRef
from mmsynth.validators import parse_json_output

SCHEMA = {"type": "object", "properties": {"caption": {"type": "string"}}, "required": ["caption"]}


def png(colour: str) -> ImageRef:
    from PIL import Image

    return ImageRef.from_pil(Image.new("RGB", (8, 8), colour), source=colour)


def record(**kw) -> Record:
    base = dict(
        id="r1", task="captions", seed_id="s0", seed_index=0, seed={"description": "a red square"},
        images=(png("red"),), system="", prompt="<image>Describe it.", output='{"caption": "red"}',
        parsed={"caption": "red"}, parse_error=None, finish_reason="stop", prompt_tokens=1,
        completion_tokens=1, template_id="t", template_version=1, template_hash="h", model="m",
        model_revision="r", backend="b", sampling={}, sample_seed=1, sample_index=0, request_key="k",
        created_at="now", output_schema=SCHEMA,
    )  # fmt: skip
    return Record(**{**base, **kw})


def comparable(c):
    return {**vars(c), "images": [(i.sha256, i.data) for i in c.images]}


@pytest.mark.parametrize(
    "rec",
    [
        record(),
        # As a run makes it: the output did not parse (the row keeps no parse error; it is found again).
        record(id="r2", output="not json", parsed=None, parse_error=parse_json_output("not json")[1]),
        # An interleaved document: texts and images aligned, one of the two None at each.
        record(
            id="d1",
            task="docs",
            images=(),
            output="",
            parsed={"title": "Shapes"},
            output_schema=None,
            texts=["Intro", None, "Outro"],
            doc_images=[None, png("blue"), None],
        ),
    ],
    ids=["structured", "unparsable", "document"],
)
def test_a_record_and_its_row_give_the_same_candidate(rec):
    again = candidate_from_row(rec.to_row(), output_schema=rec.output_schema, replay=False)
    assert comparable(again) == comparable(rec.candidate())


def test_a_document_shows_its_texts_and_image_hashes():
    doc = record(
        id="d1", task="docs", images=(), output="", parsed={"title": "Shapes"},
        texts=["Intro", None], doc_images=[None, png("blue")],
    )  # fmt: skip
    c = doc.candidate()
    assert c.parsed == {"title": "Shapes", "texts": ["Intro", None], "images": [None, png("blue").sha256]}
    assert [i.sha256 for i in c.images] == [png("blue").sha256]


def test_replay_keeps_every_image_hash_and_the_first_image_s_bytes():
    two = record(images=(png("red"), png("green")))
    row = two.to_row()
    replayed = candidate_from_row(row)  # the resume path: hashes for remember(), bytes where stored
    assert [i.sha256 for i in replayed.images] == [png("red").sha256, png("green").sha256]
    assert [i.data for i in replayed.images] == [png("red").data, b""]
    checked = candidate_from_row(row, replay=False)  # checked again: only what can be decoded
    assert [i.sha256 for i in checked.images] == [png("red").sha256]
    assert json.loads(row["seed"]) == checked.seed == {"description": "a red square"}
