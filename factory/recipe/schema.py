"""The recipe's typed config: the pydantic models a recipe file is validated into.

Strict models with a description on every field (docs/recipes.md lists them). Relative paths are
resolved against the recipe's folder (passed as `base_dir` in the validation context) and must exist;
Hub ids are not checked here. Loading is in `load`, checks between fields in `checks`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mmsynth.factory.errors import Loc, Problem, RecipeError, choice_hint, describe_value
from mmsynth.factory.seeds import ScenesConfig, SeedSourceConfig
from mmsynth.factory.seeds.base import HubOrLocalSerializer, LocalFolder, OutputPath, resolve_hub_or_local

TINY_MODELS = ("tiny:lm", "tiny:vlm", "tiny:sd", "tiny:scene-vlm")
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
TASK_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
TEMPLATE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*(@[0-9]+)?$")


class _Config(BaseModel):
    # Strict: a quoted "16" is not an integer and `yes` is not a string; YAML already typed the values.
    model_config = ConfigDict(extra="forbid", strict=True)


def _resolve_model(value: str, info: ValidationInfo) -> str:
    if value.startswith("tiny:"):
        if value not in TINY_MODELS:
            raise PydanticCustomError(
                "unknown_tiny_model",
                "unknown tiny model '{value}'",
                {"value": value, "hint": choice_hint(value, TINY_MODELS, "tiny models")},
            )
        return value
    return resolve_hub_or_local(value, info, "model folder")


class ModelSpec(_Config):
    """A model the tasks can use: which backend runs it, and how."""

    backend: str = Field(
        description=(
            "Generator backend registry key (e.g. `transformers`, `vllm-server`, `diffusers`); "
            "checked against the generators registry after loading."
        )
    )
    model: Annotated[str, AfterValidator(_resolve_model), HubOrLocalSerializer] = Field(
        description=(
            "A local model folder, a Hub id (`org/name`), or `tiny:lm`, `tiny:vlm`, `tiny:sd`, `tiny:scene-vlm` "
            "(small smoke-test models built locally on first use). A value starting with `.`, "
            "`/` or `~`, or naming an existing folder relative to the recipe, is local and must exist."
        )
    )
    revision: str | None = Field(
        default=None,
        description="Hub revision (branch, tag or commit) to pin; null: the default branch. Unused for local and tiny models.",
    )
    batch_size: int = Field(
        default=16, ge=1, description="Most requests the engine sends to the backend in one call."
    )
    device: str = Field(
        default="auto",
        description="Where an in-process model runs: `auto`, `cpu`, `cuda`, `cuda:1`, ...; unused by server backends.",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="Weight and compute dtype of an in-process model; `auto` lets the backend choose.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Backend-specific keyword arguments, passed through unchanged."
    )

    @property
    def is_tiny(self) -> bool:
        return self.model in TINY_MODELS

    @property
    def local_path(self) -> Path | None:
        """The model folder when `model` is a local path (absolute after loading), else None."""
        if self.is_tiny:
            return None
        p = Path(os.path.expanduser(self.model))
        return p if p.is_absolute() or p.is_dir() else None


class SamplingSpec(_Config):
    """Sampling overrides for a task. Null fields keep the template's defaults (then the backend's)."""

    temperature: float | None = Field(
        default=None, ge=0, description="Sampling temperature; 0 is greedy decoding."
    )
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling mass, in (0, 1].")
    max_tokens: int | None = Field(default=None, ge=1, description="Most tokens one output may have.")
    seed: int | None = Field(
        default=None,
        description="Fixed sampling seed; null lets the factory derive one per request from the run seed.",
    )
    stop: list[str] | None = Field(default=None, description="Strings that end an output.")

    def overrides(self) -> dict[str, Any]:
        """The fields that are set, ready for `SamplingParams(**defaults | overrides)` (stop as a tuple)."""
        out = {k: v for k, v in self.model_dump().items() if v is not None}
        if "stop" in out:
            out["stop"] = tuple(out["stop"])
        return out


class ImageSpec(_Config):
    """Image-generation settings for a task run by a diffusion model; unset keys use the pipeline's default."""

    steps: int | None = Field(default=None, ge=1, description="Denoising steps (`num_inference_steps`).")
    guidance_scale: float | None = Field(default=None, ge=0, description="Classifier-free guidance scale.")
    width: int | None = Field(default=None, ge=8, description="Image width in pixels (a multiple of 8).")
    height: int | None = Field(default=None, ge=8, description="Image height in pixels (a multiple of 8).")
    negative_prompt: str | None = Field(default=None, description="What the image should not show.")
    scheduler: str | None = Field(
        default=None, description="A diffusers scheduler class name, e.g. `EulerDiscreteScheduler`."
    )

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class TaskSpec(_Config):
    """One kind of output: a template rendered for every seed (or every accepted record of another task)
    and sent to a model."""

    name: str = Field(
        description="Unique task name, snake_case (`^[a-z][a-z0-9_]*$`); becomes the dataset config name."
    )
    template: str = Field(
        description="Template id (`caption.short`), or id@version (`caption.short@2`) to pin one."
    )
    model: str = Field(description="Which model runs the task: a key of `models`.")
    n: int = Field(default=1, ge=1, description="Outputs per seed (one request sampled n times).")
    sampling: SamplingSpec = Field(
        default_factory=SamplingSpec, description="Overrides of the template's sampling defaults."
    )
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Template variable -> seed field. Template variables not listed take the seed field of the same name."
        ),
    )
    from_: str | None = Field(
        default=None,
        alias="from",
        description=(
            "Run on the accepted records of this earlier task instead of on the seeds. Its fields are the "
            "seed's, then `output` (its text), `image` (the image it made or read), `parent_id`, and the keys "
            "of its parsed JSON output."
        ),
    )
    for_each: str | None = Field(
        default=None,
        description=(
            "With `from`: one request per item of this list in the parsed output of the `from` task "
            "(e.g. `segments`); an item's keys become fields, plus `item` and `item_index`."
        ),
    )
    where: dict[str, Any] | None = Field(
        default=None,
        description="With `for_each`: keep only items whose fields equal these values (e.g. `{type: image}`).",
    )
    image: ImageSpec | None = Field(
        default=None, description="Image-generation settings, for tasks run by a diffusion model."
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not TASK_NAME_RE.match(value):
            raise PydanticCustomError(
                "bad_task_name",
                "invalid task name '{value}'",
                {"value": value, "hint": "Use lower-case letters, digits and '_', starting with a letter."},
            )
        return value

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        if not TEMPLATE_RE.match(value):
            raise PydanticCustomError(
                "bad_template_ref",
                "invalid template reference '{value}'",
                {"value": value, "hint": "Expected a template id like 'caption.short' or 'caption.short@2'."},
            )
        return value

    @model_validator(mode="after")
    def _check_from(self) -> TaskSpec:
        if (self.for_each or self.where) and not self.from_:
            raise PydanticCustomError(
                "for_each_without_from",
                "`for_each` and `where` need `from`",
                {"hint": "Name the task whose parsed outputs hold the list, e.g. `from: plan`."},
            )
        return self

    @property
    def template_id(self) -> str:
        return self.template.split("@", 1)[0]

    @property
    def template_version(self) -> int | None:
        """The pinned version, or None for the newest."""
        _, _, version = self.template.partition("@")
        return int(version) if version else None


def _check_validator(value: dict[str, Any]) -> dict[str, Any]:
    if "type" not in value:
        raise PydanticCustomError(
            "validator_type_missing",
            "missing required key",
            {"hint": "Each validator needs `type:`, its registry key (e.g. `heuristics`)."},
        )
    if not isinstance(value["type"], str):
        raise PydanticCustomError(
            "validator_type_not_str",
            "wrong type",
            {"hint": f"Expected a string, got {describe_value(value['type'])}."},
        )
    return value


ValidatorSpec = Annotated[dict[str, Any], AfterValidator(_check_validator)]
"""One validator of the stack: a plain mapping with a string `type` (its registry key) and its own
settings. The validators registry validates the settings later (see factory.plan)."""


class DocumentSpec(_Config):
    """An interleaved image-text document assembled from a plan task and the tasks that render its images."""

    name: str = Field(description="Subset name of the assembled documents (a dataset config).")
    plan: str = Field(
        description="The task whose parsed output is the plan: `segments` of `{type: text, text}` and `{type: image, ...}`."
    )
    images: str = Field(
        description="The task (downstream of `plan`, one record per image segment) whose accepted records hold the images."
    )
    captions: str | None = Field(
        default=None,
        description="Optional task that captions each rendered image; its accepted caption becomes the image's alt text, and a slot whose caption was rejected rejects the document.",
    )
    segments_field: str = Field(default="segments", description="Where the plan keeps its ordered segments.")


class OutputSpec(_Config):
    """How the dataset is written."""

    chunk_size: int = Field(default=256, ge=1, description="Seeds per shard; a shard is the unit of resume.")


class CacheSpec(_Config):
    """The response cache."""

    path: OutputPath | None = Field(
        default=None,
        description="Response cache folder; null: `<run>/cache`. Share one between runs to reuse responses.",
    )


class RayModelSpec(_Config):
    """How one model is served under `mmsynth run --executor ray` (docs/ray.md)."""

    actors: int = Field(
        default=1,
        ge=0,
        description=(
            "Ray actors serving this model, each holding its own copy; 0: the model runs in the driver, "
            "as in a local run (a `vllm-server` client, say). `--ray-actors` overrides it."
        ),
    )
    num_gpus: float = Field(
        default=0, ge=0, description="GPUs Ray reserves for each actor (fractions share a GPU)."
    )
    num_cpus: float = Field(default=1, ge=0, description="CPUs Ray reserves for each actor.")
    concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Batches in flight per actor; null: the backend's own `max_concurrency`.",
    )
    max_restarts: int = Field(
        default=3,
        ge=0,
        description=(
            "Dead actors of this model that are replaced (their in-flight batches are sent again); past "
            "that a dead actor is not replaced, and the run stops when none is left."
        ),
    )


class RaySpec(_Config):
    """Settings for `--executor ray`; a local run ignores them. Not fingerprinted."""

    models: dict[str, RayModelSpec] = Field(
        default_factory=dict,
        description="Per model (a key of `models`): actors and the resources of each; unlisted models get the defaults.",
    )


class Recipe(_Config):
    """A run's whole configuration. Build it with `load_recipe`, which also checks references and paths."""

    name: str = Field(
        description="Recipe name: lower-case letters, digits, '_' and '-', starting with a letter."
    )
    description: str = Field(
        default="", description="Free text for people and the dataset card; not fingerprinted."
    )
    license: str | None = Field(
        default=None,
        description="Licence of the generated data as a Hub licence id (e.g. `cc-by-4.0`), written into the published dataset card; not fingerprinted.",
    )
    seed: int = Field(
        default=0,
        description="Run seed: every per-record sampling seed, and by default the scenes' seed, derives from it.",
    )
    templates: list[LocalFolder] = Field(
        default_factory=list,
        description="Folders of user templates, searched before the built-in ones; relative to the recipe's folder.",
    )
    seeds: SeedSourceConfig = Field(description="Where the inputs come from: one source, chosen by `type`.")
    models: dict[str, ModelSpec] = Field(min_length=1, description="Models by name, referenced by tasks.")
    tasks: list[TaskSpec] = Field(min_length=1, description="What to generate for every seed.")
    documents: list[DocumentSpec] = Field(
        default_factory=list,
        description="Interleaved documents assembled from a plan task and its image tasks (OBELICS-style rows).",
    )
    mixture: dict[str, float] | None = Field(
        default=None,
        description=(
            "Share of the seeds each root task (one without `from`) gets, e.g. `{captions: 45, documents_plan: 45, "
            "text: 10}`; each seed goes to exactly one of them, deterministically. Null: every task runs on every seed."
        ),
    )
    validators: list[ValidatorSpec] = Field(
        default_factory=list,
        description=(
            "Validators every output passes through, in order: mappings with a `type` (registry key) "
            "and that validator's settings, which its registry checks after loading."
        ),
    )
    output: OutputSpec = Field(default_factory=OutputSpec, description="How the dataset is written.")
    cache: CacheSpec = Field(default_factory=CacheSpec, description="The response cache; not fingerprinted.")
    ray: RaySpec = Field(
        default_factory=RaySpec,
        description="How models are served under `--executor ray`; not fingerprinted (it cannot change the records).",
    )

    _source_path: Path | None = PrivateAttr(default=None)
    _shown_path: str | None = PrivateAttr(default=None)  # the path as the user gave it, for messages
    _source_nodes: yaml.Node | None = PrivateAttr(default=None)
    _load_problems: list[Problem] = PrivateAttr(default_factory=list)  # found by the loader, not fatal

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise PydanticCustomError(
                "bad_recipe_name",
                "invalid recipe name '{value}'",
                {
                    "value": value,
                    "hint": "Use lower-case letters, digits, '_' and '-', starting with a letter.",
                },
            )
        return value

    @model_validator(mode="after")
    def _default_scene_seed(self) -> Recipe:
        if isinstance(self.seeds, ScenesConfig) and self.seeds.seed is None:
            self.seeds.seed = self.seed
        return self

    @property
    def source_path(self) -> Path | None:
        """The recipe file (absolute), when loaded from one."""
        return self._source_path

    @property
    def shown_path(self) -> str:
        """The recipe file as messages name it: as the user gave it, `<recipe>` when not from a file."""
        return self._shown_path or (str(self._source_path) if self._source_path else "<recipe>")

    @property
    def load_problems(self) -> list[Problem]:
        """Problems the loader found that still let it build the Recipe (duplicate keys)."""
        return list(self._load_problems)

    @property
    def source_nodes(self) -> yaml.Node | None:
        """The composed YAML node tree of the recipe file, for pointing later errors at lines."""
        return self._source_nodes

    @property
    def base_dir(self) -> Path:
        """The folder relative paths resolve against: the recipe's folder, or the working folder."""
        return self._source_path.parent if self._source_path is not None else Path.cwd()

    def error_at(self, loc: Loc, message: str, hint: str | None = None, *, key: bool = False) -> RecipeError:
        """A RecipeError pointing at `loc` (e.g. `('tasks', 0, 'template')`) in this recipe's file."""
        return RecipeError.at(self.shown_path, self._source_nodes, loc, message, hint, key=key)

    def fingerprint(self) -> str:
        """sha256 of the normalised content: JSON with sorted keys, paths relative to the recipe's folder.

        `description`, `license`, `cache` and `ray` are left out: they cannot change the records. Used to
        refuse writing a changed recipe into an old run folder.
        """
        data = self.model_dump(
            mode="json",
            exclude={"description", "license", "cache", "ray"},
            context={"relative_to": self.base_dir},
        )
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()
