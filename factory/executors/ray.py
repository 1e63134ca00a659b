"""`mmsynth run --executor ray`: the models run in Ray actors, the engine stays in the driver.

The driver runs the same engine as a local run: chunks, stages, validation in chunk order, shards,
markers, the response cache and resume. Only the model work moves: each model of the recipe is served
by N Ray actors, each holding one real backend built with the arguments a local run uses
(`plan.backend_args`), and the engine talks to a `RayBackend`, a stand-in that keeps the Backend
protocol and sends each batch to the least busy actor. The engine's lookahead keeps every actor busy,
and because batches are formed in the driver exactly as locally, the output folder, its record ids and
its resume behaviour are those of a local run.

An actor that dies costs only the batches it had in flight: the stand-in replaces it and sends them
again. Ray is imported only here, only under `--executor ray`; nothing calls `ray.init` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsynth.factory.engine.plan import (
    ModelLoadError,
    Plan,
    backend_args,
    load_backend,
    load_backends,
    used_models,
)
from mmsynth.factory.errors import Problem, RecipeError
from mmsynth.factory.recipe import ModelSpec, RayModelSpec, Recipe
from mmsynth.generators.model_paths import resolve_model_path
from mmsynth.generators.types import Generation, GenerationRequest

INSTALL_HINT = "pip install 'mmsynth[ray]'"


class RayExecutorError(ModelLoadError):
    """Ray is missing, the cluster cannot be reached, or a model cannot be served on it (exit code 1)."""


@dataclass
class RayOptions:
    """How `--executor ray` connects and scales; the recipe's `ray:` section holds the per-model rest.

    address: None starts a local Ray instance (or uses the one this process has joined already);
        "auto" joins the cluster this machine belongs to; "ray://host:10001" goes through Ray Client.
    actors: when set, overrides `ray.models.<name>.actors` for every model.
    """

    address: str | None = None
    actors: int | None = None


def import_ray():
    """The `ray` module, or RayExecutorError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayExecutorError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def model_settings(plan: Plan, options: RayOptions) -> dict[str, RayModelSpec]:
    """Each used model's Ray settings: the recipe's `ray.models.<name>`, `--ray-actors` applied."""
    return _settings(plan.recipe, used_models(plan), options)


def recipe_checks(options: RayOptions) -> Callable[[Recipe], list[Problem]]:
    """The checks `--executor ray` adds to `build_plan`'s, so one run reports them with the others."""

    def check(recipe: Recipe) -> list[Problem]:
        used = [name for name in recipe.models if any(t.model == name for t in recipe.tasks)]
        return device_problems(recipe, _settings(recipe, used, options))

    return check


def _settings(recipe: Recipe, used: list[str], options: RayOptions) -> dict[str, RayModelSpec]:
    out = {}
    for name in used:
        spec = recipe.ray.models.get(name, RayModelSpec())
        if options.actors is not None:
            spec = spec.model_copy(update={"actors": options.actors})
        out[name] = spec
    return out


@contextlib.contextmanager
def ray_executor(plan: Plan, options: RayOptions) -> Iterator[Callable[[Plan], None]]:
    """Check what can be checked without a cluster, then yield the loader the runner calls instead of
    `load_backends`: it connects (only then), checks the cluster's resources, starts the actors and
    puts a RayBackend per model into the plan. Disconnects on exit if it connected."""
    settings = model_settings(plan, options)
    check_devices(plan, settings)  # already part of build_plan's checks when the runner passed them
    ray = import_ray()
    connected = False

    def load(plan: Plan) -> None:
        nonlocal connected
        if not ray.is_initialized():
            kw: dict[str, Any] = {"address": options.address}
            if options.address is None:
                kw["include_dashboard"] = False
            try:
                ray.init(**kw)
            except Exception as e:  # a wrong address, a cluster that is down
                raise RayExecutorError(
                    f"cannot connect to Ray at {options.address or 'a new local instance'}: {e}"
                ) from e
            connected = True
        check_resources(plan, settings, ray.nodes())
        served = {name: s for name, s in settings.items() if s.actors > 0}
        starting = {}
        for name, s in served.items():  # all actors are created first, so the models load in parallel
            spec = plan.recipe.models[name]
            args = backend_args(spec)  # resolved once, in the driver: every actor gets the same arguments
            starting[name] = (args, [_new_actor(ray, name, spec, args, s) for _ in range(s.actors)])
        try:
            for name, (args, handles) in starting.items():
                spec = plan.recipe.models[name]
                plan.backends[name] = RayBackend.connect(ray, name, spec, served[name], args, handles)
        except BaseException:
            # Connected models are closed by the runner; end the actors of the others here.
            _kill(ray, [h for name, (_, hs) in starting.items() if name not in plan.backends for h in hs])
            raise
        load_backends(plan, skip=frozenset(served))  # models with `actors: 0` run here, as locally

    try:
        yield load
    finally:
        if connected:
            ray.shutdown()


def check_devices(plan: Plan, settings: dict[str, RayModelSpec]) -> None:
    """RecipeError listing the `device_problems` of the plan's recipe, if any."""
    problems = device_problems(plan.recipe, settings)
    if problems:
        raise RecipeError(problems)


def device_problems(recipe: Recipe, settings: dict[str, RayModelSpec]) -> list[Problem]:
    """Settings a cluster would trip over only after its first batches: a model on `cuda` whose actors
    reserve no GPU (Ray hides the GPUs from them), a validator on `cuda` when the driver, where
    validators run, has none. Each at the setting's line."""
    problems = []
    for name, s in settings.items():
        device = recipe.models[name].device
        if s.actors > 0 and device.startswith("cuda") and s.num_gpus == 0:
            problems += recipe.error_at(
                ("ray", "models", name, "num_gpus")
                if name in recipe.ray.models
                else ("models", name, "device"),
                f"model '{name}' runs on '{device}', but its Ray actors reserve no GPU",
                f"set `ray: {{models: {{{name}: {{num_gpus: 1}}}}}}` (Ray hides GPUs from actors that reserve none)",
            ).problems
    wants_gpu = [
        (loc, v) for i, spec in enumerate(recipe.validators) for loc, v in _devices(spec, ("validators", i))
    ]
    if wants_gpu and not _driver_has_cuda():
        for loc, value in wants_gpu:
            problems += recipe.error_at(
                loc,
                f"validators run in the Ray driver, which has no GPU, but this one asks for '{value}'",
                "use `device: auto` or `cpu`, or start the run on a node with a GPU",
            ).problems
    return problems


def check_resources(plan: Plan, settings: dict[str, RayModelSpec], nodes: list[dict]) -> None:
    """Actors that could never be placed would wait forever: refuse them (all at once) before the job starts."""
    recipe = plan.recipe
    problems: list[Problem] = []
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    for resource, attr in (("GPU", "num_gpus"), ("CPU", "num_cpus")):
        largest = max((n.get(resource, 0) for n in alive), default=0)
        total = sum(n.get(resource, 0) for n in alive)
        needed = 0.0
        over_total = False
        for name, s in settings.items():
            per_actor = getattr(s, attr)
            if s.actors == 0 or per_actor == 0:
                continue
            needed += per_actor * s.actors
            loc = ("ray", "models", name, attr) if name in recipe.ray.models else ("ray",)
            if per_actor > largest:
                problems += recipe.error_at(
                    loc,
                    f"each actor of model '{name}' needs {per_actor:g} {resource}, but no node of the Ray "
                    f"cluster has more than {largest:g}",
                    "lower the setting, or add nodes that have it",
                ).problems
            elif needed > total and not over_total:  # said once per resource, at the model that tips it
                over_total = True
                problems += recipe.error_at(
                    loc,
                    f"the models' actors need {needed:g} {resource} in all, the Ray cluster has {total:g}",
                    "use fewer actors (`--ray-actors` or `ray.models.<name>.actors`), or a larger cluster",
                ).problems
    if problems:
        raise RecipeError(problems)


def _devices(value: Any, loc: tuple) -> Iterator[tuple[tuple, str]]:
    """(location, value) of every `device` setting on `cuda` inside a validator's config."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "device" and isinstance(v, str) and v.startswith("cuda"):
                yield (*loc, k), v
            else:
                yield from _devices(v, (*loc, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _devices(v, (*loc, i))


def _driver_has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# --- the actor -------------------------------------------------------------------------------------


class BackendHost:
    """Lives in a Ray actor: one real backend, built and loaded as a local run would."""

    def __init__(self, name: str, spec: ModelSpec, args: dict[str, Any]) -> None:
        self.backend = None
        self.error: str | None = None
        try:
            if spec.is_tiny and not Path(args["path"]).is_dir():
                # Tiny models are built where they run: this node may not share the driver's disk.
                args = {**args, "path": resolve_model_path(spec.model)}
            self.backend = load_backend(name, spec, args)
        except Exception as e:  # reported by identity(), so the driver shows it as a load error
            self.error = str(e)

    async def identity(self) -> dict[str, Any]:
        """What the driver's stand-in copies (the cache key uses name, model and revision), or the load error."""
        b = self.backend
        if b is None:
            return {"error": self.error}
        return {
            "name": b.name,
            "model": b.model,
            "revision": b.revision,
            "batch_size": b.batch_size,
            "max_concurrency": b.max_concurrency,
        }

    async def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        return await self.backend.generate(requests)

    async def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def _new_actor(ray, name: str, spec: ModelSpec, args: dict[str, Any], s: RayModelSpec):
    # An async actor (Ray's default of 1000 calls at once): identity() and close() get through while
    # batches run; the stand-in bounds the batches in flight.
    # Named, so `ray list actors` shows which model an actor serves.
    cls = ray.remote(BackendHost).options(
        num_cpus=s.num_cpus, num_gpus=s.num_gpus, name=f"mmsynth-{name}-{uuid.uuid4().hex[:8]}"
    )
    return cls.remote(name, spec, args)


# --- the driver's stand-in ---------------------------------------------------------------------------


@dataclass
class _Slot:
    index: int
    handle: Any
    inflight: int = 0
    replacing: asyncio.Task | None = None
    error: Exception | None = None  # set when this slot could not be refilled


@dataclass
class RayBackend:
    """A model served by Ray actors, seen by the engine as one Backend: `generate` sends the batch to the
    least busy actor and awaits it; an actor that dies is replaced and the batch is sent again."""

    ray: Any
    model_name: str
    spec: ModelSpec
    settings: RayModelSpec
    args: dict[str, Any]
    name: str
    model: str
    revision: str
    batch_size: int
    per_actor: int
    slots: list[_Slot] = field(default_factory=list)
    restarts: int = 0  # actors replaced so far

    @property
    def max_concurrency(self) -> int:
        return self.per_actor * len(self.slots)

    @classmethod
    def connect(
        cls, ray, name: str, spec: ModelSpec, s: RayModelSpec, args: dict[str, Any], handles: list
    ) -> RayBackend:
        """Wait for the actors to load; ModelLoadError when one cannot, or when they disagree."""
        try:
            identities = ray.get([h.identity.remote() for h in handles])
        except Exception as e:  # the actor process itself failed (import error, out of memory)
            _kill(ray, handles)
            raise RayExecutorError(f"model '{name}': a Ray actor failed to start: {e}") from e
        errors = [i["error"] for i in identities if "error" in i]
        if errors:
            _kill(ray, handles)
            raise ModelLoadError(f"{errors[0]} (in a Ray actor)")
        first = identities[0]
        for other in identities[1:]:
            if {k: other[k] for k in ("name", "model", "revision")} != {
                k: first[k] for k in ("name", "model", "revision")
            }:
                _kill(ray, handles)
                raise RayExecutorError(
                    f"model '{name}': Ray actors loaded different models ({first['revision']} vs "
                    f"{other['revision']}); every node must hold the same model folder"
                )
        return cls(
            ray,
            name,
            spec,
            s,
            args,
            name=first["name"],
            model=first["model"],
            revision=first["revision"],
            batch_size=first["batch_size"],
            per_actor=s.concurrency or max(1, first["max_concurrency"]),
            slots=[_Slot(i, h) for i, h in enumerate(handles)],
        )

    async def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        dead = self._dead_errors()
        for _ in range(self.settings.max_restarts + 2):
            slot = await self._pick()
            handle = slot.handle
            slot.inflight += 1
            try:
                return await handle.generate.remote(requests)
            except dead as e:
                if slot.handle is handle and slot.replacing is None:
                    slot.replacing = asyncio.create_task(self._replace(slot, e, len(requests)))
            except self.ray.exceptions.RayTaskError as e:  # the backend raised: the engine reports it
                raise (e.cause if isinstance(e.cause, Exception) else e) from None
            finally:
                slot.inflight -= 1
        raise RayExecutorError(f"model '{self.model_name}': a batch was lost with every actor it was sent to")

    async def _pick(self) -> _Slot:
        while True:
            live = [s for s in self.slots if s.error is None]
            if not live:
                raise self.slots[0].error
            ready = [s for s in live if s.replacing is None]
            if ready:
                return min(ready, key=lambda s: (s.inflight, s.index))
            await asyncio.wait([s.replacing for s in live], return_when=asyncio.FIRST_COMPLETED)

    async def _replace(self, slot: _Slot, cause: Exception, lost: int) -> None:
        """Start a new actor in the slot (it loads the model again); never raises, sets slot.error instead."""
        _kill(self.ray, [slot.handle])
        if self.restarts >= self.settings.max_restarts:
            slot.error = RayExecutorError(
                f"model '{self.model_name}': {self.restarts + 1} Ray actors died "
                f"(max_restarts {self.settings.max_restarts}); last: {_short(cause)}"
            )
            slot.replacing = None
            return
        self.restarts += 1
        print(
            f"[mmsynth] ray: an actor of model '{self.model_name}' died ({_short(cause)}); replacing it "
            f"({self.restarts} of {self.settings.max_restarts}) and sending its {lost}-request batch again",
            file=sys.stderr,
        )
        handle = _new_actor(self.ray, self.model_name, self.spec, self.args, self.settings)
        try:
            identity = await handle.identity.remote()
            if identity.get("error") or identity["revision"] != self.revision:
                raise RuntimeError(identity.get("error") or f"it loaded revision {identity['revision']}")
        except Exception as e:
            _kill(self.ray, [handle])
            slot.error = RayExecutorError(f"model '{self.model_name}': a replacement actor failed: {e}")
        else:
            slot.handle = handle
        slot.replacing = None

    def _dead_errors(self) -> tuple[type[BaseException], ...]:
        ex = self.ray.exceptions
        return (ex.RayActorError, ex.WorkerCrashedError, ex.NodeDiedError, ex.ObjectLostError)

    def load(self) -> None:
        """Nothing to do here: each actor loads its model when it starts."""

    def close(self) -> None:
        """Let each actor close its backend (stopping servers it launched), then end it."""
        handles = [s.handle for s in self.slots]
        with contextlib.suppress(Exception):
            self.ray.get([h.close.remote() for h in handles], timeout=60)
        _kill(self.ray, handles)

    def actor_handles(self) -> list:
        """The live actors (tests kill one to check that a dead actor costs only its batch)."""
        return [s.handle for s in self.slots if s.error is None]


def _kill(ray, handles: list) -> None:
    for h in handles:
        with contextlib.suppress(Exception):
            ray.kill(h, no_restart=True)


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__


__all__ = ["RayBackend", "RayExecutorError", "RayOptions", "import_ray", "ray_executor"]
