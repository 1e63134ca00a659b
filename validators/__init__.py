"""Validators: each keeps or rejects a candidate record and says why."""

from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.clip_alignment import ClipScoreConfig, ClipScoreValidator
from mmsynth.validators.consistency import CaptionConsistencyConfig, CaptionConsistencyValidator
from mmsynth.validators.dedup import ExactDedupConfig, ExactDedupValidator
from mmsynth.validators.grounding import (
    AnswerConsistencyValidator,
    QuestionDiversityValidator,
    SceneGroundingValidator,
)
from mmsynth.validators.heuristics import HeuristicsConfig, HeuristicsValidator
from mmsynth.validators.image_checks import ImageChecksConfig, ImageChecksValidator
from mmsynth.validators.image_dedup import ImageDedupConfig, ImageDedupValidator
from mmsynth.validators.judge import LLMJudgeConfig, LLMJudgeValidator
from mmsynth.validators.ocr_check import OcrTextConfig, OcrTextValidator
from mmsynth.validators.registry import (
    VALIDATORS,
    build_validator,
    build_validators,
    known_validators,
    parse_validator_config,
    validator_config_model,
)
from mmsynth.validators.schema import JsonSchemaConfig, JsonSchemaValidator, parse_json_output
from mmsynth.validators.stack import applies, remember_accepted, run_stack
from mmsynth.validators.stats import ValidatorStats, reason_key, tally
from mmsynth.validators.structure import StructureValidator
from mmsynth.validators.types import Candidate, Validator, Verdict

__all__ = [
    "VALIDATORS",
    "AnswerConsistencyValidator",
    "Candidate",
    "CaptionConsistencyConfig",
    "CaptionConsistencyValidator",
    "ClipScoreConfig",
    "ClipScoreValidator",
    "ConfiguredValidator",
    "ExactDedupConfig",
    "ExactDedupValidator",
    "HeuristicsConfig",
    "HeuristicsValidator",
    "ImageChecksConfig",
    "ImageChecksValidator",
    "ImageDedupConfig",
    "ImageDedupValidator",
    "JsonSchemaConfig",
    "JsonSchemaValidator",
    "LLMJudgeConfig",
    "LLMJudgeValidator",
    "OcrTextConfig",
    "OcrTextValidator",
    "QuestionDiversityValidator",
    "SceneGroundingValidator",
    "StructureValidator",
    "Validator",
    "ValidatorConfig",
    "ValidatorStats",
    "Verdict",
    "applies",
    "build_validator",
    "build_validators",
    "known_validators",
    "parse_json_output",
    "parse_validator_config",
    "reason_key",
    "remember_accepted",
    "run_stack",
    "tally",
    "validator_config_model",
]
