"""LLM-as-judge: a rubric template, any backend, a parsed score with a reason, fail-closed.

Each candidate becomes one judge request per judge model (the rubric rendered with the candidate's
instruction and response, `n` samples), sent for the whole batch at once with the template's output
schema, so a vLLM server constrains the judgement to that schema. A judgement that is not JSON, lacks a
numeric score or breaks the schema rejects the candidate (`unparsable: ...`): a judge that cannot
answer never lets a record through. Several scores (several judges, or `n` > 1) are averaged, and
their spread and pairwise agreement go into the verdict's reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import itertools
import json
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mmsynth.generators.model_paths import resolve_model_path
from mmsynth.generators.registry import backend_class, build_backend, known_backends
from mmsynth.generators.revision import resolve_revision
from mmsynth.generators.types import Backend, Generation, GenerationRequest, SamplingParams, request_key
from mmsynth.prompts import PromptTemplate, TemplateRegistry, render_template
from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.text.qa_items import clip
from mmsynth.validators.text.schema import parse_json_output
from mmsynth.validators.types import Candidate, Verdict

T = TypeVar("T")


class JudgeModelSpec(BaseModel):
    """A judge model, written like an entry of a recipe's `models:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = Field(
        description="Generator backend registry key: `transformers`, `vllm-server`, `vllm-offline`."
    )
    model: str = Field(
        description="A local model folder, a Hub id, or `tiny:lm` / `tiny:vlm` (random-weight smoke-test models)."
    )
    revision: str | None = Field(
        default=None, description="Hub revision to pin; unused for local and tiny models."
    )
    batch_size: int = Field(
        default=16, ge=1, description="Most judge requests the backend runs in one batch."
    )
    device: str = Field(
        default="auto", description="Where an in-process model runs: `auto`, `cpu`, `cuda`, ..."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="Weight and compute dtype of an in-process model."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Backend-specific settings (e.g. `base_url` for `vllm-server`)."
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in known_backends():
            raise ValueError(f"unknown backend {value!r}; known backends: {', '.join(known_backends())}")
        return value

    @model_validator(mode="after")
    def _check_options(self) -> JudgeModelSpec:
        options_model = getattr(backend_class(self.backend), "Options", None)
        if options_model is not None:
            options_model.model_validate(self.options)
        elif self.options:
            raise ValueError(f"backend {self.backend!r} takes no options")
        return self


class LLMJudgeConfig(ValidatorConfig):
    type: Literal["llm_judge"] = Field(default="llm_judge", description="Registry key: 'llm_judge'.")
    model: JudgeModelSpec | list[JudgeModelSpec] | None = Field(
        default=None,
        description="The judge: one model spec (backend, model, options, like a recipe's `models:` entry) or a list of them (scores pooled, agreement recorded). Required.",
    )
    template: str = Field(
        default="judge.rubric",
        description="Rubric template id (`id` or `id@version`); it gets `instruction`, `response`, `task`, `image` and the seed's fields.",
    )
    templates: list[str] = Field(
        default_factory=list, description="Folders of user templates searched before the built-in ones."
    )
    n: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Judgements per judge model and candidate (one request with n samples).",
    )
    temperature: float | None = Field(
        default=None, ge=0, description="Judge sampling temperature; null: the template's (judge.rubric: 0)."
    )
    top_p: float | None = Field(
        default=None, gt=0, le=1, description="Nucleus sampling mass; null: the template's."
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="Most tokens per judgement; null: the template's."
    )
    seed: int = Field(
        default=0, description="Base of the per-candidate sampling seeds (stable across reruns)."
    )
    score_field: str = Field(default="score", description="Key of the numeric score in the judgement JSON.")
    reason_field: str = Field(
        default="reason", description="Key of the judge's reason in the judgement JSON."
    )
    min_score: float = Field(default=4.0, description="Reject when the mean score is below this.")
    min_valid: int | None = Field(
        default=None,
        ge=1,
        description="Fewest parsable judgements a candidate needs; null: all of them (any unparsable judgement rejects).",
    )
    agreement_tolerance: float = Field(
        default=0.0, ge=0, description="Two scores agree when they differ by at most this."
    )
    min_agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="With two or more scores, reject when the share of agreeing score pairs is below this; null: off.",
    )
    include_image: bool = Field(
        default=False,
        description="Show the candidate's first image to the judge (needs a vision-language judge).",
    )

    @property
    def judges(self) -> list[JudgeModelSpec]:
        if self.model is None:
            return []
        return [self.model] if isinstance(self.model, JudgeModelSpec) else list(self.model)


@dataclass(frozen=True)
class Judgement:
    """One parsed judgement, or why it could not be parsed."""

    score: float | None
    reason: str = ""
    error: str | None = None


class LLMJudgeValidator(ConfiguredValidator[LLMJudgeConfig]):
    """Scores candidates with one or more judge models; rejects low scores and unparsable judgements.

    Backends are built and loaded on the first `check` (a recipe is checked without loading models) and
    freed by `close()`. `check` blocks: it runs the requests with `asyncio.run`, or on a helper thread
    when called from inside a running event loop.
    """

    config_cls = LLMJudgeConfig

    def __init__(
        self, config: LLMJudgeConfig | None = None, *, backends: list[Backend] | None = None
    ) -> None:
        """`backends`: ready judge backends, one per model spec, used instead of building them (tests)."""
        super().__init__(config)
        if not self.config.judges:
            raise ValueError(
                f"validator {self.name!r} (llm_judge) needs `model`, e.g. "
                "{backend: vllm-server, model: Qwen/Qwen2.5-7B-Instruct, options: {base_url: ...}}"
            )
        self.template: PromptTemplate = TemplateRegistry([Path(p) for p in self.config.templates]).get(
            self.config.template
        )
        schema = self.template.output_schema
        self._schema_checker = None if schema is None else validator_for(schema)(schema)
        self._backends: list[Backend] = list(backends or [])
        if backends is not None and len(self._backends) != len(self.config.judges):
            raise ValueError(
                f"{len(self._backends)} backends given for {len(self.config.judges)} judge models"
            )

    # -- lifecycle --------------------------------------------------------------------------------

    def backends(self) -> list[Backend]:
        """The judge backends, built and loaded on first use."""
        if not self._backends:
            built = []
            try:
                for spec in self.config.judges:
                    path = resolve_model_path(spec.model)
                    backend = build_backend(
                        spec.backend,
                        model=spec.model,
                        path=path,
                        revision=resolve_revision(path, spec.revision),
                        batch_size=spec.batch_size,
                        device=spec.device,
                        dtype=spec.dtype,
                        **spec.options,
                    )
                    built.append(backend)
                    backend.load()
            except BaseException:
                for b in built:
                    b.close()
                raise
            self._backends = built
        return self._backends

    def close(self) -> None:
        """Free the judge models and connections; a later `check` loads them again."""
        backends, self._backends = self._backends, []
        for b in backends:
            b.close()

    # -- checking ---------------------------------------------------------------------------------

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        if not candidates:
            return []
        backends = self.backends()
        prepared = [self._request(c, b, k) for c in candidates for k, b in enumerate(backends)]
        per_judge: list[list[GenerationRequest]] = [[] for _ in backends]
        for k, p in enumerate(prepared):
            if isinstance(p, GenerationRequest):
                per_judge[k % len(backends)].append(p)

        async def ask_all() -> list[list[Generation]]:
            return list(
                await asyncio.gather(
                    *(b.generate(reqs) for b, reqs in zip(backends, per_judge, strict=True) if reqs)
                )
            )

        answers = iter(run_blocking(ask_all()))
        gens: dict[int, list[Generation]] = {k: next(answers) for k, reqs in enumerate(per_judge) if reqs}
        got = {k: iter(v) for k, v in gens.items()}
        verdicts = []
        for i, _ in enumerate(candidates):
            judgements: list[Judgement] = []
            for k in range(len(backends)):
                p = prepared[i * len(backends) + k]
                if isinstance(p, str):
                    judgements.extend([Judgement(None, error=p)] * self.config.n)
                    continue
                judgements.extend(self._judgements(next(got[k])))
            verdicts.append(self.decide(judgements))
        return verdicts

    def _request(self, c: Candidate, backend: Backend, judge: int) -> GenerationRequest | str:
        """The judge request for `c`, or the reason it cannot be rendered."""
        cfg = self.config
        variables: dict[str, Any] = dict(c.seed)
        variables.update(
            instruction=c.prompt_text.replace("<image>", "").strip(),
            response=c.text,
            task=c.task,
            image=c.images[0] if cfg.include_image and c.images else None,
        )
        try:
            prompt = render_template(self.template, variables)
        except Exception as e:  # a seed without a field the user's rubric reads: this record fails closed
            return f"render: {e}"
        defaults = self.template.sampling
        sampling = SamplingParams(
            temperature=cfg.temperature if cfg.temperature is not None else defaults.get("temperature", 0.0),
            top_p=cfg.top_p if cfg.top_p is not None else defaults.get("top_p", 1.0),
            max_tokens=cfg.max_tokens if cfg.max_tokens is not None else defaults.get("max_tokens", 256),
            n=cfg.n,
            seed=_derive_seed(cfg.seed, c.id, judge),
        )
        key = request_key(prompt, sampling, backend.model, backend.revision, backend.name)
        return GenerationRequest(prompt, sampling, key)

    def _judgements(self, gen: Generation) -> list[Judgement]:
        if gen.error is not None:
            return [Judgement(None, error=f"request failed: {gen.error}")] * self.config.n
        out = [self.parse(o.text) for o in gen.outputs]
        # A backend that returned fewer samples than asked: the missing ones count as unparsable.
        out += [Judgement(None, error="no output")] * (self.config.n - len(out))
        return out

    def parse(self, text: str) -> Judgement:
        """One judge output as a score and reason; `error` says why it is not a usable judgement."""
        cfg = self.config
        value, error = parse_json_output(text)
        if error is not None:
            return Judgement(None, error=f"not JSON: {error}")
        if not isinstance(value, dict):
            return Judgement(None, error=f"not a JSON object: {clip(json.dumps(value), 60)}")
        score = value.get(cfg.score_field)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            return Judgement(None, error=f"no numeric {cfg.score_field!r}: {clip(json.dumps(value), 60)}")
        if self._schema_checker is not None:
            err = best_match(self._schema_checker.iter_errors(value))
            if err is not None:
                return Judgement(None, error=f"schema: {err.json_path}: {clip(err.message, 120)}")
        reason = value.get(cfg.reason_field)
        return Judgement(float(score), reason if isinstance(reason, str) else "")

    def decide(self, judgements: list[Judgement]) -> Verdict:
        """The verdict from one candidate's judgements: fail closed, then threshold, then agreement."""
        cfg = self.config
        scores = [j.score for j in judgements if j.score is not None]
        failed = [j for j in judgements if j.score is None]
        needed = len(judgements) if cfg.min_valid is None else min(cfg.min_valid, len(judgements))
        if len(scores) < needed or not scores:
            return Verdict.reject(
                self.name,
                f"unparsable: {len(failed)} of {len(judgements)} judgements: {clip(failed[0].error or '', 160)}",
            )
        mean = sum(scores) / len(scores)
        summary = f"mean {mean:.2f} of {len(scores)}"
        agreement = None
        if len(scores) > 1:
            pairs = list(itertools.combinations(scores, 2))
            agreement = sum(abs(a - b) <= cfg.agreement_tolerance for a, b in pairs) / len(pairs)
            summary += f", spread {max(scores) - min(scores):g}, agreement {agreement:.0%}"
        said = next((j.reason for j in judgements if j.score is not None and j.reason), "")
        if mean < cfg.min_score:
            why = f": {clip(said, 160)}" if said else ""
            return Verdict.reject(self.name, f"low score: {summary} < {cfg.min_score:g}{why}", mean)
        if cfg.min_agreement is not None and agreement is not None and agreement < cfg.min_agreement:
            return Verdict.reject(
                self.name, f"disagreement: {summary} (min agreement {cfg.min_agreement:.0%})", mean
            )
        # A kept verdict carries the summary too, so the agreement of every judged record is on its row.
        return Verdict(self.name, True, summary if len(scores) > 1 else None, mean)


def _derive_seed(base: int, candidate_id: str, judge: int) -> int:
    h = hashlib.sha256(f"judge:{base}:{judge}:{candidate_id}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from synchronous code: `asyncio.run`, or a helper thread when this
    thread already runs an event loop (asyncio.run refuses to nest)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mmsynth-judge") as pool:
        return pool.submit(asyncio.run, coro).result()
