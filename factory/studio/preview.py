"""Render and run one template on a few seed samples, through the recipe's backend and validators.

Shared by the web studio and `mmsynth prompts preview/diff`. A preview goes exactly the way a run goes:
the task comes from `build_plan` (with the template tried in place of the recipe's), requests and records
are built as in a run, and the plan's validators judge them through the run's `validate_records`. The
validators are built once per session (with the plan: relative eval-set and model paths resolve against
the recipe's folder) and closed with it. A preview does not remember what it accepted, so each one is
judged as the first batch of a run would be: a sample's verdict here is the one `mmsynth run` gives it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mmsynth.factory.dataset.records import Record
from mmsynth.factory.engine.answers import assemble_records
from mmsynth.factory.engine.plan import Plan, TaskPlan, build_plan, build_request, load_backends
from mmsynth.factory.engine.stats import ChunkStats
from mmsynth.factory.engine.validate import close_validators, validate_records
from mmsynth.factory.errors import RecipeError
from mmsynth.factory.recipe import Recipe, load_recipe
from mmsynth.factory.seeds import Seed, iter_seeds, seed_fields
from mmsynth.generators.types import Backend, Generation, GenerationRequest
from mmsynth.prompts import (
    LintIssue,
    PromptTemplate,
    RenderedPrompt,
    TemplateError,
    TemplateRegistry,
    load_template,
    parse_template,
    render_template,
)
from mmsynth.prompts.errors import MmsynthError
from mmsynth.prompts.lint import lint_source
from mmsynth.prompts.template import source_hash

EDITOR_PATH = "<editor>"  # the `path` of templates parsed from editor text, in messages and tracebacks
MAX_SAMPLES = 32  # a preview is a handful of samples; a batch run is `mmsynth run`
ANSWERS_KEPT = 4096  # model answers a session keeps (oldest dropped): a preview is far fewer
EDITOR_SOURCES = 64  # editor texts kept by hash, to hand them to build_plan; the oldest go first

T = TypeVar("T")


class StudioError(MmsynthError):
    """Something the user asked for cannot be done (unknown task, broken template, failed model); says why."""

    exit_code = 2


@dataclass(frozen=True)
class TaskView:
    """A recipe task as the studio lists it; `why_not` says why it cannot be previewed, when it cannot."""

    name: str
    template: PromptTemplate
    model: str
    n: int
    why_not: str | None = None


@dataclass
class RenderedSample:
    seed: Seed
    prompt: RenderedPrompt | None
    error: str | None = None


@dataclass
class SampleRun:
    """One seed's records: n outputs with their verdicts, or one failure record with its reason."""

    seed: Seed
    records: list[Record]


@dataclass
class RunReport:
    task: str
    template: PromptTemplate
    samples: list[SampleRun]
    seconds: float
    sent: int  # requests sent to the model; the others were answered earlier in this session

    @property
    def records(self) -> list[Record]:
        return [r for s in self.samples for r in s.records]

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.records)

    @property
    def pass_rate(self) -> float:
        return self.accepted / len(self.records) if self.records else 0.0


class StudioSession:
    """One recipe opened for template work: its plan, its templates, its first seeds, its loaded models.

    Models load on the first run and stay loaded. Backends are called on one event loop in a thread of
    its own, whichever thread asks (web requests run in a pool): a network backend's client stays on
    the loop it was made on, and an in-process model runs one batch at a time.
    """

    def __init__(self, recipe_path: str | Path, save_dir: str | Path | None = None) -> None:
        self.recipe_path = Path(recipe_path)
        self._save_dir = Path(save_dir).resolve() if save_dir is not None else None
        self._run_lock = threading.Lock()
        self._seed_lock = threading.Lock()
        self._backends: dict[str, Backend] = {}
        self._answers: dict[str, Generation] = {}  # request key -> answer: same request, same output
        self._seeds: list[Seed] = []
        # (task, template hash) -> the task as build_plan made it; cleared by reload
        self._task_plans: OrderedDict[tuple[str, str], TaskPlan] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self.plan: Plan | None = None
        self.reload()

    # -- the recipe and its templates ------------------------------------------------------------------

    def reload(self) -> None:
        """Read the recipe and template folders again (after a save, or an edit outside the studio).

        The validators are built with the first plan and kept while the recipe's `validators:` stay the
        same (a judge or CLIP model is not loaded twice); when they change, the old ones are closed.
        """
        recipe = load_recipe(self.recipe_path)
        old = self.plan
        if old is not None and recipe.validators == self.recipe.validators:
            plan = build_plan(recipe.model_copy(update={"validators": []}))
            plan.recipe, plan.validators = recipe, old.validators
        else:
            plan = build_plan(recipe)
            if old is not None:
                close_validators(old.validators)
        self.recipe: Recipe = recipe
        self.plan = plan
        with self._seed_lock:
            self._task_plans.clear()
        self.fields: set[str] = seed_fields(self.recipe.seeds, self.recipe.base_dir)
        folders = [Path(p) for p in self.recipe.templates]
        if self.save_dir.is_dir() and self.save_dir not in folders:
            folders.append(self.save_dir)  # last: versions saved here win over same refs elsewhere
        self.registry = TemplateRegistry(folders)

    @property
    def save_dir(self) -> Path:
        """Where new versions go: the given folder, else the recipe's first template folder, else
        `templates/` beside the recipe."""
        if self._save_dir is not None:
            return self._save_dir
        if self.recipe.templates:
            return Path(self.recipe.templates[0]).resolve()
        return (self.recipe.base_dir / "templates").resolve()

    @property
    def recipe_sees_save_dir(self) -> bool:
        return self.save_dir in {Path(p).resolve() for p in self.recipe.templates}

    def tasks(self) -> list[TaskView]:
        views = []
        for t in self.plan.tasks:
            spec = self.plan.recipe.models[t.model_name]
            why = None
            if t.source is not None:
                why = f"runs on the outputs of task '{t.source}', not on seeds"
            elif t.image is not None:
                why = "makes images; the studio previews text outputs"
            views.append(TaskView(t.name, t.template, f"{spec.backend}: {spec.model}", t.n, why))
        return views

    def task(self, name: str) -> TaskPlan:
        for t in self.plan.tasks:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.plan.tasks)
        raise StudioError(f"the recipe has no task '{name}' (tasks: {known})")

    def task_for(self, template_id: str) -> TaskPlan:
        """The first task that uses `template_id`: its model, n, sampling and input mapping are used."""
        for t in self.plan.tasks:
            if t.template.id == template_id:
                return t
        uses = ", ".join(f"{t.name} ({t.template.id})" for t in self.plan.tasks)
        raise StudioError(
            f"no task of {self.recipe_path} uses template '{template_id}' (tasks: {uses}); "
            "pass --task to try it in one of them"
        )

    def template(self, ref: str) -> PromptTemplate:
        """`id`, `id@version` (searched in the recipe's folders, the save folder and the built-ins) or a .j2 path."""
        try:
            return load_template(ref) if ref.endswith(".j2") else self.registry.get(ref)
        except TemplateError as e:
            raise StudioError(str(e)) from None

    def versions(self, template_id: str) -> list[PromptTemplate]:
        return [t for t in self.registry.list() if t.id == template_id]

    # -- edits ------------------------------------------------------------------------------------------

    def available_vars(self, task: TaskPlan) -> set[str]:
        """Variable names the task can fill: the seed fields, and the recipe's mapped names whose field exists."""
        spec = next(t for t in self.recipe.tasks if t.name == task.name)
        return set(self.fields) | {var for var, src in spec.inputs.items() if src in self.fields}

    def lint(self, task_name: str, source: str, path: str = EDITOR_PATH) -> list[LintIssue]:
        """Every problem in template text: Jinja syntax, front matter, schema, undeclared or unprovided variables."""
        return lint_source(source, path, self.available_vars(self.task(task_name)))

    def seeds(self, n: int) -> list[Seed]:
        """The recipe's first `n` seeds (at most MAX_SAMPLES), read once and kept."""
        n = max(1, min(n, MAX_SAMPLES))
        with self._seed_lock:
            if len(self._seeds) < n:
                self._seeds = list(itertools.islice(iter_seeds(self.recipe.seeds, self.recipe.base_dir), n))
            return self._seeds[:n]

    def render(self, task_name: str, template: PromptTemplate, n: int) -> list[RenderedSample]:
        """The template rendered on the first `n` seeds with the task's input mapping; errors per sample."""
        task = self._task_with(task_name, template)
        out = []
        for seed in self.seeds(n):
            if seed.error:
                out.append(RenderedSample(seed, None, f"seed: {seed.error}"))
                continue
            variables = {var: seed.fields.get(src) for var, src in task.inputs.items() if src in seed.fields}
            try:
                out.append(RenderedSample(seed, render_template(template, variables)))
            except TemplateError as e:
                out.append(RenderedSample(seed, None, str(e)))
        return out

    def run(self, task_name: str, template: PromptTemplate, n: int) -> RunReport:
        """Generate with the task's model on the first `n` seeds and judge every output with the plan's
        validators, as the first batch of a run. StudioError when the model fails as a whole."""
        task = self._task_with(task_name, template)
        seeds = self.seeds(n)
        started = time.monotonic()
        with self._run_lock:
            task.backend = self._backend(task.model_name)
            items: list[tuple[Seed, GenerationRequest | None, str | None]] = []
            for seed in seeds:
                request, error = None, None
                if seed.error:
                    error = f"seed: {seed.error}"
                else:
                    try:
                        _, request = build_request(task, seed.fields, seed.id, self.recipe.seed)
                    except Exception as e:  # a render error is this sample's problem, as in a real run
                        error = f"render: {e}"
                items.append((seed, request, error))
            todo = list(
                {r.key: r for _, r, _ in items if r is not None and r.key not in self._answers}.values()
            )
            self._generate(task.backend, todo)
            stamp = time.time()
            samples = []
            for seed, request, error in items:
                answer = (self._answers[request.key], stamp) if request is not None else None
                records = assemble_records(seed, task, request, answer, error, ChunkStats())
                samples.append(SampleRun(seed, records))
            # Not remembered: the next preview is judged as a first batch too, not as a duplicate of this one.
            validate_records(self.plan.validators, [r for s in samples for r in s.records], remember=False)
            while len(self._answers) > ANSWERS_KEPT:
                del self._answers[next(iter(self._answers))]
        return RunReport(task.name, template, samples, time.monotonic() - started, len(todo))

    def close(self) -> None:
        """Unload the models, close the validators and stop the backend thread; a second call does nothing."""
        with self._run_lock:
            try:
                for backend in self._backends.values():
                    backend.close()
                self._backends.clear()
                if self.plan is not None:
                    validators, self.plan.validators = self.plan.validators, []
                    close_validators(validators)
            finally:
                if self._loop is not None:
                    self._loop.call_soon_threadsafe(self._loop.stop)
                    assert self._loop_thread is not None
                    self._loop_thread.join()
                    self._loop.close()
                    self._loop = self._loop_thread = None

    # -- internals --------------------------------------------------------------------------------------

    def _task_with(self, task_name: str, template: PromptTemplate) -> TaskPlan:
        """The recipe's task with `template` in place of its own, as `build_plan` makes it (inputs,
        sampling, checks) from the recipe with the template added as the newest of its folders."""
        self.task(task_name)
        view = next(v for v in self.tasks() if v.name == task_name)
        if view.why_not:
            raise StudioError(f"task '{task_name}' cannot be previewed: it {view.why_not}")
        key = (task_name, template.hash)
        with self._seed_lock:
            cached = self._task_plans.get(key)
        if cached is not None:
            return dataclasses.replace(cached, template=template)
        raw = self._source_of(template)
        with tempfile.TemporaryDirectory(prefix="mmsynth-studio-") as folder:
            (Path(folder) / "preview.j2").write_bytes(raw)  # the last folder wins for its id@version
            tasks = [
                t.model_copy(update={"template": template.ref}) if t.name == task_name else t
                for t in self.recipe.tasks
            ]
            variant = self.recipe.model_copy(
                update={"templates": [*self.recipe.templates, Path(folder)], "tasks": tasks, "validators": []}
            )
            try:
                plan = build_plan(variant)
            except RecipeError as e:  # what `mmsynth run` would refuse: say it as the run would
                raise StudioError(str(e)) from None
        task = next(t for t in plan.tasks if t.name == task_name)
        with self._seed_lock:
            self._task_plans[key] = task
            while len(self._task_plans) > EDITOR_SOURCES:
                self._task_plans.popitem(last=False)
        return dataclasses.replace(task, template=template)

    def _source_of(self, template: PromptTemplate) -> bytes:
        """The text `template` was parsed from: the editor's (kept by `parse`) or its file's, unchanged."""
        with _EDITOR_LOCK:
            text = _EDITOR_SOURCES.get(template.hash)
        if text is not None:
            return text.encode("utf-8")
        if template.path == EDITOR_PATH:
            raise StudioError("this editor text is no longer known; send it again")
        try:
            raw = Path(template.path).read_bytes()
        except OSError as e:
            raise StudioError(f"cannot read template {template.ref} at {template.path}: {e}") from None
        if source_hash(raw) != template.hash:
            raise StudioError(f"{template.path} changed since it was read; reload the page")
        return raw

    def _backend(self, model_name: str) -> Backend:
        if model_name not in self._backends:
            task = next(t for t in self.plan.tasks if t.model_name == model_name)
            one = Plan(self.recipe, [dataclasses.replace(task)], {}, [])
            try:
                load_backends(one)  # only the model this task uses
            except Exception as e:
                for backend in one.backends.values():
                    backend.close()
                raise StudioError(str(e)) from e
            self._backends[model_name] = one.backends[model_name]
        return self._backends[model_name]

    def _generate(self, backend: Backend, requests: list[GenerationRequest]) -> None:
        size = max(1, backend.batch_size)
        for i in range(0, len(requests), size):
            batch = requests[i : i + size]
            try:
                gens = self._on_loop(backend.generate(batch))
            except Exception as e:  # the backend as a whole failed: server gone, model crashed
                raise StudioError(f"the model failed: {backend.name} ({backend.model}): {e}") from e
            for request, gen in zip(batch, gens, strict=True):
                self._answers[request.key] = gen

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(
                target=self._loop.run_forever, name="mmsynth-studio-backends", daemon=True
            )
            self._loop_thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


_EDITOR_SOURCES: OrderedDict[str, str] = OrderedDict()  # template hash -> the editor text it came from
_EDITOR_LOCK = threading.Lock()


def parse_editor_text(source: str) -> PromptTemplate:
    """A template from editor text; TemplateError at its first problem (lint lists them all).

    The text is kept (the last EDITOR_SOURCES of them), so a session can hand it to build_plan."""
    template = parse_template(source, EDITOR_PATH)
    with _EDITOR_LOCK:
        _EDITOR_SOURCES[template.hash] = source
        _EDITOR_SOURCES.move_to_end(template.hash)
        while len(_EDITOR_SOURCES) > EDITOR_SOURCES:
            _EDITOR_SOURCES.popitem(last=False)
    return template


def read_source(template: PromptTemplate) -> str:
    """The text of a template's file, with \\n line endings."""
    return Path(template.path).read_text(encoding="utf-8").replace("\r\n", "\n")
