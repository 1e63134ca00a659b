"""In-process generation with transformers: text LMs (AutoModelForCausalLM) and VLMs (AutoModelForImageTextToText).

One call of `generate` is one list of requests. Requests that cannot run (undecodable image, image sent
to a text-only model, prompt + max_tokens over the context) are answered with `Generation.failed` up
front; the rest are grouped by identical sampling parameters (seed aside) and each group runs as one
left-padded `model.generate` batch in a worker thread.

Sampling is seeded per output row, not per batch: each row gets its own stream of uniforms (one
`torch.Generator` per row, drawn once per batch), seeded from the request's `seed` (or, when None, its
cache key) and the output's index among the request's `n`; a logits processor then samples every row
at once by inverse CDF with its row's uniform for this step (`sample_tokens`). So a request's outputs
do not depend on which other requests share its batch (up to the tiny float differences left padding
can cause), a rerun repeats them, and a step costs about what transformers' own sampling costs.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mmsynth.generators.inprocess.base import InProcessBackend, pick_device, pick_dtype
from mmsynth.generators.inprocess.batching import answer_in_groups
from mmsynth.generators.types import Generation, GenerationRequest, Output, SamplingParams
from mmsynth.prompts.messages import ImagePart, TextPart


@dataclass
class _Prepared:
    """One request made ready for batching: its chat text, decoded images and token count."""

    index: int
    request: GenerationRequest
    text: str
    images: list[Any] = field(default_factory=list)
    prompt_tokens: int = 0


@dataclass
class _Row:
    """One generated sequence, post-processed."""

    text: str
    finish_reason: str
    tokens: int


class TransformersBackend(InProcessBackend):
    """A transformers model in this process: batches of up to `batch_size` requests, one batch at a time.

    Arguments as `InProcessBackend`. device: "auto" means cuda when available, else cpu. dtype: "auto"
    means bfloat16 on a GPU that supports it (float16 on older GPUs), float32 on the CPU.
    """

    name = "transformers"

    def __init__(
        self,
        model: str,
        path: str | None = None,
        revision: str | None = None,
        batch_size: int = 16,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        super().__init__(model, path, revision, batch_size, device, dtype)
        self._hf_model = None
        self._tokenizer = None
        self._processor = None  # VLMs only
        self.is_vlm: bool | None = None  # known after load()
        self.context_length: int | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def _is_loaded(self) -> bool:
        return self._hf_model is not None

    def _load(self) -> None:
        import torch
        from transformers import AutoConfig
        from transformers.utils import logging as hf_logging

        # The factory draws its own progress; transformers' per-load bars would interleave with it.
        hf_logging.disable_progress_bar()
        device = pick_device(self.device_arg)
        dtype = pick_dtype(self.dtype_arg, device)
        kw: dict[str, Any] = {"revision": self._load_revision} if self._load_revision else {}
        config = AutoConfig.from_pretrained(self.path, **kw)
        self.is_vlm = _is_vlm_config(config)
        if self.is_vlm:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            processor = AutoProcessor.from_pretrained(self.path, **kw)
            tokenizer = processor.tokenizer
            model = AutoModelForImageTextToText.from_pretrained(self.path, dtype=getattr(torch, dtype), **kw)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            processor = None
            tokenizer = AutoTokenizer.from_pretrained(self.path, **kw)
            model = AutoModelForCausalLM.from_pretrained(self.path, dtype=getattr(torch, dtype), **kw)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._hf_model = model.to(device).eval()
        self._tokenizer, self._processor = tokenizer, processor
        self.device, self.dtype = device, dtype
        self.context_length = _context_length(config, tokenizer)

    def _unload(self) -> None:
        self._hf_model = self._tokenizer = self._processor = None

    # -- generation -------------------------------------------------------------------------------

    def _generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return answer_in_groups(
            requests,
            self._prepare,
            lambda req, prepared: _group_key(req.sampling),
            self._run_group,
            batch_size=self.batch_size,
        )

    def _prepare(self, index: int, req: GenerationRequest) -> _Prepared | Generation:
        """Decode images, apply the chat template and count tokens; a failure is this request's answer."""
        images = []
        for img in req.prompt.images:
            try:
                images.append(img.to_pil())
            except ValueError as e:  # to_pil names the image by its source, else by its sha256
                where = f" (image sha256 {img.sha256[:12]})" if img.source else ""
                return Generation.failed(f"{e}{where}")
        if images and not self.is_vlm:
            return Generation.failed(
                f"model {self.model} is a text-only model; the request has {len(images)} image(s)"
            )
        try:
            text = self._chat_text(req)
            prompt_tokens = self._count_tokens(text, images)
        except Exception as e:  # a template or processor that rejects this prompt rejects only it
            return Generation.failed(f"cannot build the model input: {type(e).__name__}: {e}")
        limit = self.context_length
        if limit is not None and prompt_tokens + req.sampling.max_tokens > limit:
            return Generation.failed(
                f"prompt of {prompt_tokens} tokens + max_tokens {req.sampling.max_tokens} exceeds "
                f"the context length {limit} of {self.model}"
            )
        return _Prepared(index=index, request=req, text=text, images=images, prompt_tokens=prompt_tokens)

    def _chat_text(self, req: GenerationRequest) -> str:
        if self.is_vlm:
            chat = [
                {
                    "role": m.role,
                    "content": [
                        {"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"}
                        for p in m.parts
                        if isinstance(p, (TextPart, ImagePart))
                    ],
                }
                for m in req.prompt.messages
            ]
            return self._processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        chat = [{"role": m.role, "content": m.text} for m in req.prompt.messages]
        if self._tokenizer.chat_template is None:  # a base model: plain concatenation
            return "\n\n".join(m["content"] for m in chat)
        return self._tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)

    def _add_special_tokens(self) -> bool:
        # A chat template already writes BOS and friends; tokenizing its output must not add them twice.
        return self._tokenizer.chat_template is None

    def _encode(self, texts: list[str], images: list[list[Any]]):
        kw = {"add_special_tokens": self._add_special_tokens(), "padding": True, "return_tensors": "pt"}
        if self.is_vlm:
            return self._processor(text=texts, images=images if any(images) else None, **kw)
        return self._tokenizer(texts, **kw)

    def _count_tokens(self, text: str, images: list[Any]) -> int:
        return int(self._encode([text], [images])["attention_mask"].sum())

    def _run_group(self, items: list[_Prepared]) -> list[Generation]:
        import torch

        sp = items[0].request.sampling
        sampled = sp.temperature > 0
        per_request = sp.n if sampled else 1  # greedy: one row, its output repeated n times
        rows = [it for it in items for _ in range(per_request)]
        enc = self._encode([r.text for r in rows], [r.images for r in rows])
        dtype = self._hf_model.dtype
        enc = {
            k: (v.to(self.device, dtype=dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in enc.items()
        }
        gen_config = self._generation_config(sp)
        kwargs: dict[str, Any] = {"generation_config": gen_config}
        if sp.stop:
            kwargs["tokenizer"] = self._tokenizer
        if sampled:
            from transformers import LogitsProcessorList

            seeds = [_row_seed(it.request, j) for it in items for j in range(per_request)]
            kwargs["logits_processor"] = LogitsProcessorList(
                [_make_sampler(seeds, sp.max_tokens, sp.temperature, sp.top_p, self.device)]
            )
        with torch.inference_mode():
            out = self._hf_model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        eos = _id_set(gen_config.eos_token_id) | _id_set(self._tokenizer.eos_token_id)
        pad = gen_config.pad_token_id
        decoded = [self._finish(ids, eos, pad, sp) for ids in new]
        results = []
        for k, it in enumerate(items):
            mine = decoded[k * per_request : (k + 1) * per_request]
            if not sampled:
                mine = mine * sp.n
            results.append(
                Generation(
                    outputs=tuple(Output(r.text, r.finish_reason) for r in mine),
                    prompt_tokens=it.prompt_tokens,
                    completion_tokens=sum(r.tokens for r in mine),
                )
            )
        return results

    def _generation_config(self, sp: SamplingParams):
        """The model's generation config (eos, pad, repetition penalty...) with our sampling on top.

        Decoding is always greedy for transformers: sampling happens in our seeded logits processor,
        which leaves one finite score per row. top_k is off (SamplingParams has none, as in vLLM).
        """
        gen_config = copy.deepcopy(self._hf_model.generation_config)
        gen_config.do_sample = False
        gen_config.num_beams = 1
        gen_config.num_return_sequences = 1
        gen_config.max_new_tokens = sp.max_tokens
        gen_config.max_length = None
        gen_config.min_length = 0
        for name in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
            if hasattr(gen_config, name):
                setattr(gen_config, name, None)
        gen_config.stop_strings = list(sp.stop) or None
        if gen_config.pad_token_id is None:
            gen_config.pad_token_id = self._tokenizer.pad_token_id
        if gen_config.eos_token_id is None:
            gen_config.eos_token_id = self._tokenizer.eos_token_id
        return gen_config

    def _finish(self, ids: list[int], eos: set[int], pad: int | None, sp: SamplingParams) -> _Row:
        """Cut one generated row at EOS or a stop string; say why it ended and how many tokens it took."""
        end = next((i for i, t in enumerate(ids) if t in eos), None)
        if end is not None:
            used, body = end + 1, ids[:end]
        else:
            used = len(ids)
            while used and pad is not None and ids[used - 1] == pad:
                used -= 1  # rows that ended early (stop string) are padded to the batch's length
            body = ids[:used]
        text = self._tokenizer.decode(body, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in sp.stop) if i >= 0), default=-1)
        if cut >= 0:
            return _Row(text[:cut], "stop", used)
        if end is None and used >= sp.max_tokens:
            return _Row(text, "length", used)
        return _Row(text, "stop", used)


def _is_vlm_config(config) -> bool:
    """True when the config names an image-text-to-text model (a vision config and that auto mapping)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return False
    return getattr(config, "vision_config", None) is not None or (
        config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    )


def _context_length(config, tokenizer) -> int | None:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text_config, "max_position_embeddings", None)
    if n:
        return int(n)
    m = getattr(tokenizer, "model_max_length", None)
    return int(m) if m and m < 1_000_000_000 else None


def _group_key(sp: SamplingParams) -> tuple:
    """Requests batch together when everything but the seed matches."""
    return (sp.temperature, sp.top_p, sp.max_tokens, sp.n, tuple(sp.stop))


def _id_set(x) -> set[int]:
    if x is None:
        return set()
    if isinstance(x, int):
        return {x}
    return {int(i) for i in x}


def _row_seed(req: GenerationRequest, j: int) -> int:
    """The seed of output j of a request: from its sampling seed, else from its cache key."""
    base = req.sampling.seed if req.sampling.seed is not None else f"key:{req.key}"
    digest = hashlib.sha256(f"{base}/{j}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def row_uniforms(seeds: Sequence[int], steps: int):
    """[len(seeds), steps] float32 uniforms in [0, 1): row i is the stream of seed i alone.

    One CPU `torch.Generator` per row, drawn once per batch (not per step), so a row's numbers do not
    depend on the other rows, the batch size or the device the model runs on.
    """
    import torch

    rows = [torch.rand(steps, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(rows) if rows else torch.empty(0, steps)


def sample_tokens(scores, u, temperature: float, top_p: float):
    """One token per row of `scores` [rows, vocab], by inverse-CDF sampling with the row's uniform `u` [rows].

    Temperature, then nucleus (top_p) filtering as vLLM does it: keep the most likely tokens until the
    mass before the next one exceeds top_p, renormalised. A vector op per step for the whole batch:
    no per-row draw. A token of probability 0 (a -inf logit) is never chosen: the cumulative sum does
    not rise at it, and x stays strictly below the total.
    """
    import torch

    logits = scores.float() / temperature
    if top_p < 1.0:
        # Sort once and sample in sorted order: the cumulative sum top_p needs is the CDF to invert.
        # stable=True: tied logits keep index order, so the pick never depends on the sort algorithm.
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1, stable=True)
        probs = sorted_logits.softmax(dim=-1)
        cdf = probs.cumsum(dim=-1)
        keep = (cdf - probs) <= top_p  # the mass before this token is within top_p (a prefix)
        total = torch.where(keep, cdf, torch.zeros_like(cdf)).amax(dim=-1)  # the kept mass
    else:
        order = None
        cdf = logits.softmax(dim=-1).cumsum(dim=-1)
        total = cdf[:, -1]
    x = torch.minimum(u.to(cdf.device, cdf.dtype) * total, torch.nextafter(total, torch.zeros_like(total)))
    idx = torch.searchsorted(cdf, x.unsqueeze(-1), right=True)  # first index whose CDF exceeds x
    return idx.squeeze(-1) if order is None else order.gather(-1, idx).squeeze(-1)


def _make_sampler(seeds: list[int], steps: int, temperature: float, top_p: float, device: str):
    """A logits processor that samples each row from its own seeded stream and keeps only that token.

    transformers then decodes greedily and picks it. Temperature and top_p are applied here, because
    transformers runs custom processors before its own sampling warpers. Step t of row i uses the
    uniform `row_uniforms(seeds, steps)[i, t]`, so a request's sample depends on its seed and its
    logits only, never on the batch it shares.
    """
    import torch
    from transformers import LogitsProcessor

    class SeededSampler(LogitsProcessor):
        def __init__(self) -> None:
            self.uniforms = row_uniforms(seeds, steps).to(device)
            self.step = 0

        def __call__(self, input_ids, scores):
            chosen = sample_tokens(scores, self.uniforms[:, self.step], temperature, top_p)
            self.step += 1
            out = torch.full_like(scores, float("-inf"))
            out[torch.arange(out.shape[0], device=out.device), chosen] = 0.0
            return out

    return SeededSampler()
