"""Validators: each keeps or rejects a candidate record and says why."""

from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.dedup import ExactDedupConfig, ExactDedupValidator
from mmsynth.validators.heuristics import HeuristicsConfig, HeuristicsValidator
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
from mmsynth.validators.types import Candidate, Validator, Verdict

__all__ = [
    "VALIDATORS",
    "Candidate",
    "ConfiguredValidator",
    "ExactDedupConfig",
    "ExactDedupValidator",
    "HeuristicsConfig",
    "HeuristicsValidator",
    "JsonSchemaConfig",
    "JsonSchemaValidator",
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
