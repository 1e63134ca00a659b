"""Cache order (factory/engine/order.py): requests grouped by first image, then by the text before it;
stable, deterministic, a permutation; and a run sends in that order yet writes exactly what a run in
stream order writes."""

from __future__ import annotations

import hashlib
import io
import json
import random
import sqlite3
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmsynth.factory.engine import chunks
from mmsynth.factory.engine.order import affinity_key, cache_order, order_requests
from mmsynth.factory.engine.runner import run_recipe
from mmsynth.generators.types import GenerationRequest, SamplingParams, request_key
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import ImagePart, Message, RenderedPrompt, TextPart

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "generators" / "openai"))
from chat_server import ChatServer, ok


def png(colour: tuple[int, int, int], size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


IMAGES = {
    name: ImageRef.from_bytes(png(c))
    for name, c in {"A": (255, 0, 0), "B": (0, 255, 0), "C": (0, 0, 255)}.items()
}


def prompt(image: str | None, system: str | None, text: str, before: str = "") -> RenderedPrompt:
    msgs = []
    if system is not None:
        msgs.append(Message("system", (TextPart(system),)))
    parts: list = [TextPart(before)] if before else []
    if image is not None:
        parts.append(ImagePart(IMAGES[image]))
    parts.append(TextPart(text))
    msgs.append(Message("user", tuple(parts)))
    return RenderedPrompt(tuple(msgs), template_id="t", template_version=1, template_hash="0")


def req(image: str | None, system: str | None, text: str, before: str = "") -> GenerationRequest:
    p = prompt(image, system, text, before)
    sp = SamplingParams(seed=1)
    return GenerationRequest(p, sp, request_key(p, sp, "m", "rev", "vllm-server"))


def label(r: GenerationRequest) -> str:
    return r.prompt.messages[-1].parts[-1].text


# -- the key -----------------------------------------------------------------------------------------


def test_the_key_is_the_first_image_and_the_text_before_it():
    img, prefix = affinity_key(prompt("A", "be brief", "caption it"))
    assert img == IMAGES["A"].sha256
    assert prefix == "system:be brief\x00user:"
    # Text the template writes before the image belongs to the prefix; text after it does not.
    assert affinity_key(prompt("A", "be brief", "x", before="Look:"))[1] == "system:be brief\x00user:Look:"
    assert affinity_key(prompt("A", "be brief", "x")) == affinity_key(prompt("A", "be brief", "y"))
    assert affinity_key(prompt("A", None, "x")) == (IMAGES["A"].sha256, "user:")


def test_a_text_only_key_is_the_messages_before_the_last():
    assert affinity_key(prompt(None, "plan articles", "topic 1")) == ("", "system:plan articles")
    assert affinity_key(prompt(None, None, "topic 1")) == ("", "")


# -- the order ---------------------------------------------------------------------------------------


def test_requests_about_one_image_go_out_together_in_first_appearance_order():
    # Stream order of a chunk where rows repeat images (several questions per image).
    stream = [
        req("A", "s", "a1"),
        req("B", "s", "b1"),
        req("A", "s", "a2"),
        req("C", "s", "c1"),
        req("B", "s", "b2"),
    ]
    assert [label(r) for r in order_requests(stream)] == ["a1", "a2", "b1", "b2", "c1"]


def test_within_an_image_requests_with_the_same_prefix_are_adjacent():
    stream = [
        req("A", "caption", "1"),
        req("A", "vqa", "2"),
        req("A", "caption", "3"),
        req("A", "vqa", "4"),
        req("B", "vqa", "5"),
        req("B", "caption", "6"),
    ]
    assert [label(r) for r in order_requests(stream)] == ["1", "3", "2", "4", "5", "6"]


def test_text_only_requests_group_by_system_prompt():
    stream = [
        req(None, "plan", "p1"),
        req(None, "t2i", "t1"),
        req(None, "plan", "p2"),
        req(None, "t2i", "t2"),
    ]
    assert [label(r) for r in order_requests(stream)] == ["p1", "p2", "t1", "t2"]


def test_a_chunk_with_nothing_to_share_keeps_its_order():
    stream = [req("A", "s", "1"), req("B", "s", "2"), req("C", "s", "3"), req(None, "s", "4")]
    assert order_requests(stream) == stream
    assert order_requests([]) == []


def test_cache_order_is_a_stable_deterministic_permutation():
    rng = random.Random(7)
    for _ in range(200):
        items = [
            (rng.choice(["A", "B", "C", None]), rng.choice(["s1", "s2", None]), str(i))
            for i in range(rng.randint(0, 30))
        ]
        reqs = [req(*it) for it in items]
        out = order_requests(reqs)
        assert sorted(map(label, out)) == sorted(map(label, reqs))  # a permutation
        assert [label(r) for r in order_requests(list(reqs))] == [label(r) for r in out]  # deterministic
        keys = [affinity_key(r.prompt) for r in out]
        for level in (lambda k: k[0], lambda k: k):  # each image, then each (image, prefix), is one run
            runs = [level(k) for i, k in enumerate(keys) if i == 0 or level(keys[i - 1]) != level(k)]
            assert len(runs) == len(set(runs))
        for k in set(keys):  # inside a group, the original order
            mine = [int(label(r)) for r in out if affinity_key(r.prompt) == k]
            assert mine == sorted(mine)
        # Groups come in the order of their first request in the input.
        first = {}
        for r in reqs:
            first.setdefault(affinity_key(r.prompt)[0], len(first))
        seen = list(dict.fromkeys(k[0] for k in keys))
        assert seen == sorted(seen, key=first.get)


def test_cache_order_takes_any_item_with_a_prompt_getter():
    items = [("x", prompt("A", "s", "1")), ("y", prompt("B", "s", "2")), ("z", prompt("A", "s", "3"))]
    assert [n for n, _ in cache_order(items, lambda it: it[1])] == ["x", "z", "y"]


# -- a run: sent in cache order, written exactly as in stream order ----------------------------------

RECIPE = """\
name: order
seed: 3
seeds: {{type: jsonl, path: {rows}, id_field: id, image_field: image}}
models:
  vlm:
    backend: vllm-server
    model: {model}
    batch_size: {batch_size}
    options: {{base_url: "{url}", max_concurrency: 1, initial_concurrency: 1}}
tasks:
  - {{name: short, template: caption.short, model: vlm, sampling: {{max_tokens: 8}}}}
  - {{name: dense, template: caption.dense, model: vlm, sampling: {{max_tokens: 8}}}}
validators: [{{type: heuristics, min_chars: 1}}]
output: {{chunk_size: 4}}
"""


def answer(body, request):
    """A text that depends on everything in the request: a mixed-up answer would show."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    return ok(body, texts=[f"answer {digest} {i}" for i in range(body.get("n", 1))])


def rows_of(run: Path) -> list[dict]:
    out = []
    for f in sorted((run / "data").glob("*/*.parquet")):
        out += [{k: v for k, v in r.items() if k != "created_at"} for r in pq.read_table(f).to_pylist()]
    return out


def cache_of(run: Path) -> dict[str, str]:
    with sqlite3.connect(run / ".mmsynth" / "cache" / "responses.sqlite") as db:
        return dict(db.execute("SELECT key, value FROM responses"))


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    """Ten rows on three images (rows repeat images, as a VQA set does), in an interleaved order."""
    folder = tmp_path / "seeds"
    folder.mkdir()
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    for i, c in enumerate(colours):
        (folder / f"img{i}.png").write_bytes(png(c, 16))
    with (folder / "rows.jsonl").open("w") as f:
        for i in range(10):
            f.write(json.dumps({"id": f"r{i}", "image": f"img{i % 3}.png"}) + "\n")
    return folder / "rows.jsonl"


def record_sends(monkeypatch, backend_class) -> list[GenerationRequest]:
    """Every request the engine hands `backend_class`, in the order it hands them over (the send order)."""
    sent: list[GenerationRequest] = []
    generate = backend_class.generate

    async def recording(self, requests):
        sent.extend(requests)
        return await generate(self, requests)

    monkeypatch.setattr(backend_class, "generate", recording)
    return sent


def grouped_per_chunk(sent: list[GenerationRequest], sizes: list[int]) -> bool:
    """Whether, within each chunk's requests, each image's requests are one run."""
    start = 0
    for size in sizes:
        images = [r.prompt.images[0].sha256 for r in sent[start : start + size]]
        runs = [im for i, im in enumerate(images) if i == 0 or images[i - 1] != im]
        if len(runs) != len(set(runs)):
            return False
        start += size
    return True


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_run_sends_in_cache_order_and_writes_what_stream_order_writes(
    tmp_path, seeds, monkeypatch, batch_size
):
    from mmsynth.generators.openai.backend import OpenAIBackend

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    server = ChatServer(chat=answer, models=[str(model)])
    sent = record_sends(monkeypatch, OpenAIBackend)
    try:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(RECIPE.format(rows=seeds, model=model, url=server.url, batch_size=batch_size))
        run_recipe(recipe, tmp_path / "ordered", progress=False)
        ordered, ordered_bodies = list(sent), list(server.bodies)
        sent.clear()
        server.bodies.clear()
        monkeypatch.setattr(chunks, "order_requests", list)  # the same run in stream order
        run_recipe(recipe, tmp_path / "stream", progress=False)
        stream_bodies = list(server.bodies)
    finally:
        server.close()

    # Identical output: every row (but its wall-clock created_at) and every cached answer.
    assert rows_of(tmp_path / "ordered") == rows_of(tmp_path / "stream")
    assert len(rows_of(tmp_path / "ordered")) == 20
    assert cache_of(tmp_path / "ordered") == cache_of(tmp_path / "stream")
    # The same requests reached the server, in another order.
    assert sorted(map(json.dumps, ordered_bodies)) == sorted(map(json.dumps, stream_bodies))
    assert sorted(r.key for r in ordered) == sorted(r.key for r in sent)
    # Per chunk (4 seeds x 2 tasks; the last chunk 2 x 2) each image's requests went out together;
    # in stream order they did not: seeds r0 (image 0), r1 (image 1), r2 (image 2), r3 (image 0).
    assert grouped_per_chunk(ordered, [8, 8, 4])
    assert not grouped_per_chunk(sent, [8, 8, 4])
    images = [r.prompt.images[0].sha256 for r in ordered[:8]]
    assert images[:4] == [images[0]] * 4 and len(set(images)) == 3


@pytest.mark.slow
def test_a_tiny_model_run_writes_the_same_shards_with_and_without_cache_order(tmp_path, seeds, monkeypatch):
    """The real tiny VLM (transformers, one request per batch, so the batch cannot move floats), told it
    has a prefix cache so the engine reorders for it: the same records as in stream order."""
    from mmsynth.generators.inprocess.transformers_backend import TransformersBackend

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        RECIPE.format(rows=seeds, model="tiny:vlm", url="x", batch_size=1)
        .replace("backend: vllm-server", "backend: transformers")
        .replace('    options: {base_url: "x", max_concurrency: 1, initial_concurrency: 1}\n', "")
    )
    sent = record_sends(monkeypatch, TransformersBackend)
    monkeypatch.setattr(TransformersBackend, "prefix_cache", True, raising=False)
    run_recipe(recipe, tmp_path / "ordered", progress=False)
    ordered, sent[:] = list(sent), []
    monkeypatch.setattr(chunks, "order_requests", list)
    run_recipe(recipe, tmp_path / "stream", progress=False)

    assert rows_of(tmp_path / "ordered") == rows_of(tmp_path / "stream")
    assert cache_of(tmp_path / "ordered") == cache_of(tmp_path / "stream")
    assert sorted(r.key for r in ordered) == sorted(r.key for r in sent)
    assert grouped_per_chunk(ordered, [8, 8, 4]) and not grouped_per_chunk(sent, [8, 8, 4])
