from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from mmsynth.validators import (
    VALIDATORS,
    ExactDedupValidator,
    HeuristicsValidator,
    Validator,
    build_validator,
    build_validators,
    known_validators,
    validator_config_model,
)

# Settings a validator cannot be built without (everything else has a default).
NEEDED = {"llm_judge": {"model": {"backend": "transformers", "model": "tiny:lm"}}}


def minimal(type_name: str) -> dict:
    return {"type": type_name, **NEEDED.get(type_name, {})}


def test_known_validators():
    assert known_validators() == sorted(VALIDATORS)
    assert {
        "exact_dedup",
        "heuristics",
        "json_schema",
        "structure",
        "scene_grounding",
        "answer_consistency",
        "question_diversity",
        "llm_judge",
    } <= set(known_validators())


@pytest.mark.parametrize("type_name", sorted(VALIDATORS))
def test_registry_key_matches_config_type(type_name):
    model = validator_config_model(type_name)
    assert model.model_fields["type"].default == type_name
    v = build_validator(minimal(type_name))
    assert isinstance(v, Validator)
    assert v.name == type_name and v.applies_to("anything")


@pytest.mark.parametrize("type_name", sorted(VALIDATORS))
def test_every_config_field_is_described_and_has_a_default(type_name):
    model = validator_config_model(type_name)
    for field_name, info in model.model_fields.items():
        assert info.description, f"{type_name}.{field_name} has no description"
        assert not info.is_required(), f"{type_name}.{field_name} has no default"
    assert model.model_config.get("extra") == "forbid"


def test_build_from_spec():
    v = build_validator({"type": "heuristics", "min_chars": 5, "tasks": ["captions"]})
    assert isinstance(v, HeuristicsValidator)
    assert v.config.min_chars == 5
    assert v.applies_to("captions") and not v.applies_to("vqa")


def test_build_from_config_model():
    config = validator_config_model("exact_dedup").model_validate(
        {"type": "exact_dedup", "key": "text+image"}
    )
    assert isinstance(build_validator(config), ExactDedupValidator)


def test_unknown_type_suggests_a_name():
    with pytest.raises(
        ValueError, match=r"unknown validator type 'heuristic' \(known: .*\)\. Did you mean 'heuristics'\?"
    ):
        build_validator({"type": "heuristic"})
    with pytest.raises(ValueError, match=r"Did you mean 'exact_dedup'"):
        validator_config_model("exact_dedupe")
    with pytest.raises(
        ValueError, match=r"unknown validator type 'zzz' \(known: .*exact_dedup, heuristics, .*json_schema"
    ):
        build_validator({"type": "zzz"})


def test_missing_type():
    with pytest.raises(ValueError, match="needs a 'type'"):
        build_validator({"min_chars": 3})


def test_extra_key_rejected_by_pydantic():
    with pytest.raises(ValidationError) as info:
        build_validator({"type": "heuristics", "min_char": 5})
    assert info.value.errors()[0]["type"] == "extra_forbidden"
    assert info.value.errors()[0]["loc"] == ("min_char",)


def test_bad_value_rejected_by_pydantic():
    with pytest.raises(ValidationError):
        build_validator({"type": "exact_dedup", "key": "image"})
    with pytest.raises(ValidationError):
        build_validator({"type": "heuristics", "tasks": []})


def test_config_model_is_a_pydantic_model_the_loader_can_use():
    model = validator_config_model("heuristics")
    assert issubclass(model, BaseModel)
    assert "min_chars" in model.model_json_schema()["properties"]


def test_names_tell_instances_apart():
    a, b = build_validators(
        [
            {"type": "heuristics", "tasks": ["captions"]},
            {"type": "heuristics", "name": "strict", "min_words": 8},
        ]
    )
    assert (a.name, b.name) == ("heuristics", "strict")
    with pytest.raises(ValueError, match="two validators are named 'heuristics'"):
        build_validators([{"type": "heuristics"}, {"type": "heuristics", "max_chars": 10}])


def test_only_dedup_is_stateful():
    stateful = {t: build_validator(minimal(t)).stateful for t in VALIDATORS}
    dedups = {"exact_dedup", "minhash_dedup", "semantic_dedup", "image_dedup"}
    assert {t for t, s in stateful.items() if s} == dedups & set(VALIDATORS)
    assert stateful["exact_dedup"]
    assert not any(
        stateful[t]
        for t in (
            "heuristics",
            "json_schema",
            "structure",
            "scene_grounding",
            "answer_consistency",
            "question_diversity",
            "llm_judge",
            "image_checks",
            "ocr_text",
            "clip_score",
            "caption_consistency",
        )
    )
