"""The dispatcher: batches cut in request order, duplicates sent once, per-request failures kept with
their request, group commits, and every failure (backend, cache, log) reaching the waiting futures."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest

from mmsynth.factory.engine.cache import ResponseCache
from mmsynth.factory.engine.dispatch import BackendFailure, Dispatcher
from mmsynth.generators.types import Generation, GenerationRequest, Output, SamplingParams, request_key
from mmsynth.prompts.messages import Message, RenderedPrompt, TextPart


def req(text: str) -> GenerationRequest:
    prompt = RenderedPrompt(
        messages=(Message("user", (TextPart(text),)),), template_id="t", template_version=1, template_hash="0"
    )
    sp = SamplingParams()
    return GenerationRequest(prompt, sp, request_key(prompt, sp, "m", "rev", "echo"))


class EchoBackend:
    """A backend of our own protocol: answers each prompt with its text; "fail:" prompts fail alone,
    a "raise" prompt fails the batch. `delay` holds every batch that long."""

    name = "echo"
    model = "m"
    revision = "rev"

    def __init__(self, batch_size: int = 2, max_concurrency: int = 4, delay: float = 0.0):
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.delay = delay
        self.batches: list[list[str]] = []

    async def generate(self, requests):
        texts = [r.prompt.messages[0].text for r in requests]
        self.batches.append(texts)
        await asyncio.sleep(self.delay)
        if any(t.startswith("raise") for t in texts):
            raise RuntimeError("server gone")
        return [
            Generation.failed(t)
            if t.startswith("fail:")
            else Generation((Output(f"echo {t}", "stop"),), 1, 1)
            for t in texts
        ]

    def close(self):
        pass


class CountingCache(ResponseCache):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.commits: list[int] = []

    def put_many(self, items):
        items = list(items)
        self.commits.append(len(items))
        return super().put_many(items)


def run(coro, timeout=10):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def answers(make, requests):
    """Submit `requests` to the dispatcher `make()` builds (on the running loop) and await every answer."""
    dispatcher = make()
    futures = dispatcher.submit(requests)
    try:
        return {k: (await f)[0] for k, f in futures.items()}
    finally:
        await dispatcher.close()


def test_batches_are_cut_in_request_order(tmp_path):
    backend = EchoBackend(batch_size=3, max_concurrency=1)
    cache = ResponseCache(tmp_path / "c.sqlite")

    async def go():
        return await answers(lambda: Dispatcher(backend, cache), [req(f"q{i}") for i in range(7)])

    got = run(go())
    assert backend.batches == [["q0", "q1", "q2"], ["q3", "q4", "q5"], ["q6"]]
    assert [g.outputs[0].text for g in got.values()] == [f"echo q{i}" for i in range(7)]
    assert len(cache) == 7


def test_duplicate_keys_in_one_batch_are_sent_once(tmp_path):
    backend = EchoBackend(batch_size=4)
    cache = ResponseCache(tmp_path / "c.sqlite")

    async def go():
        d = Dispatcher(backend, cache)
        futures = d.submit([req("a"), req("b"), req("a"), req("c"), req("b")])
        assert len(futures) == 3
        out = [(await f)[0].outputs[0].text for f in futures.values()]
        await d.close()
        return out

    assert run(go()) == ["echo a", "echo b", "echo c"]
    assert backend.batches == [["a", "b", "c"]]


def test_a_failed_request_stays_with_its_request_and_is_cached(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    requests = [req("ok1"), req("fail:too long"), req("ok2")]

    got = run(answers(lambda: Dispatcher(EchoBackend(batch_size=3), cache), requests))
    assert [g.error for g in got.values()] == [None, "fail:too long", None]
    assert cache.get_many([requests[1].key])[requests[1].key][0].error == "fail:too long"


def test_answers_arriving_together_share_one_commit(tmp_path):
    backend = EchoBackend(batch_size=1, max_concurrency=32, delay=0.05)
    cache = CountingCache(tmp_path / "c.sqlite")
    log = tmp_path / "requests.jsonl"

    run(answers(lambda: Dispatcher(backend, cache, log), [req(f"q{i}") for i in range(32)]))
    assert sum(cache.commits) == 32
    assert len(cache.commits) < 8  # 32 batches answered at about the same time: a few group commits
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(e["event"] == "sent" for e in events) == sum(e["event"] == "answered" for e in events) == 32


def test_a_backend_exception_reaches_every_future_of_its_batch_once_prefixed(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")

    async def go():
        d = Dispatcher(EchoBackend(batch_size=2), cache)
        futures = list(d.submit([req("a"), req("raise"), req("c")]).values())
        results = await asyncio.gather(*futures, return_exceptions=True)
        await d.close()
        return results

    a, b, c = run(go())
    assert isinstance(a, BackendFailure) and a is b
    assert str(a) == "echo (m): server gone"
    assert c[0].outputs[0].text == "echo c"  # the other batch is unaffected


def test_a_cache_write_failure_reaches_the_futures_instead_of_hanging(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.close()  # every write now raises, like a full disk

    async def go():
        d = Dispatcher(EchoBackend(batch_size=2), cache)
        futures = list(d.submit([req("a"), req("b"), req("c")]).values())
        results = await asyncio.gather(*futures, return_exceptions=True)
        await d.close()
        return results

    results = run(go(), timeout=5)  # before the fix the futures never resolved: a hang
    assert all(isinstance(r, BackendFailure) for r in results)
    assert "cannot store the answers of echo (m)" in str(results[0])


def test_a_log_write_failure_reaches_the_futures(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    log = tmp_path / "no-such-folder" / "requests.jsonl"

    async def go():
        d = Dispatcher(EchoBackend(), cache, log)
        futures = list(d.submit([req("a")]).values())
        results = await asyncio.gather(*futures, return_exceptions=True)
        await d.close()
        return results

    [r] = run(go(), timeout=5)
    assert isinstance(r, BackendFailure) and "No such file" in str(r)


def test_unawaited_failed_futures_print_nothing(tmp_path, capsys):
    cache = ResponseCache(tmp_path / "c.sqlite")
    reported = []

    async def go():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx["message"]))
        d = Dispatcher(EchoBackend(batch_size=1, max_concurrency=8), cache)
        futures = list(d.submit([req("raise")] + [req(f"raise {i}") for i in range(4)]).values())
        with pytest.raises(BackendFailure):
            await futures[0]  # the engine awaits one and stops the run
        await asyncio.sleep(0.05)
        await d.close()
        del futures
        gc.collect()

    backend_batches = run(go())
    del backend_batches
    gc.collect()
    assert not [m for m in reported if "never retrieved" in m]
