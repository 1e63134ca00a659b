"""llm_judge: parsing, threshold, fail-closed and agreement through a backend double; the real path
through the transformers backend on a tiny random LM (gibberish -> fail closed)."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from pydantic import ValidationError

from mmsynth.generators.types import Generation, GenerationRequest, Output
from mmsynth.prompts import TemplateError
from mmsynth.validators import build_validator
from mmsynth.validators.judge.llm import LLMJudgeConfig, LLMJudgeValidator

SPEC = {"backend": "transformers", "model": "unused-by-the-double"}


class FixedJudge:
    """A Backend double: answers each request with the outputs `answer(response_text)` gives."""

    name = "double"
    model = "double"
    revision = "0"
    batch_size = 64
    max_concurrency = 1

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[list[GenerationRequest]] = []
        self.closed = False

    async def generate(self, requests):
        self.calls.append(list(requests))
        out = []
        for r in requests:
            user = r.prompt.messages[-1].text
            response = user.split("Response:\n<<<\n", 1)[1].split("\n>>>", 1)[0]
            got = self.answer(response)
            if isinstance(got, Generation):
                out.append(got)
            else:
                texts = got if isinstance(got, list) else [got] * r.sampling.n
                out.append(Generation(tuple(Output(t, "stop") for t in texts)))
        return out

    def close(self):
        self.closed = True


def judgement(score, reason="ok"):
    return json.dumps({"reason": reason, "score": score})


def judge(answer, *, judges=1, **settings):
    backends = [FixedJudge(answer) for _ in range(judges)]
    model = SPEC if judges == 1 else [SPEC] * judges
    v = LLMJudgeValidator(LLMJudgeConfig(model=model, **settings), backends=backends)
    return v, backends


def by_response(table):
    return lambda response: table[response]


def test_scores_threshold_and_fail_closed(make_candidate):
    table = {
        "great": judgement(5, "Correct and complete."),
        "weak": judgement(2, "Mostly wrong about the colour."),
        "garbled": "the cat sat on",
        "off scale": judgement(9),
        "no score": json.dumps({"reason": "fine"}),
        "failed": Generation.failed("context too long"),
    }
    v, (backend,) = judge(by_response(table))
    got = v.check([make_candidate(t, id=t, prompt_text="<image>Describe it.") for t in table])
    assert [x.keep for x in got] == [True, False, False, False, False, False]
    assert got[0].score == 5.0 and got[0].reason is None
    assert got[1].reason == "low score: mean 2.00 of 1 < 4: Mostly wrong about the colour."
    assert got[1].score == 2.0
    assert got[2].reason.startswith("unparsable: 1 of 1 judgements: not JSON: ")
    assert (
        got[3].reason == "unparsable: 1 of 1 judgements: schema: $.score: 9 is greater than the maximum of 5"
    )
    assert got[4].reason.startswith("unparsable: 1 of 1 judgements: no numeric 'score'")
    assert got[5].reason == "unparsable: 1 of 1 judgements: request failed: context too long"
    # One call for the whole batch, with the rubric's schema for guided decoding and the template's sampling.
    assert len(backend.calls) == 1 and len(backend.calls[0]) == 6
    req = backend.calls[0][0]
    assert req.output_schema["required"] == ["reason", "score"]
    assert req.sampling.temperature == 0.0 and req.sampling.n == 1
    assert "Describe it." in req.prompt.messages[-1].text and "<image>" not in req.prompt.messages[-1].text
    # Seeds are stable per candidate across calls (reruns judge the same way).
    v.check([make_candidate("great", id="great")])
    assert backend.calls[1][0].sampling.seed == req.sampling.seed


def test_samples_agreement_and_min_valid(make_candidate):
    v, _ = judge(lambda r: [judgement(5), judgement(5), judgement(3)], n=3, temperature=0.8)
    kept = v.check([make_candidate("x")])[0]
    assert kept.keep and kept.score == pytest.approx(13 / 3)
    assert kept.reason == "mean 4.33 of 3, spread 2, agreement 33%"
    strict, _ = judge(lambda r: [judgement(5), judgement(5), judgement(3)], n=3, min_agreement=0.5)
    got = strict.check([make_candidate("x")])[0]
    assert (
        not got.keep
        and got.reason == "disagreement: mean 4.33 of 3, spread 2, agreement 33% (min agreement 50%)"
    )
    tolerant, _ = judge(lambda r: [judgement(5), judgement(4), judgement(4)], n=3, agreement_tolerance=1)
    assert tolerant.check([make_candidate("x")])[0].reason == "mean 4.33 of 3, spread 1, agreement 100%"

    one_bad = lambda r: [judgement(5), "{", judgement(4)]  # noqa: E731
    closed, _ = judge(one_bad, n=3)
    got = closed.check([make_candidate("x")])[0]
    assert not got.keep and got.reason.startswith("unparsable: 1 of 3 judgements: not JSON: truncated")
    lenient, _ = judge(one_bad, n=3, min_valid=2)
    assert lenient.check([make_candidate("x")])[0].keep


def test_several_judges_are_pooled(make_candidate):
    scores = iter([5, 3])
    v, backends = judge(lambda r: judgement(next(scores)), judges=2, min_score=4.5)
    got = v.check([make_candidate("x")])[0]
    assert not got.keep and got.reason.startswith("low score: mean 4.00 of 2, spread 2, agreement 0% < 4.5")
    assert all(len(b.calls) == 1 for b in backends)
    v.close()
    assert all(b.closed for b in backends)


def test_check_works_inside_a_running_event_loop(make_candidate):
    v, _ = judge(lambda r: judgement(4))

    async def from_a_loop():
        return v.check([make_candidate("x")])

    assert asyncio.run(from_a_loop())[0].keep


def test_config_errors():
    with pytest.raises(ValueError, match="needs `model`"):
        build_validator({"type": "llm_judge"})
    with pytest.raises(ValidationError, match="unknown backend 'transformer'"):
        build_validator({"type": "llm_judge", "model": {"backend": "transformer", "model": "x"}})
    with pytest.raises(ValidationError, match="base_url"):
        build_validator({"type": "llm_judge", "model": {"backend": "vllm-server", "model": "x"}})
    with pytest.raises(TemplateError, match=r"unknown template 'judge\.rubrik'"):
        build_validator({"type": "llm_judge", "model": SPEC, "template": "judge.rubrik"})


def test_user_rubric_template(tmp_path, make_candidate):
    (tmp_path / "strict.j2").write_text(
        "---\nid: judge.strict\nversion: 1\ntask: judge\ninputs:\n  response: text\n  description: text\n"
        "output_schema:\n  type: object\n  properties:\n    score: {type: number}\n  required: [score]\n"
        "sampling: {temperature: 0.0, max_tokens: 64}\n---\n"
        "{% block user %}Scene: {{ description }}\nResponse:\n<<<\n{{ response }}\n>>>\nScore it.{% endblock %}\n"
    )
    backend = FixedJudge(lambda r: json.dumps({"score": 4.5}))
    cfg = LLMJudgeConfig(model=SPEC, template="judge.strict", templates=[str(tmp_path)])
    v = LLMJudgeValidator(cfg, backends=[backend])
    with_scene = make_candidate("x", seed={"description": "a red circle"})
    without = make_candidate("y", seed={})
    got = v.check([with_scene, without])
    assert got[0].keep and got[0].score == 4.5
    assert "Scene: a red circle" in backend.calls[0][0].prompt.messages[-1].text
    assert not got[1].keep and got[1].reason.startswith("unparsable: 1 of 1 judgements: render: ")


def test_real_tiny_lm_through_transformers_fails_closed(make_candidate, tiny_lm, tmp_path, monkeypatch):
    """The real path: `tiny:lm` resolved under MMSYNTH_HOME, built through the backend registry and
    loaded; its random text is never a judgement, so every candidate is rejected as unparsable."""
    # The session's tiny LM, placed where `tiny:lm` resolves, so it is not built a second time.
    shutil.copytree(tiny_lm, tmp_path / "tiny-models" / "lm")
    monkeypatch.setenv("MMSYNTH_HOME", str(tmp_path))
    v = build_validator(
        {
            "type": "llm_judge",
            "model": {"backend": "transformers", "model": "tiny:lm", "device": "cpu"},
            "max_tokens": 12,
            "n": 2,
            "temperature": 1.0,
        }
    )
    try:
        got = v.check(
            [make_candidate("A red circle.", id=f"c{i}", prompt_text="Describe.") for i in range(3)]
        )
        backend = v.backends()[0]
        assert backend.name == "transformers" and backend.revision.startswith("local-")
        assert backend.path == str(tmp_path / "tiny-models" / "lm")
    finally:
        v.close()
    assert [x.keep for x in got] == [False, False, False]
    assert all(x.reason.startswith("unparsable: 2 of 2 judgements: ") for x in got)
