from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from mmsynth.prompts.media import ImageRef
from mmsynth.validators import build_validator
from mmsynth.validators.dedup.decontam import DecontaminationValidator, NgramIndex

QUESTION = (
    "Which planet in our solar system has the largest number of confirmed moons orbiting it "
    "according to the most recent survey published by astronomers"
)
OTHER = "A farmer carries three baskets of apples across a narrow wooden bridge before sunrise every day"


def picture(seed: int, size: int = 96) -> Image.Image:
    img = Image.new("RGB", (size, size), (seed * 40 % 256, 90, 160))
    d = ImageDraw.Draw(img)
    d.rectangle([10 + seed * 7, 12, 50 + seed * 5, 60], fill=(250, 240, 20))
    d.ellipse([40, 40 + seed * 3, 90, 88], fill=(20, 20, 20))
    return img


@pytest.fixture
def jsonl_set(tmp_path):
    path = tmp_path / "bench.jsonl"
    rows = [{"question": QUESTION, "choices": ["Saturn", "Jupiter"]}, {"question": OTHER, "choices": []}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_ngram_index():
    index = NgramIndex(n=13)
    index.add(QUESTION)
    index.add("too short to have a thirteen gram")
    assert len(index) == len(QUESTION.split()) - 12
    # Case, punctuation and spacing are normalised away; n-grams are counted once.
    shouted = QUESTION.upper().replace(" the ", " the,  ") + ". " + QUESTION
    assert index.hits(shouted) == len(index)
    assert index.hits("Prefix words here " + " ".join(QUESTION.split()[:14])) == 2
    assert index.hits(OTHER) == 0
    assert NgramIndex(n=3).hits("anything at all here") == 0  # empty index


def test_contaminated_output_rejected_clean_kept(make_candidate, jsonl_set):
    v = build_validator(
        {
            "type": "decontamination",
            "evals": [{"name": "astro-qa", "path": str(jsonl_set), "text_fields": ["question"]}],
        }
    )
    leaked = make_candidate("Sure! Question: " + QUESTION.lower() + "? Answer: Saturn.", id="a")
    clean = make_candidate("A brown dog runs across a sunny park chasing a red ball near the lake", id="b")
    v_leaked, v_clean = v.check([leaked, clean])
    n = len(QUESTION.split()) - 12
    assert v_leaked.reason == f"contaminated: astro-qa ({n} shared 13-grams)"
    assert v_leaked.validator == "decontamination" and v_leaked.score == n
    assert v_clean.keep


def test_prompt_checked_unless_configured_away(make_candidate, jsonl_set):
    spec = {"name": "astro-qa", "path": str(jsonl_set), "text_fields": ["question"]}
    c = make_candidate("Saturn.", prompt_text="Answer briefly. " + QUESTION, id="a")
    assert not build_validator({"type": "decontamination", "evals": [spec]}).check([c])[0].keep
    only_output = build_validator({"type": "decontamination", "evals": [spec], "check": ["output"]})
    assert only_output.check([c])[0].keep


def test_min_hits_and_ngram_length(make_candidate, jsonl_set):
    spec = {"name": "astro-qa", "path": str(jsonl_set), "text_fields": ["question"]}
    partial = make_candidate(" ".join(QUESTION.split()[:15]), id="a")  # 3 shared 13-grams
    assert (
        not build_validator({"type": "decontamination", "evals": [spec], "min_hits": 3})
        .check([partial])[0]
        .keep
    )
    assert (
        build_validator({"type": "decontamination", "evals": [spec], "min_hits": 4}).check([partial])[0].keep
    )
    eight = build_validator({"type": "decontamination", "evals": [spec], "ngram": 8})
    assert eight.check([make_candidate(" ".join(OTHER.split()[2:11]), id="b")])[0].reason == (
        "contaminated: astro-qa (2 shared 8-grams)"
    )


def test_parquet_and_save_to_disk_sets_with_images(make_candidate, tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"question": [QUESTION, OTHER], "image": [picture(1), picture(2)]},
        features=datasets.Features({"question": datasets.Value("string"), "image": datasets.Image()}),
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "test-00000.parquet"))
    for path in (tmp_path / "saved", tmp_path / "pq", tmp_path / "pq" / "test-00000.parquet"):
        v = build_validator(
            {
                "type": "decontamination",
                "evals": [
                    {
                        "name": "vqa-bench",
                        "path": str(path),
                        "text_fields": ["question"],
                        "image_field": "image",
                    }
                ],
            }
        )
        assert isinstance(v, DecontaminationValidator) and len(v.sets[0].phashes) == 2
        same_image_resized = ImageRef.from_pil(picture(2).resize((64, 64)))
        fresh_image = ImageRef.from_pil(picture(5).transpose(Image.Transpose.ROTATE_90))
        v_img, v_fresh, v_text = v.check(
            [
                make_candidate("A caption of my own", images=(same_image_resized,), id="a"),
                make_candidate("A caption of my own", images=(fresh_image,), id="b"),
                make_candidate(OTHER, id="c"),
            ]
        )
        assert v_img.reason is not None and v_img.reason.startswith(
            "contaminated: vqa-bench (image pHash distance "
        )
        assert v_fresh.keep, path
        assert v_text.reason == "contaminated: vqa-bench (4 shared 13-grams)"


def test_the_set_with_most_hits_is_named(make_candidate, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"q": " ".join(QUESTION.split()[:14])}) + "\n")
    b.write_text(json.dumps({"q": QUESTION}) + "\n")
    v = build_validator(
        {
            "type": "decontamination",
            "evals": [
                {"name": "small", "path": str(a), "text_fields": ["q"]},
                {"name": "full", "path": str(b), "text_fields": ["q"]},
            ],
        }
    )
    assert v.check([make_candidate(QUESTION, id="x")])[0].reason.startswith("contaminated: full (")


def test_no_eval_sets_keeps_everything(make_candidate):
    v = build_validator({"type": "decontamination"})
    assert v.check([make_candidate(QUESTION)])[0].keep and not v.stateful


def test_config_errors(tmp_path, jsonl_set):
    with pytest.raises(ValidationError, match="give `text_fields`, `image_field` or both"):
        build_validator({"type": "decontamination", "evals": [{"name": "x", "path": str(jsonl_set)}]})
    with pytest.raises(ValidationError, match="eval set names must be distinct"):
        spec = {"name": "x", "path": str(jsonl_set), "text_fields": ["question"]}
        build_validator({"type": "decontamination", "evals": [spec, spec]})
    with pytest.raises(ValidationError, match="Extra inputs"):
        build_validator({"type": "decontamination", "evals": [{"name": "x", "path": "p", "fields": ["q"]}]})
    with pytest.raises(ValueError, match=r"cannot read eval set 'gone' at .*: no such file or folder"):
        build_validator(
            {
                "type": "decontamination",
                "evals": [{"name": "gone", "path": str(tmp_path / "nope.jsonl"), "text_fields": ["q"]}],
            }
        )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "fine"}\n{oops\n')
    with pytest.raises(ValueError, match=r"cannot read eval set 'bad' .*bad.jsonl:2: invalid JSON"):
        build_validator(
            {"type": "decontamination", "evals": [{"name": "bad", "path": str(bad), "text_fields": ["q"]}]}
        )
