"""OpenAIBackend against real aiohttp servers on 127.0.0.1 (chat_server.py): request bodies, parsing,
retries, back-pressure, failures that stay per request, JSON repair, start-up checks, secrets, and the
image policy."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time

import pytest
from chat_server import ChatServer, error, free_port, ok
from pydantic import ValidationError

from mmsynth.generators import build_backend
from mmsynth.generators.openai.backend import OpenAIBackend, ServerError, encode_image
from mmsynth.generators.types import GenerationRequest, SamplingParams, request_key
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import Message, RenderedPrompt, TextPart

URL = "http://127.0.0.1:8000/v1"
URL2 = "http://127.0.0.1:8001/v1"
SECRET = "sk-test-7f3a9c1e5b2d4068"


_OPEN: list[ChatServer] = []


def serve(*args, **kw) -> ChatServer:
    """A ChatServer closed at the end of the test."""
    server = ChatServer(*args, **kw)
    _OPEN.append(server)
    return server


@pytest.fixture(autouse=True)
def _close_servers():
    yield
    while _OPEN:
        _OPEN.pop().close()


def make_backend(server: ChatServer, **options) -> OpenAIBackend:
    options.setdefault("base_url", server.url)
    options.setdefault("backoff_initial_s", 0.001)
    options.setdefault("backoff_max_s", 0.01)
    return OpenAIBackend("tiny", **options)


@pytest.fixture
def backends():
    made = []

    def make(server, **options):
        b = make_backend(server, **options)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def structured_request(text="q", schema=None, **sampling) -> GenerationRequest:
    schema = schema or {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
    }
    prompt = RenderedPrompt(
        messages=(Message("user", (TextPart(text),)),),
        template_id="vqa.pairs",
        template_version=1,
        template_hash="0",
        output_schema=schema,
    )
    sp = SamplingParams(**sampling)
    return GenerationRequest(prompt, sp, request_key(prompt, sp, "tiny", "rev", "vllm-server"))


# -- request bodies and parsing ---------------------------------------------------------------------


def test_body_has_messages_images_sampling_and_schema(backends, make_request, solid_image):
    server = serve()
    b = backends(server)
    img = solid_image("red")
    req = make_request(
        "Describe ",
        img,
        " briefly.",
        system="You caption.",
        n=3,
        seed=11,
        temperature=0.5,
        top_p=0.9,
        max_tokens=20,
        stop=("\n",),
    )
    [gen] = b.generate_sync([req])
    body = server.bodies[0]
    assert body["model"] == "tiny"
    assert body["messages"][0] == {"role": "system", "content": "You caption."}
    user = body["messages"][1]
    assert user["role"] == "user"
    assert [p["type"] for p in user["content"]] == ["text", "image_url", "text"]
    url = user["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == img.data  # sent as is by default
    assert {k: body[k] for k in ("n", "seed", "temperature", "top_p", "max_tokens", "stop")} == {
        "n": 3,
        "seed": 11,
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 20,
        "stop": ["\n"],
    }
    assert "response_format" not in body
    assert len(server.bodies) == 1  # n samples: one request
    assert [o.text for o in gen.outputs] == ["answer 0", "answer 1", "answer 2"]


def test_text_only_messages_are_plain_strings_and_no_seed_or_stop_when_unset(backends, make_request):
    server = serve()
    b = backends(server)
    b.generate_sync([make_request("hello")])
    body = server.bodies[0]
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert "seed" not in body and "stop" not in body


def test_structured_request_sends_a_strict_json_schema(backends):
    server = serve(chat=lambda body, r: ok(body, ['{"a": 1}']))
    b = backends(server)
    req = structured_request()
    b.generate_sync([req])
    rf = server.bodies[0]["response_format"]
    assert rf == {
        "type": "json_schema",
        "json_schema": {"name": "vqa_pairs", "schema": req.output_schema, "strict": True},
    }


def test_choices_usage_finish_reason_and_extra(backends, make_request):
    server = serve(chat=lambda body, r: ok(body, ["x", "y"], finish="length", usage=(12, 9)))
    b = backends(server, served_model_name="tiny")
    [gen] = b.generate_sync([make_request("q", n=2)])
    assert [(o.text, o.finish_reason) for o in gen.outputs] == [("x", "length"), ("y", "length")]
    assert (gen.prompt_tokens, gen.completion_tokens, gen.error) == (12, 9, None)
    assert gen.extra == {"server_model": "tiny", "replica": server.url, "attempts": 1}
    assert json.loads(json.dumps(gen.to_json()))  # cacheable


def test_registry_builds_it_and_options_are_documented():
    b = build_backend(
        "vllm-server",
        model="m",
        path="/no/such/folder",
        revision="local-abc",
        batch_size=16,
        device="cuda",
        dtype="bfloat16",
        base_url="http://127.0.0.1:8000/v1",
    )
    assert (b.name, b.model, b.revision, b.batch_size, b.served_model_name) == (
        "vllm-server",
        "m",
        "local-abc",
        16,
        "/no/such/folder",
    )
    assert b.max_concurrency == 64  # lists in flight: 2 * 512 requests / 16 per list
    two = build_backend("vllm-server", model="m", revision="local-abc", batch_size=4, base_url=[URL, URL2])
    assert two.max_concurrency == 512  # a limiter per replica: 2 * 2 * 512 / 4
    for name, field in OpenAIBackend.Options.model_fields.items():
        assert field.description, name
    for name, field in (
        OpenAIBackend.Options.model_fields["launch"].annotation.__args__[0].model_fields.items()
    ):
        assert field.description, name


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"base_url": URL, "max_concurency": 3}, "max_concurency"),
        ({}, "exactly one of base_url"),
        ({"base_url": URL, "launch": {}}, "exactly one of base_url"),
        ({"base_url": URL, "image_format": "gif"}, "image_format"),
        ({"launch": {"replica": 2}}, "replica"),
    ],
)
def test_bad_options_are_refused(options, match):
    with pytest.raises(ValidationError, match=match):
        OpenAIBackend("m", **options)


# -- failures and retries ---------------------------------------------------------------------------


def test_a_bad_request_fails_alone(backends, make_request):
    def chat(body, r):
        if body["messages"][0]["content"] == "too long":
            return error(400, "This model's maximum context length is 512 tokens. However, ...")
        return ok(body)

    b = backends(serve(chat=chat))
    gens = b.generate_sync([make_request("a"), make_request("too long"), make_request("b")])
    assert gens[1].error == "400: This model's maximum context length is 512 tokens. However, ..."
    assert gens[1].outputs == ()
    assert [g.error for g in (gens[0], gens[2])] == [None, None]
    assert gens[0].outputs[0].text == "answer 0"


@pytest.mark.parametrize("status", [404, 413, 422])
def test_other_client_errors_fail_the_request_with_the_server_message(backends, make_request, status):
    b = backends(serve(chat=lambda body, r: error(status, "nope")))
    [gen] = b.generate_sync([make_request("a")])
    assert gen.error == f"{status}: nope"
    assert b.stats["attempts"] == 1  # never retried


def test_429_then_success_is_retried_and_halves_concurrency(backends, make_request):
    calls = []

    def chat(body, r):
        calls.append(1)
        return error(429, "slow down") if len(calls) == 1 else ok(body)

    b = backends(serve(chat=chat), initial_concurrency=8)
    [gen] = b.generate_sync([make_request("a")])
    assert gen.error is None and gen.extra["attempts"] == 2
    assert b.concurrency == 4
    assert (b.stats["retries"], b.stats["overloads"]) == (1, 1)


def test_retry_after_is_honoured(backends, make_request):
    calls = []

    def chat(body, r):
        calls.append(time.monotonic())
        return error(503, "busy", headers={"Retry-After": "0.2"}) if len(calls) == 1 else ok(body)

    # The backoff alone would wait at most 0.01 s (and at least 0): the gap shows Retry-After won.
    b = backends(serve(chat=chat))
    [gen] = b.generate_sync([make_request("a")])
    assert gen.error is None
    assert 0.2 <= calls[1] - calls[0] < 2.0


def test_backoff_is_used_without_retry_after(backends, make_request):
    calls = []

    def chat(body, r):
        calls.append(time.monotonic())
        return error(502, "bad gateway") if len(calls) < 3 else ok(body)

    b = backends(serve(chat=chat), backoff_initial_s=0.05, backoff_max_s=1)
    [gen] = b.generate_sync([make_request("a")])
    assert gen.extra["attempts"] == 3
    assert calls[1] - calls[0] >= 0.05 and calls[2] - calls[1] >= 0.1  # doubled
    assert b.concurrency == 8  # 502 is not an overload signal


def test_exhausted_retries_raise(backends, make_request):
    b = backends(serve(chat=lambda body, r: error(503, "engine is dead")), max_retries=2)
    with pytest.raises(ServerError, match=r"gave up after 3 attempts: .*503: engine is dead"):
        b.generate_sync([make_request("a"), make_request("b")])


def test_timeouts_are_retried_and_halve_concurrency(backends, make_request):
    calls = []

    async def chat(body, r):
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(2)  # past timeout_s
        return ok(body)

    b = backends(serve(chat=chat), initial_concurrency=6, timeout_s=0.3)
    [gen] = b.generate_sync([make_request("a")])
    assert gen.error is None and gen.extra["attempts"] == 2
    assert b.concurrency == 3


def test_401_stops_the_run(backends, make_request):
    b = backends(serve(chat=lambda body, r: error(401, "invalid api key")))
    with pytest.raises(ServerError, match="401: invalid api key"):
        b.generate_sync([make_request("a")])


def test_a_dead_replica_is_skipped_for_another(backends, make_request):
    def chat(body, r):
        if r.transport.get_extra_info("sockname")[1] == server.ports[0]:
            r.transport.abort()  # the connection drops, as when a server dies mid-request
        return ok(body)

    server = serve(chat=chat, ports=2)
    b = backends(server, base_url=server.urls)
    gens = b.generate_sync([make_request(f"q{i}") for i in range(6)])
    assert all(g.error is None for g in gens)
    assert {g.extra["replica"] for g in gens} == {server.urls[1]}


def test_requests_are_spread_over_replicas_by_load(backends, make_request):
    async def chat(body, r):
        await asyncio.sleep(0.02)
        return ok(body)

    server = serve(chat=chat, ports=2)
    b = backends(server, base_url=server.urls)
    gens = b.generate_sync([make_request(f"q{i}") for i in range(8)])
    used = [g.extra["replica"] for g in gens]
    assert used.count(server.urls[0]) == used.count(server.urls[1]) == 4


def test_the_limiter_keeps_in_flight_requests_under_its_limit(backends, make_request):
    live, peak = [0], [0]

    async def chat(body, r):
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        await asyncio.sleep(0.01)
        live[0] -= 1
        return ok(body)

    b = backends(serve(chat=chat), initial_concurrency=3, max_concurrency=4)
    b.generate_sync([make_request(f"q{i}") for i in range(40)])
    assert b.concurrency == 4
    assert peak[0] == 4  # started at 3, doubled to the cap, never past it


def test_each_replica_has_its_own_limit(backends, make_request):
    def chat(body, r):
        if r.transport.get_extra_info("sockname")[1] == server.ports[0]:
            return error(429, "slow down")
        return ok(body)

    server = serve(chat=chat, ports=2)
    b = backends(server, base_url=server.urls, initial_concurrency=8, max_retries=8)
    gens = b.generate_sync([make_request(f"q{i}") for i in range(4)])
    assert all(g.error is None for g in gens)
    overloaded, fine = (r.limiter for r in b._replicas.all)
    assert overloaded.limit < 8 and not overloaded.slow_start  # only the replica that said 429 slowed down
    assert fine.limit == 8 and fine.slow_start


def test_generate_works_from_the_engine_loop_and_again_after_close(make_request):
    server = serve()
    b = make_backend(server)
    try:
        gens = asyncio.run(b.generate([make_request("a"), make_request("b")]))
        assert [g.outputs[0].text for g in gens] == ["answer 0", "answer 0"]
        gens = asyncio.run(b.generate([make_request("c")]))  # a second asyncio.run: same client
        b.close()
        gens = asyncio.run(b.generate([make_request("d")]))  # loads again
        assert gens[0].error is None
    finally:
        b.close()


# -- JSON repair ------------------------------------------------------------------------------------


def test_invalid_json_is_re_asked_once_with_the_error(backends):
    def chat(body, r):
        if len(body["messages"]) == 1:
            return ok(body, ['{"a": 1}', '{"a": "one"}', '{"a": '], usage=(10, 6))
        return ok(body, ['{"a": 2}'], usage=(20, 3))

    server = serve(chat=chat)
    b = backends(server)
    [gen] = b.generate_sync([structured_request(n=3, seed=5)])
    assert [o.text for o in gen.outputs] == ['{"a": 1}', '{"a": 2}', '{"a": 2}']
    assert gen.extra["json_repairs"] == 2
    assert (gen.prompt_tokens, gen.completion_tokens) == (10 + 2 * 20, 6 + 2 * 3)
    repairs = server.bodies[1:]
    assert len(repairs) == 2 and all(r["n"] == 1 for r in repairs)
    assert {r["seed"] for r in repairs} == {7, 8}  # new seeds, still derived from the request's
    followups = sorted(r["messages"][-1]["content"] for r in repairs)
    assert "breaks the schema at a: 'one' is not of type 'integer'" in followups[0]
    assert "not JSON" in followups[1]
    assert {r["messages"][-2]["content"] for r in repairs} == {'{"a": "one"}', '{"a": '}
    assert all(r["messages"][-2]["role"] == "assistant" for r in repairs)


def test_json_repair_is_bounded(backends):
    server = serve(chat=lambda body, r: ok(body, ["not json"] * body["n"]))
    b = backends(server, json_repair_attempts=2)
    [gen] = b.generate_sync([structured_request(n=1)])
    assert gen.outputs[0].text == "not json"  # still invalid: the factory rejects it
    assert gen.extra["json_repairs"] == 2
    assert len(server.bodies) == 3

    server0 = serve(chat=lambda body, r: ok(body, ["not json"]))
    b0 = backends(server0, json_repair_attempts=0)
    [gen] = b0.generate_sync([structured_request()])
    assert len(server0.bodies) == 1 and "json_repairs" not in gen.extra


def test_a_refused_repair_keeps_the_first_answer(backends):
    def chat(body, r):
        if len(body["messages"]) == 1:
            return ok(body, ["{"])
        return error(400, "context too long")

    b = backends(serve(chat=chat))
    [gen] = b.generate_sync([structured_request()])
    assert gen.error is None and gen.outputs[0].text == "{"


# -- start-up checks --------------------------------------------------------------------------------


def test_load_names_the_url_and_the_models_served_when_the_model_is_missing():
    server = serve(models=["Qwen/Qwen2.5-VL-3B-Instruct", "other"])
    b = make_backend(server, served_model_name="Qwen/Qwen2.5-VL-3B")
    with pytest.raises(ServerError) as err:
        b.load()
    msg = str(err.value)
    assert server.url in msg
    assert "does not serve model 'Qwen/Qwen2.5-VL-3B'" in msg
    assert "'Qwen/Qwen2.5-VL-3B-Instruct', 'other'" in msg
    assert "Did you mean 'Qwen/Qwen2.5-VL-3B-Instruct'?" in msg
    assert b._thread is None  # nothing left running


def test_load_fails_clearly_when_the_server_is_down():
    server = serve()
    url = f"http://127.0.0.1:{free_port()}/v1"
    b = OpenAIBackend("tiny", base_url=[server.url, url])
    with pytest.raises(
        ServerError, match=rf"cannot reach the server at {url}: ClientConnectorError: .*Is it running\?"
    ):
        b.load()  # every replica is checked
    assert b._thread is None


def test_health_404_is_tolerated_and_500_is_not(backends, make_request):
    backends(serve(health=404)).load()
    with pytest.raises(ServerError, match=r"/health answered 500"):
        backends(serve(health=500)).load()


def test_a_served_path_that_is_the_same_folder_is_accepted(backends, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "link").symlink_to(folder)
    b = OpenAIBackend(str(tmp_path / "link"), base_url=serve(models=[str(folder)]).url)
    try:
        b.load()
        assert b.served_model_name == str(folder)
    finally:
        b.close()


# -- secrets ----------------------------------------------------------------------------------------


def test_the_api_key_is_sent_but_never_shown(monkeypatch, make_request, caplog):
    monkeypatch.setenv("MY_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    calls = []

    def chat(body, r):  # a careless server that echoes the Authorization header in its errors
        calls.append(1)
        auth = r.headers["authorization"]
        if body["messages"][0]["content"] == "bad":
            return error(400, f"rejected request with {auth}")
        if len(calls) < 3:
            return error(429, f"too many requests for {auth}")
        return ok(body)

    server = serve(chat=chat)
    b = make_backend(server, api_key_env="MY_KEY")
    try:
        gens = b.generate_sync([make_request("bad"), make_request("good")])
        assert all(
            r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests if "chat" in r.path
        )
        seen = [repr(b), repr(b.options), str(b.options.model_dump()), caplog.text]
        seen += [json.dumps(g.to_json()) for g in gens]
        assert gens[0].error == "400: rejected request with Bearer ***"
        server.chat = lambda body, r: error(503, f"down for {r.headers['authorization']}")
        with pytest.raises(ServerError) as err:
            b.generate_sync([make_request("again")])
        seen.append(str(err.value))
        assert "***" in str(err.value)
    finally:
        b.close()
    for text in seen:
        assert SECRET not in text


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(ValidationError) as err:
        OpenAIBackend("m", base_url=f"http://user:{SECRET}@127.0.0.1:8000/v1")
    assert "must not hold credentials" in str(err.value)
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("query", [f"?token={SECRET}", f"?api-key={SECRET}&x=1", f"#{SECRET}"])
def test_a_token_in_the_url_query_is_refused_without_echoing_it(query):
    with pytest.raises(ValidationError) as err:
        OpenAIBackend("m", base_url=f"http://127.0.0.1:8000/v1{query}")
    assert "must not hold a query string" in str(err.value) and "api_key_env" in str(err.value)
    assert SECRET not in str(err.value)


def test_urls_are_joined_with_one_slash(backends, make_request):
    server = serve()
    b = backends(server, base_url=server.url + "/")
    b.generate_sync([make_request("a")])
    assert [r.path for r in server.requests] == ["/health", "/v1/models", "/v1/chat/completions"]


def test_a_named_key_variable_that_is_unset_is_an_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    b = make_backend(serve(), api_key_env="NO_SUCH_KEY")
    with pytest.raises(ServerError, match="environment variable NO_SUCH_KEY is not set"):
        b.load()


def test_openai_api_key_is_the_default_only_when_set(monkeypatch, backends, make_request):
    server = serve()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backends(server).generate_sync([make_request("a")])
    assert "authorization" not in server.requests[-1].headers
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    backends(server).generate_sync([make_request("a")])
    assert server.requests[-1].headers["authorization"] == f"Bearer {SECRET}"


# -- images -----------------------------------------------------------------------------------------


def decode(url: str):
    from PIL import Image

    mime, data = url.split(",", 1)
    return mime, Image.open(io.BytesIO(base64.b64decode(data)))


def test_image_policy(solid_image):
    img = solid_image("blue", size=(200, 100))
    assert encode_image(img, None, None) == "data:image/png;base64," + base64.b64encode(img.data).decode()
    mime, pil = decode(encode_image(img, 50, None))
    assert (mime, pil.size) == ("data:image/png;base64", (50, 25))
    mime, pil = decode(encode_image(img, 50, "jpeg"))
    assert (mime, pil.format, pil.size) == ("data:image/jpeg;base64", "JPEG", (50, 25))
    assert encode_image(img, 500, None) == encode_image(img, None, None)  # small enough: bytes as they are
    mime, pil = decode(encode_image(img, 500, "jpeg"))
    assert (mime, pil.size) == ("data:image/jpeg;base64", (200, 100))


def test_resize_applies_to_requests_and_a_broken_image_fails_only_its_request(
    backends, make_request, solid_image
):
    server = serve()
    b = backends(server, image_max_side=32)
    broken = ImageRef.from_bytes(b"\x89PNG not really", source="seeds/cat.png")
    gens = b.generate_sync([make_request(solid_image("red", size=(64, 48)), "x"), make_request(broken, "y")])
    assert gens[0].error is None
    assert "cannot decode image seeds/cat.png" in gens[1].error
    assert len(server.bodies) == 1
    _, pil = decode(server.bodies[0]["messages"][0]["content"][0]["image_url"]["url"])
    assert pil.size == (32, 24)


@pytest.mark.parametrize(
    "text",
    [
        'Here is the JSON: {"a": 1}',  # prose around it: the factory parses it, so no re-ask
        '{"a": 1, "note": "line one\nline two"}',  # a raw newline in a string
    ],
)
def test_outputs_the_factory_accepts_are_not_re_asked(backends, text):
    server = serve(chat=lambda body, r: ok(body, [text]))
    b = backends(server)
    [gen] = b.generate_sync([structured_request()])
    assert gen.outputs[0].text == text
    assert len(server.bodies) == 1 and "json_repairs" not in gen.extra
