"""Validators: each keeps or rejects a candidate record and says why."""

from mmsynth.validators.types import Candidate, Validator, Verdict

__all__ = ["Candidate", "Validator", "Verdict"]
