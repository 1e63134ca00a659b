"""In-process image generation with diffusers: any `DiffusionPipeline` folder or Hub id.

A request's prompt is the text of its user message(s); `SamplingParams.image` holds its settings
(steps, guidance_scale, width, height, negative_prompt, scheduler; an absent key means the pipeline's
default) and `n` how many images it wants. One call of `generate` groups the requests whose settings
are equal and runs each group as pipeline calls over a flat list of prompts, `batch_size` images at a
time, in a worker thread.

Image i of a request is drawn from its own CPU `torch.Generator` seeded with the request's seed + i,
so its starting noise does not depend on its batch-mates, and a rerun repeats it. (The denoising
itself runs batched: on a CPU, kernels sum in an order that depends on the batch size, so an image
made alone and in a batch can differ by one level in a few pixels. The same batch repeats exactly.)
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmsynth.generators.inprocess.base import InProcessBackend, pick_device, pick_dtype
from mmsynth.generators.inprocess.batching import answer_in_groups
from mmsynth.generators.types import Generation, GenerationRequest, Output
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.names import did_you_mean

IMAGE_KEYS = ("steps", "guidance_scale", "width", "height", "negative_prompt", "scheduler")
# SD-family pipelines check height and width against 8 (the VAE's downscale), whatever the VAE.
_SIZE_MULTIPLE = 8


class DiffusersOptions(BaseModel):
    """What a recipe may set under `options:` for the `diffusers` backend (pipeline-level settings)."""

    model_config = ConfigDict(extra="forbid")

    offload: Literal["none", "model", "sequential"] = Field(
        default="none",
        description=(
            "Move weights to the GPU only while they are used: `model` (whole sub-models, "
            "enable_model_cpu_offload: little slower, much less memory), `sequential` (layer by layer, "
            "enable_sequential_cpu_offload: least memory, slowest), `none` (all on the device). Needs CUDA."
        ),
    )
    attention_slicing: bool = Field(
        default=False,
        description="Compute attention in slices (enable_attention_slicing): less memory, slower.",
    )
    vae_tiling: bool = Field(
        default=False, description="Decode latents tile by tile (the VAE's enable_tiling): for large images."
    )
    safety_checker: Literal["keep", "disable"] = Field(
        default="keep",
        description=(
            "`keep` the pipeline's safety checker (flagged images come back black, with "
            "`nsfw_content_detected: true` in their params) or `disable` it (not loaded at all)."
        ),
    )


@dataclass
class _Job:
    """One request made ready: its prompt, settings, base seed and where its answer goes."""

    index: int
    prompt: str
    settings: dict[str, Any]
    n: int
    seed: int


class DiffusersBackend(InProcessBackend):
    """A diffusers pipeline in this process: up to `batch_size` images per pipeline call, one call at a time.

    Arguments as `InProcessBackend`; batch_size: the most images in one pipeline call. device: "auto"
    means cuda when available, else cpu. dtype: "auto" means bfloat16 on a GPU that supports it
    (float16 on older GPUs), float32 on the CPU. options: see `DiffusersBackend.Options`.
    """

    name = "diffusers"
    Options = DiffusersOptions

    def __init__(
        self,
        model: str,
        path: str | None = None,
        revision: str | None = None,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        **options: Any,
    ) -> None:
        self.options = self.Options.model_validate(options)  # before the revision lookup: cheap errors first
        super().__init__(model, path, revision, batch_size, device, dtype)
        self._pipe: Any = None
        self._call_params: dict[str, inspect.Parameter] = {}
        self._schedulers: dict[str, type] = {}
        self.pipeline_class: str | None = None  # known after load()

    # -- lifecycle --------------------------------------------------------------------------------

    def _is_loaded(self) -> bool:
        return self._pipe is not None

    def _load(self) -> None:
        import diffusers
        import torch
        from transformers.utils import logging as hf_logging

        # The factory draws its own progress; per-component loading bars would interleave with it.
        diffusers.utils.logging.disable_progress_bar()
        hf_logging.disable_progress_bar()
        device = pick_device(self.device_arg)
        opts = self.options
        if opts.offload != "none" and not device.startswith("cuda"):
            raise ValueError(
                f"offload {opts.offload!r} moves weights to a CUDA device; the device is {device!r}"
            )
        dtype = pick_dtype(self.dtype_arg, device)
        kw: dict[str, Any] = {_dtype_kwarg(): getattr(torch, dtype)}
        if self._load_revision:
            kw["revision"] = self._load_revision
        if opts.safety_checker == "disable" and "safety_checker" in _pipeline_components(self.path, kw):
            kw.update(safety_checker=None, requires_safety_checker=False)
        pipe = diffusers.DiffusionPipeline.from_pretrained(self.path, **kw)
        pipe.set_progress_bar_config(disable=True)
        if opts.attention_slicing:
            pipe.enable_attention_slicing()
        if opts.vae_tiling:
            vae = getattr(pipe, "vae", None)
            if vae is None or not hasattr(vae, "enable_tiling"):
                raise ValueError(f"vae_tiling: {type(pipe).__name__} has no VAE that supports tiling")
            vae.enable_tiling()
        if opts.offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif opts.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to(device)
        self._pipe = pipe
        self._call_params = dict(inspect.signature(pipe.__call__).parameters)
        self.device, self.dtype, self.pipeline_class = device, dtype, type(pipe).__name__

    def _unload(self) -> None:
        self._pipe = None
        self._schedulers.clear()

    # -- generation -------------------------------------------------------------------------------

    def _generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One Generation per request (n images each), in order."""
        return answer_in_groups(
            requests,
            self._prepare,
            lambda req, job: tuple(sorted(job.settings.items())),
            self._run_group,
        )

    def _prepare(self, index: int, req: GenerationRequest) -> _Job | Generation:
        """Check one request's settings against the pipeline; a problem is this request's answer."""
        settings = dict(req.sampling.image or {})
        unknown = sorted(set(settings) - set(IMAGE_KEYS))
        if unknown:
            return Generation.failed(
                f"unknown image setting(s) {', '.join(unknown)}; known: {', '.join(IMAGE_KEYS)}"
            )
        settings = {k: v for k, v in settings.items() if v is not None}
        problem = self._check_settings(settings)
        if problem:
            return Generation.failed(problem)
        prompt = "\n\n".join(m.text for m in req.prompt.messages if m.role == "user")
        seed = req.sampling.seed if req.sampling.seed is not None else _key_seed(req.key)
        return _Job(index=index, prompt=prompt, settings=settings, n=req.sampling.n, seed=seed)

    def _check_settings(self, s: dict[str, Any]) -> str | None:
        """Why these image settings cannot run on this pipeline, or None when they can."""
        for key in ("width", "height"):
            v = s.get(key)
            if v is not None and (not _is_int(v) or v < _SIZE_MULTIPLE or v % _SIZE_MULTIPLE):
                return f"{key} {v!r} must be a positive multiple of {_SIZE_MULTIPLE}"
        if "steps" in s and (not _is_int(s["steps"]) or s["steps"] < 1):
            return f"steps {s['steps']!r} must be an integer >= 1"
        g = s.get("guidance_scale")
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or g < 0):
            return f"guidance_scale {g!r} must be a number >= 0"
        for key, param in (
            ("steps", "num_inference_steps"),
            ("guidance_scale", "guidance_scale"),
            ("negative_prompt", "negative_prompt"),
            ("width", "width"),
            ("height", "height"),
        ):
            if key in s and param not in self._call_params:
                return f"{self.pipeline_class} takes no {param}; remove image setting {key!r}"
        if "scheduler" in s:
            try:
                self._scheduler_class(s["scheduler"])
            except ValueError as e:
                return str(e)
        return None

    def _scheduler_class(self, name: str) -> type:
        """The scheduler class `name`, if this pipeline's scheduler is compatible with it; else ValueError."""
        if name in self._schedulers:
            return self._schedulers[name]
        import diffusers

        current = type(self._pipe.scheduler)
        compatible = {c.__name__: c for c in self._pipe.scheduler.compatibles} | {current.__name__: current}
        if name in compatible:
            self._schedulers[name] = compatible[name]
            return compatible[name]
        known = ", ".join(sorted(compatible))
        cls = getattr(diffusers, name, None)
        if isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin):
            raise ValueError(
                f"scheduler {name!r} is not compatible with this pipeline's {current.__name__}; compatible: {known}"
            )
        hint = did_you_mean(name, compatible)
        raise ValueError(f"unknown scheduler {name!r}; known for this pipeline: {known}.{hint}")

    def _run_group(self, jobs: list[_Job]) -> list[Generation]:
        """Run requests with equal settings, `batch_size` images per call; a failing call is retried
        request by request, so only the request that cannot run fails."""
        images: dict[int, list[Output]] = {id(j): [] for j in jobs}
        errors: dict[int, str] = {}
        rows = [(j, i) for j in jobs for i in range(j.n)]
        for start in range(0, len(rows), self.batch_size):
            chunk = [(j, i) for j, i in rows[start : start + self.batch_size] if id(j) not in errors]
            if not chunk:
                continue
            try:
                outs: list[Output | None] = self._call(
                    jobs[0].settings, [(j.prompt, j.seed + i) for j, i in chunk]
                )
            except Exception as e:
                outs = self._retry_alone(chunk, errors, e)
            for (j, _), out in zip(chunk, outs, strict=True):
                if out is not None:
                    images[id(j)].append(out)
        return [
            Generation.failed(errors[id(j)]) if id(j) in errors else Generation(outputs=tuple(images[id(j)]))
            for j in jobs
        ]

    def _retry_alone(
        self, chunk: list[tuple[_Job, int]], errors: dict[int, str], error: Exception
    ) -> list[Output | None]:
        """After a failed call: one call per request of the chunk, so only the one that fails is marked
        in `errors`; its rows come back as None."""
        mine = list(dict.fromkeys(id(j) for j, _ in chunk))
        if len(mine) == 1:
            errors[mine[0]] = f"{type(error).__name__}: {error}"
            return [None] * len(chunk)
        by_row: dict[tuple[int, int], Output] = {}
        for jid in mine:
            rows = [(j, i) for j, i in chunk if id(j) == jid]
            job = rows[0][0]
            try:
                outs = self._call(job.settings, [(job.prompt, job.seed + i) for _, i in rows])
            except Exception as e:
                errors[jid] = f"{type(e).__name__}: {e}"
                continue
            by_row.update({(jid, i): out for (_, i), out in zip(rows, outs, strict=True)})
        return [by_row.get((id(j), i)) for j, i in chunk]

    def _call(self, settings: dict[str, Any], rows: list[tuple[str, int]]) -> list[Output]:
        """One pipeline call over (prompt, seed) rows; one Output per row, with the settings it used."""
        import torch

        pipe = self._pipe
        original = pipe.scheduler
        if "scheduler" in settings and settings["scheduler"] != type(original).__name__:
            # A fresh scheduler per call: schedulers keep per-run state (timesteps, step index).
            pipe.scheduler = self._scheduler_class(settings["scheduler"]).from_config(original.config)
        try:
            kw: dict[str, Any] = {
                "prompt": [p for p, _ in rows],
                # CPU generators: the starting noise of a seed is the same on every device and offload mode.
                "generator": [torch.Generator("cpu").manual_seed(s) for _, s in rows],
                "output_type": "pil",
            }
            for key, param in (("steps", "num_inference_steps"), ("guidance_scale", "guidance_scale")):
                if key in settings:
                    kw[param] = settings[key]
            for key in ("width", "height"):
                if key in settings:
                    kw[key] = settings[key]
            if "negative_prompt" in settings:
                kw["negative_prompt"] = [settings["negative_prompt"]] * len(rows)
            with torch.inference_mode():
                result = pipe(**kw)
            scheduler = type(pipe.scheduler).__name__
        finally:
            pipe.scheduler = original
        flags = getattr(result, "nsfw_content_detected", None) or [None] * len(rows)
        outputs = []
        for (prompt, seed), img, nsfw in zip(rows, result.images, flags, strict=True):
            params = {
                "seed": seed,
                "steps": settings.get("steps", self._default("num_inference_steps")),
                "guidance_scale": settings.get("guidance_scale", self._default("guidance_scale")),
                "width": img.width,
                "height": img.height,
                "negative_prompt": settings.get("negative_prompt"),
                "scheduler": scheduler,
            }
            if nsfw:
                params["nsfw_content_detected"] = True
            outputs.append(Output(prompt, "stop", ImageRef.from_pil(img, source="generated"), params))
        return outputs

    def _default(self, param: str) -> Any:
        """The pipeline's own default for a call argument (None when it has none or takes none)."""
        p = self._call_params.get(param)
        return None if p is None or p.default is inspect.Parameter.empty else p.default


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _key_seed(key: str) -> int:
    """A request's base seed when it has none: from its cache key, so reruns repeat it."""
    return int.from_bytes(hashlib.sha256(f"key:{key}".encode()).digest()[:4], "big") >> 1


def _dtype_kwarg() -> str:
    """`dtype` on diffusers versions that renamed it (they warn on `torch_dtype`), else `torch_dtype`."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"


def _pipeline_components(path: str, kw: dict[str, Any]) -> set[str]:
    """The component names in a pipeline's model_index.json (empty when it cannot be read)."""
    from diffusers import DiffusionPipeline

    try:
        config = DiffusionPipeline.load_config(path, revision=kw.get("revision"))
    except Exception:  # a missing index fails in from_pretrained with diffusers' own message
        return set()
    return {k for k in config if not k.startswith("_")}
