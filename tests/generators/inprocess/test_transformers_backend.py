"""TransformersBackend on the tiny random models: batching, grouping, seeding, stops and failures."""

from __future__ import annotations

import asyncio

import pytest

from mmsynth.generators import Backend, Generation, TransformersBackend
from mmsynth.prompts.media import ImageRef


@pytest.fixture(scope="module")
def lm(tiny_lm):
    backend = TransformersBackend("tiny:lm", str(tiny_lm), batch_size=8, device="cpu")
    backend.load()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def vlm(tiny_vlm):
    backend = TransformersBackend("tiny:vlm", str(tiny_vlm), batch_size=8, device="cpu")
    backend.load()
    yield backend
    backend.close()


def run(backend, requests) -> list[Generation]:
    return asyncio.run(backend.generate(requests))


def texts(gens: list[Generation]) -> list[list[str]]:
    return [[o.text for o in g.outputs] for g in gens]


def _mixed(make_request, image: ImageRef | None = None):
    first = ("Describe the picture.", image) if image else ("Describe a red circle.",)
    return [
        make_request(*first, temperature=0.0, max_tokens=6),
        make_request(
            "How many squares?", system="Answer briefly.", temperature=1.0, n=3, max_tokens=5, seed=7
        ),
        make_request("Hello", temperature=0.8, top_p=0.9, max_tokens=2, seed=1),
        make_request("Name a colour.", temperature=1.0, n=2, max_tokens=5, seed=8),
        make_request("Name a shape.", temperature=0.0, n=2, max_tokens=3),
        # These two differ from the fourth only in max_tokens / stop: they must not share its group.
        make_request("Name a colour.", temperature=1.0, n=2, max_tokens=9, seed=8),
        make_request("Name a colour.", temperature=1.0, n=2, max_tokens=5, seed=8, stop=("e",)),
    ]


def test_loads_as_the_right_kind(lm, vlm):
    assert isinstance(lm, Backend) and isinstance(vlm, Backend)
    assert (lm.is_vlm, vlm.is_vlm) == (False, True)
    assert (lm.device, lm.dtype) == ("cpu", "float32")
    assert lm.context_length == 2048
    assert lm.revision.startswith("local-") and lm.revision != vlm.revision


@pytest.mark.parametrize("kind", ["lm", "vlm"])
def test_mixed_batch_matches_requests_run_alone(kind, request, make_request, solid_image):
    backend = request.getfixturevalue(kind)
    reqs = _mixed(make_request, solid_image("red") if kind == "vlm" else None)
    gens = run(backend, reqs)
    assert len(gens) == len(reqs)
    for req, gen in zip(reqs, gens, strict=True):
        assert gen.error is None
        assert len(gen.outputs) == req.sampling.n
        assert gen.prompt_tokens > 0 and 0 < gen.completion_tokens <= req.sampling.n * req.sampling.max_tokens
        for out in gen.outputs:
            assert out.finish_reason in ("stop", "length")
            assert not any(s in out.text for s in req.sampling.stop)
    # Grouping by sampling parameters and reordering must hand each request its own answer.
    alone = [run(backend, [r])[0] for r in reqs]
    assert texts(gens) == texts(alone)
    assert [g.prompt_tokens for g in gens] == [g.prompt_tokens for g in alone]
    assert texts(run(backend, reqs[::-1]))[::-1] == texts(gens)
    # Same seed, longer max_tokens: the shorter answer is a prefix of the longer one.
    short, longer = gens[3].outputs[0].text, gens[5].outputs[0].text
    assert longer.startswith(short) and len(longer) > len(short)


def test_tiny_max_tokens_ends_with_length(lm, make_request):
    gen = run(lm, [make_request("Tell me a story.", temperature=1.0, n=2, max_tokens=2, seed=3)])[0]
    assert [o.finish_reason for o in gen.outputs] == ["length", "length"]
    assert gen.completion_tokens == 4


def test_seeded_sampling_repeats_and_seeds_matter(lm, make_request):
    reqs = [make_request(f"Describe shape {i}.", temperature=1.0, max_tokens=8, seed=i) for i in range(3)]
    first, second = run(lm, reqs), run(lm, reqs)
    assert texts(first) == texts(second)
    other = run(lm, [make_request("Describe shape 0.", temperature=1.0, max_tokens=8, seed=99)])
    assert texts(other)[0] != texts(first)[0]
    # n samples of one request differ from each other (each has its own stream).
    many = run(lm, [make_request("Describe shape 0.", temperature=1.0, max_tokens=8, n=3, seed=0)])[0]
    assert len({o.text for o in many.outputs}) == 3


def test_unseeded_requests_are_seeded_by_their_key(lm, make_request):
    req = make_request("A blue star.", temperature=1.0, max_tokens=8)
    assert req.sampling.seed is None
    assert texts(run(lm, [req])) == texts(run(lm, [req]))


def test_greedy_equals_greedy(lm, make_request):
    a = run(lm, [make_request("Name a shape.", temperature=0.0, max_tokens=6, n=2)])[0]
    b = run(lm, [make_request("Name a shape.", temperature=0.0, max_tokens=6, seed=5)])[0]
    assert a.outputs[0] == a.outputs[1] == b.outputs[0]
    assert a.completion_tokens == 2 * b.completion_tokens


def test_stop_strings_trim_the_output(lm, make_request):
    base = make_request("Write a caption.", temperature=1.0, max_tokens=16, seed=11)
    full = run(lm, [base])[0].outputs[0].text
    stop = next(
        full[i : i + 2]
        for i in range(2, len(full) - 1)
        if full[i : i + 2].isascii() and full[i : i + 2].isalnum()
    )
    cut = full.find(stop)
    stopped = run(
        lm, [make_request("Write a caption.", temperature=1.0, max_tokens=16, seed=11, stop=(stop,))]
    )[0]
    assert stopped.outputs[0] == type(stopped.outputs[0])(full[:cut], "stop")
    assert 0 < stopped.completion_tokens < 16


def test_a_corrupt_image_fails_alone(vlm, make_request, solid_image):
    bad = ImageRef.from_bytes(b"not an image")
    reqs = [
        make_request(solid_image("red"), "What is this?", temperature=1.0, max_tokens=4, seed=1),
        make_request(bad, "What is this?", temperature=1.0, max_tokens=4, seed=1),
        make_request("No image here.", temperature=1.0, max_tokens=4, seed=1),
    ]
    good, broken, text_only = run(vlm, reqs)
    assert broken.outputs == () and "image" in broken.error and bad.sha256[:12] in broken.error
    assert len(good.outputs) == 1 and len(text_only.outputs) == 1
    assert good.error is None and text_only.error is None
    assert good.prompt_tokens > text_only.prompt_tokens  # the image's tokens are counted


def test_images_reach_the_model(vlm, make_request, solid_image):
    red, blue = (
        make_request(solid_image(c), "Colour?", temperature=0.0, max_tokens=8) for c in ("red", "blue")
    )
    a, b = run(vlm, [red, blue])
    assert a.outputs[0].text != b.outputs[0].text


def test_prompts_over_the_context_and_images_to_text_models_fail(lm, make_request, solid_image):
    long = make_request("red circle " * 1200, temperature=0.0, max_tokens=64)
    with_image = make_request(solid_image("red"), "What is this?", temperature=0.0, max_tokens=4)
    ok = make_request("Hi", temperature=0.0, max_tokens=4)
    too_long, imaged, fine = run(lm, [long, with_image, ok])
    assert too_long.error and "max_tokens 64" in too_long.error and "2048" in too_long.error
    assert imaged.error and "text-only" in imaged.error
    assert fine.error is None and len(fine.outputs) == 1


def test_batches_larger_than_batch_size_are_split(tiny_lm, make_request):
    backend = TransformersBackend("tiny:lm", str(tiny_lm), batch_size=2, device="cpu")
    reqs = [make_request(f"Shape {i}", temperature=1.0, max_tokens=3, seed=i) for i in range(5)]
    gens = backend.generate_sync(reqs)  # loads lazily
    assert [len(g.outputs) for g in gens] == [1] * 5
    backend.close()
    assert backend.generate_sync([]) == []


def test_generate_keeps_the_event_loop_responsive(lm, make_request):
    reqs = [make_request(f"Story {i}", temperature=1.0, max_tokens=48, seed=i) for i in range(8)]

    async def main():
        ticks = 0
        task = asyncio.create_task(lm.generate(reqs))
        while not task.done():
            await asyncio.sleep(0.001)
            ticks += 1
        return ticks, await task

    ticks, gens = asyncio.run(main())
    assert len(gens) == 8
    assert ticks > 3


def test_bad_arguments_fail_early(tiny_lm):
    with pytest.raises(ValueError, match="dtype"):
        TransformersBackend("m", str(tiny_lm), dtype="float8")
    with pytest.raises(ValueError, match="batch_size"):
        TransformersBackend("m", str(tiny_lm), batch_size=0)
    with pytest.raises(OSError):
        TransformersBackend("m", str(tiny_lm / "missing")).load()


@pytest.mark.gpu
def test_auto_device_and_dtype_on_a_gpu(tiny_vlm, make_request, solid_image):
    import torch

    backend = TransformersBackend("tiny:vlm", str(tiny_vlm))
    backend.load()
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert (backend.device, backend.dtype) == ("cuda", expected)
    reqs = [
        make_request(solid_image("red"), "What is this?", temperature=1.0, n=2, max_tokens=8, seed=1),
        make_request("No image.", temperature=0.0, max_tokens=8),
    ]
    first, second = backend.generate_sync(reqs), backend.generate_sync(reqs)
    assert texts(first) == texts(second)
    assert [len(g.outputs) for g in first] == [2, 1]
    backend.close()


# -- the seeded sampler ------------------------------------------------------------------------------


def _chi_square(counts, expected_p) -> float:
    n = sum(counts)
    return sum((c - n * p) ** 2 / (n * p) for c, p in zip(counts, expected_p, strict=True))


# df = 3: 16.27 is the 0.1% critical value; a wrong distribution lands in the hundreds at n = 20,000.
CHI2_DF3_P001 = 16.27


@pytest.mark.parametrize(
    ("temperature", "top_p", "expected"),
    [
        (1.0, 1.0, [0.5, 0.3, 0.15, 0.05]),
        # T = 2 flattens p to sqrt(p) / sum; top_p 0.7 then keeps the first three (mass before the
        # fourth is 0.88) and renormalises them.
        (2.0, 0.7, [0.7071 / 1.8657, 0.5477 / 1.8657, 0.3873 / 1.8657, 0.0]),
    ],
)
def test_sample_tokens_draws_from_the_right_distribution(temperature, top_p, expected):
    import torch

    from mmsynth.generators.inprocess.transformers_backend import row_uniforms, sample_tokens

    n = 20_000
    # Token 4 has a -inf logit (as a processor that bans a token leaves it): it must never come out.
    logits = [*torch.tensor([0.5, 0.3, 0.15, 0.05]).log().tolist(), float("-inf")]
    scores = torch.tensor([logits]).expand(n, 5)
    kept = sum(expected)
    expected = [p / kept for p in expected]
    across_rows = sample_tokens(scores, row_uniforms(range(n), 1)[:, 0], temperature, top_p)
    along_steps = torch.cat(  # one row's stream, step after step
        [sample_tokens(scores[:1], u.view(1), temperature, top_p) for u in row_uniforms([7], n)[0]]
    )
    for picks in (across_rows, along_steps):
        counts = torch.bincount(picks, minlength=5).tolist()
        assert counts[4] == 0
        if expected[3] == 0.0:
            assert counts[3] == 0  # cut by top_p
            assert _chi_square(counts[:3], expected[:3]) < CHI2_DF3_P001
        else:
            assert _chi_square(counts[:4], expected) < CHI2_DF3_P001


def test_a_rows_uniforms_depend_on_its_seed_only():
    from mmsynth.generators.inprocess.transformers_backend import row_uniforms

    alone = row_uniforms([5], 8)[0]
    assert row_uniforms([5, 9], 8)[0].tolist() == alone.tolist()
    assert row_uniforms([1, 3, 5], 8)[2].tolist() == alone.tolist()
    assert row_uniforms([6], 8)[0].tolist() != alone.tolist()
    assert row_uniforms([5], 16)[0, :8].tolist() == alone.tolist()  # a longer max_tokens extends it
    assert row_uniforms([], 4).shape == (0, 4)


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_a_seed_decides_its_sample_whatever_batch_it_lands_in(lm, tiny_lm, make_request, top_p):
    def mine(seed: int):
        return make_request("A green triangle.", temperature=0.9, top_p=top_p, max_tokens=10, seed=seed)

    others = [
        make_request(f"Other {i} " * (i + 1), temperature=0.9, top_p=top_p, max_tokens=10, seed=100 + i)
        for i in range(7)
    ]
    alone = texts(run(lm, [mine(42)]))[0]
    assert texts(run(lm, [others[0], mine(42), others[1]]))[1] == alone
    assert texts(run(lm, [*others, mine(42)]))[-1] == alone
    small = TransformersBackend("tiny:lm", str(tiny_lm), batch_size=3, device="cpu")
    assert texts(small.generate_sync([*others[:4], mine(42)]))[-1] == alone  # the second batch of two
    small.close()
    different = {texts(run(lm, [mine(s)]))[0][0] for s in range(4)}
    assert len(different | {alone[0]}) >= 4
