"""The live counters (meter.py) and what the panel and the plain line make of them (progress.py).

Fast: a backend of our own protocol, records as small values, the panel rendered into a recording console.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from rich.console import Console

from mmsynth.factory.engine.cache import ResponseCache
from mmsynth.factory.engine.chunks import Progress
from mmsynth.factory.engine.dispatch import Dispatcher
from mmsynth.factory.engine.meter import MeterSnapshot, RunMeter
from mmsynth.factory.engine.progress import RunShape, eta_seconds, plain_line, render_panel
from mmsynth.generators.types import Generation, GenerationRequest, Output, SamplingParams, request_key
from mmsynth.prompts.messages import Message, RenderedPrompt, TextPart


def req(text: str) -> GenerationRequest:
    prompt = RenderedPrompt(
        messages=(Message("user", (TextPart(text),)),), template_id="t", template_version=1, template_hash="0"
    )
    sp = SamplingParams()
    return GenerationRequest(prompt, sp, request_key(prompt, sp, "m", "rev", "held"))


class HeldBackend:
    """Answers once `release` is set; "fail:" prompts are answered with an error, "raise" fails the batch."""

    name = "held"
    model = "m"
    revision = "rev"
    batch_size = 2
    max_concurrency = 3

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def generate(self, requests):
        await self.release.wait()
        texts = [r.prompt.messages[0].text for r in requests]
        if "raise" in texts:
            raise RuntimeError("server gone")
        return [
            Generation.failed(t) if t.startswith("fail:") else Generation((Output("ok", "stop"),), 10, 4)
            for t in texts
        ]

    def close(self):
        pass


class ServerLike(HeldBackend):
    """A backend that keeps its own numbers, as the vllm-server backend does."""

    name = "vllm-server"
    in_flight = 5
    concurrency = 64
    stats = {"retries": 3}  # noqa: RUF012


@dataclass
class Done:
    task: str
    accepted: bool
    reject_reason: str | None = None


def test_the_dispatcher_counts_requests_in_flight_tokens_and_errors(tmp_path):
    async def go():
        meter = RunMeter()
        backend = HeldBackend()
        cache = ResponseCache(tmp_path / "c.sqlite")
        d = Dispatcher(backend, cache, meter=meter.model("vlm", backend))
        futures = d.submit([req("a"), req("b"), req("fail:x")])
        await asyncio.sleep(0.05)  # the workers took both batches and wait in generate
        (held,) = meter.snapshot().models
        assert (held.in_flight, held.sent, held.answered, held.limit) == (3, 3, 0, 2 * 3)
        backend.release.set()
        await asyncio.gather(*futures.values())
        (done,) = meter.snapshot().models
        assert (done.in_flight, done.answered, done.errors) == (0, 3, 1)
        assert (done.prompt_tokens, done.completion_tokens) == (20, 8)  # the failed request has none
        assert (done.name, done.backend, done.model, done.retries) == ("vlm", "held", "m", 0)
        # A batch whose backend call fails: its requests are errors, nothing stays in flight.
        broken = d.submit([req("raise")])
        await asyncio.gather(*broken.values(), return_exceptions=True)
        (after,) = meter.snapshot().models
        assert (after.in_flight, after.errors, after.sent) == (0, 2, 4)
        await d.close()
        cache.close()

    asyncio.run(go())


def test_a_backend_that_keeps_its_own_numbers_is_read_for_them():
    meter = RunMeter()
    meter.model("served", ServerLike())
    (row,) = meter.snapshot().models
    assert (row.in_flight, row.limit, row.retries) == (5, 64, 3)


def test_records_per_task_with_the_top_reason_grouped_as_stats_json_groups_it():
    meter = RunMeter()
    meter.add_records(
        [
            Done("captions", True),
            Done("captions", False, "heuristics: too short: 2 < 8 chars"),
            Done("captions", False, "heuristics: too short: 3 < 8 chars"),
            Done("captions", False, "json_schema: not JSON"),
            Done("qa", False, "json_schema: not JSON: line 1"),
        ]
    )
    rows = {t.name: t for t in meter.snapshot().tasks}
    cap, qa = rows["captions"], rows["qa"]
    assert (cap.records, cap.accepted, cap.rejected) == (4, 1, 3)
    assert (cap.top_reason, cap.top_count) == ("heuristics: too short", 2)
    assert (qa.top_reason, qa.top_count) == ("json_schema: not JSON", 1)


def test_rates_for_stats_json_stop_with_the_session():
    meter = RunMeter()
    meter.model("vlm", HeldBackend()).finish([Generation((Output("x", "stop"),), 100, 50)])
    meter.stop()
    first = meter.model_rates()
    assert meter.model_rates() == first  # stopped: the elapsed time no longer grows
    rates = first["vlm"]
    assert set(rates) == {
        "requests_sent",
        "errors",
        "retries",
        "prompt_tokens_per_second",
        "completion_tokens_per_second",
    }
    # Both are rounded to 3 decimals: twice the rounded one may be off by 0.001.
    assert rates["prompt_tokens_per_second"] == pytest.approx(
        2 * rates["completion_tokens_per_second"], abs=0.002
    )


def progress_with_counts() -> Progress:
    p = Progress(requests_total=12, requests_done=6, accepted=3, rejected=5, chunks_done=1)
    model = p.meter.model("vlm", HeldBackend())
    model.start(1)
    model.finish([Generation((Output("x", "stop"),), 100, 50)])
    p.meter.add_records([Done("captions", True), Done("captions", False, "heuristics: charset: 9%")])
    return p


def test_the_panel_has_a_row_per_task_and_per_model():
    p = progress_with_counts()
    console = Console(record=True, width=150, force_terminal=True)
    console.print(render_panel(p, p.meter.snapshot(), RunShape("demo", chunks_total=3, requests_total=12)))
    text = console.export_text()
    assert "mmsynth run demo" in text and "chunks 1/3" in text and "requests 6/12" in text
    for column in ("records/s", "accepted", "top reject reason", "in flight", "limit", "tokens/s in"):
        assert column in text
    assert "tokens/s out" in text and "errors" in text and "retries" in text
    (task_row,) = [line for line in text.splitlines() if " captions " in line]
    assert "50%" in task_row and "heuristics: charset (1)" in task_row
    (model_row,) = [line for line in text.splitlines() if " vlm " in line]
    assert "held" in model_row


def test_the_plain_line_says_the_same_without_escape_codes():
    p = progress_with_counts()
    line = plain_line(p, p.meter.snapshot(), RunShape("demo", chunks_total=3, requests_total=12))
    assert line.startswith("[mmsynth] requests 6/12  accepted 3  rejected 5  failed 0  chunks 1/3")
    assert "task captions: 2 records" in line and "50% accepted, top reject heuristics: charset (1)" in line
    assert "model vlm: 0/6 in flight" in line and "0 errors, 0 retries" in line
    assert "\x1b" not in line


def test_eta_from_chunks_then_from_requests_else_unknown():
    snap = MeterSnapshot(elapsed=10.0, tasks=[], models=[])
    shape = RunShape(chunks_total=4, requests_total=40)
    assert eta_seconds(Progress(chunks_done=1), snap, shape) == 30.0
    assert eta_seconds(Progress(requests_done=10), snap, shape) == 30.0
    assert eta_seconds(Progress(), snap, shape) is None
