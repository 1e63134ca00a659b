"""Real vLLM servers for the `vllm` tests: one on the tiny LM, one on the tiny VLM, started once per
session (together, to overlap their ~20-90 s start-ups) and shared by every test that needs them."""

from __future__ import annotations

import threading
import time

import pytest

from mmsynth.generators.openai.launch import ServerPool, tagged_pids
from mmsynth.generators.types import GenerationRequest, SamplingParams, request_key
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import ImagePart, Message, RenderedPrompt, TextPart

# Fast start on a CPU: no compilation, engine in the API process, a 1 GiB KV cache.
ENGINE_ARGS = {"max-model-len": 512, "dtype": "float32", "enforce-eager": True}
ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
# xgrammar without whitespace: valid JSON even from a random model (else it emits spaces until max_tokens)
STRICT_JSON = {"backend": "xgrammar", "disable_any_whitespace": True}


@pytest.fixture(scope="session")
def vllm_pools(vllm_python, tiny_lm, tiny_vlm, tmp_path_factory):
    """{"lm": ServerPool, "vlm": ServerPool}, both answering /health; stopped (and checked) at the end."""
    logs = tmp_path_factory.mktemp("vllm_logs")
    pools = {
        "lm": ServerPool(
            tiny_lm,
            python=vllm_python,
            engine_args={**ENGINE_ARGS, "structured-outputs-config": STRICT_JSON},
            env=ENV,
            startup_timeout_s=400,
            log_dir=logs / "lm",
        ),
        "vlm": ServerPool(
            tiny_vlm,
            python=vllm_python,
            engine_args={**ENGINE_ARGS, "limit-mm-per-prompt": {"image": 1}},
            env=ENV,
            startup_timeout_s=400,
            log_dir=logs / "vlm",
        ),
    }
    errors: dict[str, BaseException] = {}

    def start(name: str, pool: ServerPool) -> None:
        t0 = time.monotonic()
        try:
            pool.start()
        except BaseException as e:
            errors[name] = e
        pool.started_in_s = round(time.monotonic() - t0, 1)

    threads = [threading.Thread(target=start, args=item) for item in pools.items()]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            name, err = next(iter(errors.items()))
            pytest.fail(f"the {name} vLLM server did not start: {err}")
        yield pools
    finally:
        for pool in pools.values():
            pool.stop()
    leftover = {name: tagged_pids(p.tag) for name, p in pools.items() if tagged_pids(p.tag)}
    assert not leftover, f"server processes left after stop(): {leftover}"


@pytest.fixture(scope="session")
def lm_pool(vllm_pools) -> ServerPool:
    return vllm_pools["lm"]


@pytest.fixture(scope="session")
def vlm_pool(vllm_pools) -> ServerPool:
    return vllm_pools["vlm"]


@pytest.fixture(scope="session")
def make_request():
    """`make_request(*parts, system=None, **sampling)`: a request whose user message has `parts` in order."""

    def make(*parts: str | ImageRef, system: str | None = None, **sampling) -> GenerationRequest:
        user = Message("user", tuple(ImagePart(p) if isinstance(p, ImageRef) else TextPart(p) for p in parts))
        messages = ((Message("system", (TextPart(system),)),) if system else ()) + (user,)
        prompt = RenderedPrompt(messages=messages, template_id="test", template_version=1, template_hash="0")
        sp = SamplingParams(**sampling)
        return GenerationRequest(prompt, sp, request_key(prompt, sp, "tiny", "rev", "vllm-server"))

    return make


@pytest.fixture(scope="session")
def solid_image():
    """`solid_image(colour, size=(64, 64))`: a PNG ImageRef of one colour."""

    def make(colour: str, size: tuple[int, int] = (64, 64)) -> ImageRef:
        from PIL import Image

        return ImageRef.from_pil(Image.new("RGB", size, colour), source=f"solid:{colour}")

    return make
