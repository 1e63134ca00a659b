"""The validator registry: type name -> (config model, factory), and building validators from specs.

A new validator is a module with a config (subclass of ValidatorConfig with a Literal `type`) and a
class, plus one entry here. Nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mmsynth.prompts.names import did_you_mean
from mmsynth.validators.base import ValidatorConfig
from mmsynth.validators.dedup.decontam import DecontaminationConfig, DecontaminationValidator
from mmsynth.validators.dedup.exact import ExactDedupConfig, ExactDedupValidator
from mmsynth.validators.dedup.images import ImageDedupConfig, ImageDedupValidator
from mmsynth.validators.dedup.minhash import MinHashDedupConfig, MinHashDedupValidator
from mmsynth.validators.dedup.semantic import SemanticDedupConfig, SemanticDedupValidator
from mmsynth.validators.grounding.scene import (
    AnswerConsistencyConfig,
    AnswerConsistencyValidator,
    QuestionDiversityConfig,
    QuestionDiversityValidator,
    SceneGroundingConfig,
    SceneGroundingValidator,
)
from mmsynth.validators.image.checks import ImageChecksConfig, ImageChecksValidator
from mmsynth.validators.image.clip import ClipScoreConfig, ClipScoreValidator
from mmsynth.validators.image.ocr import OcrTextConfig, OcrTextValidator
from mmsynth.validators.judge.llm import LLMJudgeConfig, LLMJudgeValidator
from mmsynth.validators.text.consistency import CaptionConsistencyConfig, CaptionConsistencyValidator
from mmsynth.validators.text.heuristics import HeuristicsConfig, HeuristicsValidator
from mmsynth.validators.text.schema import JsonSchemaConfig, JsonSchemaValidator
from mmsynth.validators.text.structure import StructureConfig, StructureValidator
from mmsynth.validators.types import Validator

ValidatorFactory = Callable[[Any], Validator]

VALIDATORS: dict[str, tuple[type[ValidatorConfig], ValidatorFactory]] = {
    "json_schema": (JsonSchemaConfig, JsonSchemaValidator),
    "heuristics": (HeuristicsConfig, HeuristicsValidator),
    "exact_dedup": (ExactDedupConfig, ExactDedupValidator),
    "caption_consistency": (CaptionConsistencyConfig, CaptionConsistencyValidator),
    "structure": (StructureConfig, StructureValidator),
    "scene_grounding": (SceneGroundingConfig, SceneGroundingValidator),
    "answer_consistency": (AnswerConsistencyConfig, AnswerConsistencyValidator),
    "question_diversity": (QuestionDiversityConfig, QuestionDiversityValidator),
    "llm_judge": (LLMJudgeConfig, LLMJudgeValidator),
    "image_checks": (ImageChecksConfig, ImageChecksValidator),
    "image_dedup": (ImageDedupConfig, ImageDedupValidator),
    "ocr_text": (OcrTextConfig, OcrTextValidator),
    "clip_score": (ClipScoreConfig, ClipScoreValidator),
    "minhash_dedup": (MinHashDedupConfig, MinHashDedupValidator),
    "semantic_dedup": (SemanticDedupConfig, SemanticDedupValidator),
    "decontamination": (DecontaminationConfig, DecontaminationValidator),
}


def known_validators() -> list[str]:
    """Registered type names, sorted."""
    return sorted(VALIDATORS)


def validator_config_model(type_name: str) -> type[ValidatorConfig]:
    """The pydantic model a spec of this type must satisfy; ValueError (with a suggestion) if unknown."""
    try:
        return VALIDATORS[type_name][0]
    except KeyError:
        raise ValueError(_unknown(type_name)) from None


def parse_validator_config(spec: Mapping[str, Any]) -> ValidatorConfig:
    """Validate a spec mapping into its config; ValueError for a missing/unknown type, pydantic's
    ValidationError (also a ValueError) for bad fields."""
    type_name = spec.get("type")
    if not isinstance(type_name, str):
        raise ValueError(
            f"a validator spec needs a 'type' (one of: {', '.join(known_validators())}); got {spec!r}"
        )
    return validator_config_model(type_name).model_validate(dict(spec))


def build_validator(spec: Mapping[str, Any] | ValidatorConfig) -> Validator:
    """A validator from a spec like {"type": "heuristics", "min_chars": 5} or from an already-validated config."""
    config = spec if isinstance(spec, ValidatorConfig) else parse_validator_config(spec)
    if config.type not in VALIDATORS:
        raise ValueError(_unknown(config.type))
    return VALIDATORS[config.type][1](config)


def build_validators(specs: Sequence[Mapping[str, Any] | ValidatorConfig]) -> list[Validator]:
    """Validators for a stack, in order; ValueError when two share a name (stats would mix them)."""
    validators = [build_validator(s) for s in specs]
    seen: set[str] = set()
    for v in validators:
        if v.name in seen:
            raise ValueError(f"two validators are named {v.name!r}; give one of them a distinct `name`")
        seen.add(v.name)
    return validators


def _unknown(type_name: str) -> str:
    return f"unknown validator type {type_name!r} (known: {', '.join(known_validators())}).{did_you_mean(type_name, VALIDATORS)}"
