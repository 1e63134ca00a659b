"""The values a backend takes and returns, and the contract every backend keeps."""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import RenderedPrompt, stable_hash


@dataclass(frozen=True)
class SamplingParams:
    """How to sample, field by field as vLLM names them.

    temperature: 0 means greedy decoding.
    top_p: nucleus sampling mass.
    max_tokens: the most tokens one output may have; an output cut here ends with finish_reason "length".
    n: outputs per request (one request with n samples, never n requests).
    seed: per-request sampling seed; the factory derives it from the run seed and the record, so reruns repeat.
    stop: strings that end an output.
    image: image-generation settings for diffusion backends (steps, guidance_scale, width, height,
        negative_prompt, scheduler); None for text models, and then left out of the cache key.
    """

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    image: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        # What dataclasses.asdict gave, field for field, without its recursive copy (a hot path: twice
        # per request). Text requests keep the key they had before image settings existed (no "image").
        d: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "n": self.n,
            "seed": self.seed,
            "stop": list(self.stop),
        }
        if self.image is not None:
            d["image"] = copy.deepcopy(self.image)
        return d


@dataclass(frozen=True)
class GenerationRequest:
    """One call to a model: a rendered prompt, how to sample it, and the cache key that names it."""

    prompt: RenderedPrompt
    sampling: SamplingParams
    key: str  # content address of everything that changes the output; see request_key()

    @property
    def output_schema(self) -> dict[str, Any] | None:
        return self.prompt.output_schema


def request_key(
    prompt: RenderedPrompt, sampling: SamplingParams, model: str, revision: str, backend: str
) -> str:
    """Content address of a request: messages (system prompt included), image hashes, template hash,
    model and revision, backend, sampling parameters and seed. Anything that changes the output is in it."""
    return stable_hash(
        {
            "prompt": prompt.canonical(),
            "sampling": sampling.to_dict(),
            "model": model,
            "revision": revision,
            "backend": backend,
        }
    )


@dataclass(frozen=True)
class Output:
    """One sample: text from a language model, or an image (with the exact settings that made it)
    from a diffusion model, whose `text` is then the prompt it was rendered from."""

    text: str
    finish_reason: str  # "stop" | "length" | "error"
    image: ImageRef | None = None
    params: dict[str, Any] = field(default_factory=dict)  # per-image seed, steps, guidance, size, ...

    def to_json(self) -> list[Any]:
        if self.image is None and not self.params:
            return [self.text, self.finish_reason]
        img = None
        if self.image is not None:
            img = {"data": base64.b64encode(self.image.data).decode("ascii"), "mime": self.image.mime}
        return [self.text, self.finish_reason, img, self.params]

    @classmethod
    def from_json(cls, row: list[Any]) -> Output:
        if len(row) == 2:
            return cls(row[0], row[1])
        text, finish, img, params = row
        image = None
        if img is not None:
            image = ImageRef.from_bytes(
                base64.b64decode(img["data"]), mime=img.get("mime"), source="generated"
            )
        return cls(text, finish, image, params or {})


@dataclass(frozen=True)
class Generation:
    """A backend's answer to one request: n outputs, or an error that says why there are none.

    A non-retryable failure (context too long, invalid schema, undecodable image) is an answer, not
    an exception: it becomes a rejected record with `error` as its reason, and the run goes on.
    """

    outputs: tuple[Output, ...]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "outputs": [o.to_json() for o in self.outputs],
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "error": self.error,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Generation:
        return cls(
            outputs=tuple(Output.from_json(o) for o in d["outputs"]),
            prompt_tokens=d.get("prompt_tokens", 0),
            completion_tokens=d.get("completion_tokens", 0),
            error=d.get("error"),
            extra=d.get("extra") or {},
        )

    @classmethod
    def failed(cls, reason: str) -> Generation:
        return cls(outputs=(), error=reason)


@runtime_checkable
class Backend(Protocol):
    """A text-producing model. The engine sends lists of at most `batch_size` requests, with at most
    `max_concurrency` lists in flight, and gets one Generation per request, in order.

    In-process backends batch (batch_size > 1, max_concurrency 1); network backends take one request
    per call and many calls at once. `generate` raises only for failures that should stop the run
    (model cannot load, server gone); a bad request is answered with Generation.failed(reason).

    Optional: `prefix_cache = True` says the model keeps a prefix cache (vLLM) and answers each request
    independently of the others sent with it; the engine then sends requests grouped by image and
    prompt prefix (factory/engine/order.py) instead of in stream order. Absent means False.
    """

    name: str  # registry key: "transformers", "vllm-server", ...
    model: str  # what the user named: a path, a Hub id, "tiny:vlm"
    revision: str  # commit sha for Hub models, content hash for local folders
    batch_size: int
    max_concurrency: int

    def load(self) -> None:
        """Load the model (or reach the server) now, idempotently, so that a model that cannot load stops
        the run before any record is made; `generate` loads on first use when this was not called."""
        ...

    async def generate(self, requests: list[GenerationRequest]) -> list[Generation]: ...

    def close(self) -> None:
        """Free the model, processes and connections; a later `load` or `generate` may start them again."""
        ...
