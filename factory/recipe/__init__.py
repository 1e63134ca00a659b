"""Recipes: the YAML file that says what a run makes, loaded into typed, checked config objects.

`schema` holds the pydantic models, `load` reads a file (line and column marks, duplicate keys),
`messages` turns pydantic's errors into `file:line:col` problems, `checks` cross-checks the parts.
"""

from mmsynth.factory.recipe.checks import check_references
from mmsynth.factory.recipe.load import load_recipe, read_recipe
from mmsynth.factory.recipe.messages import problem_from_pydantic
from mmsynth.factory.recipe.schema import (
    TINY_MODELS,
    CacheSpec,
    DocumentSpec,
    ImageSpec,
    ModelSpec,
    OutputSpec,
    RayModelSpec,
    RaySpec,
    Recipe,
    SamplingSpec,
    TaskSpec,
    ValidatorSpec,
)

__all__ = [
    "TINY_MODELS",
    "CacheSpec",
    "DocumentSpec",
    "ImageSpec",
    "ModelSpec",
    "OutputSpec",
    "RayModelSpec",
    "RaySpec",
    "Recipe",
    "SamplingSpec",
    "TaskSpec",
    "ValidatorSpec",
    "check_references",
    "load_recipe",
    "problem_from_pydantic",
    "read_recipe",
]
