"""From a loaded recipe to a runnable plan: templates resolved, backends built, validators built.

Every check that can fail is done here, before any output is written or any model is loaded, and
all of them run: one RecipeError lists every problem (see `build_plan`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mmsynth.factory.errors import Problem, RecipeError, choice_hint, problem_at
from mmsynth.factory.recipe import ModelSpec, Recipe, check_references, problem_from_pydantic
from mmsynth.factory.recipe.checks import bad_sources
from mmsynth.factory.seeds import seed_fields
from mmsynth.generators.model_paths import resolve_model_path
from mmsynth.generators.registry import backend_class, build_backend, known_backends
from mmsynth.generators.types import Backend, GenerationRequest, SamplingParams, request_key
from mmsynth.prompts import PromptTemplate, TemplateError, TemplateRegistry, render_template
from mmsynth.prompts.errors import MmsynthError
from mmsynth.prompts.messages import RenderedPrompt
from mmsynth.prompts.names import did_you_mean
from mmsynth.validators import build_validators, validator_config_model
from mmsynth.validators.types import Validator


@dataclass
class TaskPlan:
    name: str
    template: PromptTemplate
    model_name: str
    n: int
    sampling: dict[str, Any]  # template defaults overridden by the recipe, without n and seed
    inputs: dict[str, str]  # template variable -> seed field
    backend: Backend | None = None  # set by load_backends
    source: str | None = None  # the task whose accepted records this task runs on; None: the seeds
    for_each: str | None = None  # with source: the list in the source's parsed output to fan out over
    where: dict[str, Any] | None = None  # with for_each: keep items whose fields equal these
    image: dict[str, Any] | None = None  # image-generation settings (diffusion backends)
    level: int = 0  # 0 for tasks on seeds; 1 + the source's level otherwise


@dataclass
class Plan:
    recipe: Recipe
    tasks: list[TaskPlan]
    backends: dict[str, Backend]  # model name -> loaded backend; filled by load_backends
    validators: list[Validator]
    templates: list[PromptTemplate] = field(default_factory=list)

    @property
    def stages(self) -> int:
        """Number of model stages: 1 + the deepest `from` chain."""
        return 1 + max((t.level for t in self.tasks), default=0)

    @property
    def subsets(self) -> list[str]:
        """Dataset configs, in order: one per task, then one per assembled document kind."""
        return [t.name for t in self.tasks] + [d.name for d in self.recipe.documents]

    def describe(self) -> dict[str, str]:
        """What identifies the output: the recipe and each template's content (shown when a rerun is refused)."""
        d = {"recipe": self.recipe.fingerprint()}
        for t in self.templates:
            d[f"template {t.ref}"] = t.hash
        return d

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(sorted(self.describe().items())).encode()).hexdigest()


Check = Callable[[Recipe], list[Problem]]
"""An extra check of a loaded recipe (the Ray executor's), run by build_plan with its own."""


def build_plan(recipe: Recipe, checks: Sequence[Check] = ()) -> Plan:
    """Resolve and cross-check everything the recipe names; one RecipeError lists every problem found.

    The recipe's own checks (`check_references`) run first, then templates, backends and validator
    settings, then `checks`; each problem points at its line, and nothing is built until all pass.
    """
    base = recipe.base_dir
    problems = check_references(recipe)
    broken = bad_sources(recipe)  # tasks whose `from` is wrong: their fields cannot be known

    def at(loc: tuple, message: str, hint: str | None = None, *, key: bool = False) -> Problem:
        return problem_at(recipe.shown_path, recipe.source_nodes, loc, message, hint, key=key)

    registry: TemplateRegistry | None
    try:
        registry = TemplateRegistry([Path(p) for p in recipe.templates])
    except TemplateError as e:
        registry = None
        problems.append(at(("templates",), str(e)))

    fields = seed_fields(recipe.seeds, base)

    for name, spec in recipe.models.items():
        if spec.backend not in known_backends():
            problems.append(
                at(
                    ("models", name, "backend"),
                    f"unknown backend '{spec.backend}'",
                    choice_hint(spec.backend, known_backends(), "known backends"),
                )
            )
            continue
        options_model = getattr(backend_class(spec.backend), "Options", None)
        if options_model is not None:
            problems += _check_against(recipe, options_model, spec.options, ("models", name, "options"))
        elif spec.options:
            problems.append(
                at(
                    ("models", name, "options"),
                    f"backend '{spec.backend}' takes no options",
                    "remove `options:` (docs/models.md lists each backend's settings)",
                )
            )

    tasks_cfg = []
    templates: dict[str, PromptTemplate] = {}
    templates_by_task: dict[str, PromptTemplate] = {}
    for i, t in enumerate(recipe.tasks):
        if registry is None:
            break
        try:
            tpl = registry.get(t.template)
        except TemplateError as e:
            problems.append(at(("tasks", i, "template"), str(e)))
            continue
        templates[tpl.ref] = tpl
        inputs = {var: t.inputs.get(var, var) for var in sorted(tpl.variables() | set(tpl.inputs))}
        task_fields = None
        if t.from_ is None:
            task_fields = fields
        elif t.name not in broken and t.from_ in templates_by_task:
            task_fields = _derived_fields(t, templates_by_task, fields)
        templates_by_task.setdefault(t.name, tpl)
        tasks_cfg.append((t, tpl, inputs))
        for var in t.inputs:
            if var not in tpl.inputs and var not in tpl.variables():
                problems.append(
                    at(
                        ("tasks", i, "inputs", var),
                        f"template {tpl.ref} has no input '{var}'",
                        f"its inputs are: {', '.join(sorted(tpl.inputs))}",
                        key=True,
                    )
                )
        if task_fields is None:  # the source's output has no schema: its fields are known only at run time
            continue
        for var, src_field in sorted(inputs.items()):
            spec = tpl.inputs.get(var)
            optional = bool(spec and spec.optional)
            # An optional input may be absent, unless the recipe maps it to a field explicitly.
            if var == "exemplars" or (optional and var not in t.inputs):
                continue
            if src_field not in task_fields:
                loc = ("tasks", i, "inputs", var) if var in t.inputs else ("tasks", i, "template")
                what = (
                    f"the {recipe.seeds.type} seeds provide" if t.from_ is None else f"task '{t.from_}' gives"
                )
                problems.append(
                    at(
                        loc,
                        f"template {tpl.ref} needs variable '{var}', but {what} no field '{src_field}'",
                        f"fields are: {', '.join(sorted(task_fields))}. Map it with `inputs: {{{var}: <field>}}`."
                        + did_you_mean(src_field, task_fields),
                    )
                )

    for i, vspec in enumerate(recipe.validators):
        try:
            model = validator_config_model(vspec.get("type"))
        except ValueError as e:
            problems.append(at(("validators", i, "type"), str(e)))
            continue
        problems += _check_against(recipe, model, vspec, ("validators", i))

    for check in checks:
        problems += check(recipe)
    if problems:
        raise RecipeError(problems)

    try:
        validators = build_validators([_resolve_paths(v, base) for v in recipe.validators])
    except ValueError as e:
        raise recipe.error_at(("validators",), str(e)) from None

    tasks: list[TaskPlan] = []
    levels: dict[str, int] = {}
    for t, tpl, inputs in tasks_cfg:
        sampling = {**tpl.sampling, **t.sampling.model_dump(exclude_none=True)}
        sampling.pop("n", None)
        levels[t.name] = 0 if t.from_ is None else levels[t.from_] + 1
        tasks.append(
            TaskPlan(
                t.name,
                tpl,
                t.model,
                n=t.n,
                sampling=sampling,
                inputs=inputs,
                source=t.from_,
                for_each=t.for_each,
                where=t.where,
                image=t.image.settings() if t.image is not None else None,
                level=levels[t.name],
            )
        )
    return Plan(recipe, tasks, {}, validators, list(templates.values()))


class ModelLoadError(MmsynthError, RuntimeError):
    """A model named in the recipe could not be loaded (missing folder, server down, wrong model name)."""

    exit_code = 1


def used_models(plan: Plan) -> list[str]:
    """The names of the models some task uses, in recipe order."""
    return [name for name in plan.recipe.models if any(t.model_name == name for t in plan.tasks)]


def backend_args(spec: ModelSpec) -> dict[str, Any]:
    """The keyword arguments `build_backend(spec.backend, ...)` gets: path and revision resolved.
    One function, so a Ray actor builds exactly the backend a local run builds."""
    from mmsynth.generators.revision import resolve_revision

    path = resolve_model_path(str(spec.model))
    return dict(
        model=str(spec.model),
        path=path,
        revision=resolve_revision(path, spec.revision),
        batch_size=spec.batch_size,
        device=spec.device,
        dtype=spec.dtype,
        **spec.options,
    )


def load_backend(name: str, spec: ModelSpec, args: dict[str, Any]) -> Backend:
    """Build and load one model; ModelLoadError (naming it) when either fails."""
    what = f"model '{name}' ({spec.backend}: {spec.model})"
    try:
        backend = build_backend(spec.backend, **args)
    except Exception as e:  # a bad dtype, a bad device: the user's setting, not our bug
        raise ModelLoadError(f"{what} could not be set up: {e}") from e
    try:
        backend.load()
    except Exception as e:  # a model that cannot load stops the run before any record is made
        backend.close()
        raise ModelLoadError(f"{what} could not be loaded: {e}") from e
    return backend


def load_backends(plan: Plan, skip: frozenset[str] = frozenset()) -> None:
    """Resolve model paths and revisions, build and load each model the tasks use (the slow part).
    Models in `skip` must already be in `plan.backends` (the Ray executor puts its proxies there)."""
    for name in used_models(plan):
        if name in skip:
            continue
        spec = plan.recipe.models[name]
        plan.backends[name] = load_backend(name, spec, backend_args(spec))
    for t in plan.tasks:
        t.backend = plan.backends[t.model_name]


def derive_seed(run_seed: int, seed_id: str, task: str) -> int:
    """The per-record sampling seed: stable across reruns, different per seed and task."""
    h = hashlib.sha256(f"{run_seed}:{seed_id}:{task}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def build_request(
    task: TaskPlan, fields: dict[str, Any], seed_id: str, run_seed: int
) -> tuple[RenderedPrompt, GenerationRequest]:
    variables = {var: fields.get(src) for var, src in task.inputs.items() if src in fields}
    prompt = render_template(task.template, variables)
    allowed = {"temperature", "top_p", "max_tokens", "stop"}
    params = {k: v for k, v in task.sampling.items() if k in allowed}
    if "stop" in params:
        params["stop"] = tuple(params["stop"] or ())
    sampling = SamplingParams(
        **params,
        n=task.n,
        seed=task.sampling.get("seed", derive_seed(run_seed, seed_id, task.name)),
        image=task.image,
    )
    b = task.backend
    key = request_key(prompt, sampling, b.model, b.revision, b.name)
    return prompt, GenerationRequest(prompt, sampling, key)


# Fields every derived seed has, besides the root seed's (see factory.derive.derived_seed).
DERIVED_FIELDS = frozenset({"output", "image", "parent_id"})
ITEM_FIELDS = frozenset({"item", "item_index"})


def _derived_fields(
    task, templates_by_task: dict[str, PromptTemplate], seed_fields_: set[str]
) -> set[str] | None:
    """Fields a task with `from` can use, from its source template's output schema; None when unknown."""
    schema = templates_by_task[task.from_].output_schema
    if schema is None:
        return set(seed_fields_) | DERIVED_FIELDS
    props = set((schema.get("properties") or {}).keys())
    out = set(seed_fields_) | DERIVED_FIELDS | props
    if task.for_each:
        items = ((schema.get("properties") or {}).get(task.for_each) or {}).get("items") or {}
        variants = items.get("oneOf") or items.get("anyOf") or [items]
        keys = {k for v in variants for k in (v.get("properties") or {})}
        if not keys:
            return None
        out |= keys | ITEM_FIELDS
    return out


def _resolve_paths(value: Any, base: Path) -> Any:
    """A validator spec with relative `path`/`model` values that exist under the recipe's folder made
    absolute, so eval sets and model folders resolve against the recipe, as seeds and templates do."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if (
                k in ("path", "model")
                and isinstance(v, str)
                and not Path(v).is_absolute()
                and (base / v).exists()
            ):
                out[k] = str((base / v).resolve())
            else:
                out[k] = _resolve_paths(v, base)
        return out
    if isinstance(value, list):
        return [_resolve_paths(v, base) for v in value]
    return value


def _check_against(recipe: Recipe, model: type[BaseModel], data: dict, prefix: tuple) -> list[Problem]:
    """Every problem of `data` against a pydantic model, each at its line under `prefix`."""
    try:
        model.model_validate(data)
    except ValidationError as e:
        return [
            problem_from_pydantic(
                err,
                recipe.shown_path,
                recipe.source_nodes,
                model=model,
                prefix=prefix,
                base_dir=recipe.base_dir,
            )
            for err in e.errors(include_url=False)
        ]
    return []
