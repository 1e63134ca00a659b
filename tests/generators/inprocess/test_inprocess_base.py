"""The in-process backend base: lazy, idempotent, locked loading; close and reload; the worker thread.

Fast: the "model" here is a counter, so the base's own logic is what is tested (the real backends'
loads are tested in test_transformers_backend.py and test_diffusers_backend.py).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mmsynth.generators.inprocess.base import InProcessBackend, load_revision, pick_dtype
from mmsynth.generators.types import Backend, Generation, GenerationRequest, Output, SamplingParams
from mmsynth.prompts.messages import Message, RenderedPrompt, TextPart

SHA = "0123456789abcdef0123456789abcdef01234567"


class Counting(InProcessBackend):
    """Loads a counter; answers each request with its prompt text and the thread it ran in."""

    name = "counting"

    def __init__(self, **kw) -> None:
        super().__init__("counting", kw.pop("path", None), kw.pop("revision", SHA), 4, "cpu", "auto")
        self.model_obj: dict | None = None
        self.loads = 0
        self.unloads = 0

    def _is_loaded(self) -> bool:
        return self.model_obj is not None

    def _load(self) -> None:
        time.sleep(0.05)  # long enough for a second thread to arrive while this one loads
        self.loads += 1
        self.model_obj = {"thread": threading.current_thread().name}
        self.device, self.dtype = "cpu", pick_dtype(self.dtype_arg, "cpu")

    def _unload(self) -> None:
        if self.model_obj is not None:
            self.unloads += 1
        self.model_obj = None

    def _generate(self, requests):
        assert self._lock.locked()  # the base holds the lock around every use of the model
        name = threading.current_thread().name
        return [
            Generation((Output(r.prompt.messages[0].text, "stop", params={"thread": name}),))
            for r in requests
        ]


def request(text: str) -> GenerationRequest:
    prompt = RenderedPrompt((Message("user", (TextPart(text),)),), "t", 1, "0")
    return GenerationRequest(prompt, SamplingParams(), f"key-{text}")


def test_loads_once_on_first_use_even_from_two_threads():
    b = Counting()
    assert isinstance(b, Backend) and (b.device, b.dtype, b.loads) == (None, None, 0)  # construction is cheap
    threads = [threading.Thread(target=b.load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.load()
    assert b.loads == 1 and (b.device, b.dtype) == ("cpu", "float32")


def test_close_frees_and_the_next_generate_loads_again():
    b = Counting()
    [gen] = b.generate_sync([request("a")])
    assert gen.outputs[0].text == "a" and b.loads == 1
    b.close()
    assert b.model_obj is None and b.unloads == 1
    b.close()  # closing a closed backend is harmless
    assert b.unloads == 1
    assert [g.outputs[0].text for g in b.generate_sync([request("b"), request("c")])] == ["b", "c"]
    assert b.loads == 2


def test_generate_runs_the_model_in_a_worker_thread():
    b = Counting()
    gens = asyncio.run(b.generate([request("x"), request("y")]))
    assert [g.outputs[0].text for g in gens] == ["x", "y"]
    assert gens[0].outputs[0].params["thread"] != threading.main_thread().name


def test_settings_are_checked_when_built():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        InProcessBackend("m", None, SHA, 0, "cpu", "auto")
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        InProcessBackend("m", None, SHA, 1, "cpu", "fp8")
    assert pick_dtype("bf16", "cpu") == "bfloat16" and pick_dtype("half", "cuda") == "float16"


def test_what_is_recorded_and_what_is_loaded(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    folder = Counting(path=str(tmp_path), revision="main")
    assert folder.revision.startswith("local-") and folder._load_revision is None  # a folder loads as it is
    pinned = Counting(path="org/model", revision=SHA)
    assert pinned.revision == SHA and pinned._load_revision == SHA
    # A resolved revision handed in by the factory is recorded as given, not looked up again.
    assert (
        Counting(path=str(tmp_path), revision="local-feedfacefeedface").revision == "local-feedfacefeedface"
    )
    assert load_revision("org/model", "unknown", "v1.0") == "v1.0"  # no commit known: load what was asked
