"""llm_judge against a REAL vLLM server on the tiny random LM: the rubric's output schema goes out as
structured output, so even random weights give a parsable score and reason."""

from __future__ import annotations

import pytest

from mmsynth.validators import build_validator
from mmsynth.validators.types import Candidate

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


# A short rubric whose schema bounds the reason: random weights then always close the JSON within
# max_tokens (with judge.rubric's unbounded reason they often run to the limit: truncated, fail closed).
RUBRIC = """---
id: judge.short
version: 1
task: judge
inputs: {instruction: text, response: text}
output_schema:
  type: object
  properties:
    reason: {type: string, maxLength: 16}
    score: {type: integer, minimum: 1, maximum: 5}
  required: [reason, score]
  additionalProperties: false
sampling: {temperature: 0.0, max_tokens: 48}
---
{% block user %}Grade 1-5.
Instruction: {{ instruction }}
Response: {{ response }}
Return {"reason": ..., "score": ...}.{% endblock %}
"""


def test_guided_json_makes_the_random_judge_parsable(lm_pool, tiny_lm, tmp_path):
    (tmp_path / "short.j2").write_text(RUBRIC)
    v = build_validator(
        {
            "type": "llm_judge",
            "template": "judge.short",
            "templates": [str(tmp_path)],
            "model": {
                "backend": "vllm-server",
                "model": str(tiny_lm),
                "options": {"base_url": lm_pool.urls, "json_repair_attempts": 0},
            },
            "n": 2,
            "temperature": 1.0,
            "min_score": 1,
        }
    )
    candidates = [
        Candidate(id=f"c{i}", task="captions", text=f"A red circle number {i}.", finish_reason="stop",
                  prompt_text="<image>Describe the image.")
        for i in range(6)
    ]  # fmt: skip
    try:
        verdicts = v.check(candidates)
    finally:
        v.close()
    parsed = [x for x in verdicts if not (x.reason or "").startswith("unparsable")]
    # The grammar forces {"reason": "<= 16 chars", "score": 1..5}.
    assert len(parsed) >= 5, [x.reason for x in verdicts]
    for x in parsed:
        assert x.keep and 1 <= x.score <= 5
        assert x.reason.startswith("mean ") and "agreement" in x.reason
