"""Validators: each keeps or rejects a candidate record and says why."""

from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.dedup.exact import ExactDedupConfig, ExactDedupValidator
from mmsynth.validators.dedup.images import ImageDedupConfig, ImageDedupValidator
from mmsynth.validators.grounding.scene import (
    AnswerConsistencyValidator,
    QuestionDiversityValidator,
    SceneGroundingValidator,
)
from mmsynth.validators.image.checks import ImageChecksConfig, ImageChecksValidator
from mmsynth.validators.image.clip import ClipScoreConfig, ClipScoreValidator
from mmsynth.validators.image.ocr import OcrTextConfig, OcrTextValidator
from mmsynth.validators.judge.llm import LLMJudgeConfig, LLMJudgeValidator
from mmsynth.validators.registry import (
    VALIDATORS,
    build_validator,
    build_validators,
    known_validators,
    parse_validator_config,
    validator_config_model,
)
from mmsynth.validators.stack import remember_accepted, run_stack
from mmsynth.validators.stats import RECORD_REASON_FIELDS, ValidatorStats, reason_key, tally
from mmsynth.validators.text.consistency import CaptionConsistencyConfig, CaptionConsistencyValidator
from mmsynth.validators.text.heuristics import HeuristicsConfig, HeuristicsValidator
from mmsynth.validators.text.schema import JsonSchemaConfig, JsonSchemaValidator, parse_json_output
from mmsynth.validators.text.structure import StructureValidator
from mmsynth.validators.types import Candidate, Validator, Verdict

__all__ = [
    "RECORD_REASON_FIELDS",
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
