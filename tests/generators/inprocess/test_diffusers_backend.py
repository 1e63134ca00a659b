"""The diffusers backend on the tiny random-weight Stable Diffusion pipeline (CPU, float32)."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from mmsynth.generators import Backend, build_backend
from mmsynth.generators.inprocess.diffusers_backend import DiffusersBackend
from mmsynth.generators.types import Generation

FAST = {"steps": 2, "guidance_scale": 5.0, "width": 32, "height": 32}


@pytest.fixture(scope="module")
def sd(tiny_sd):
    backend = DiffusersBackend(model="tiny:sd", path=str(tiny_sd), batch_size=4, device="cpu")
    backend.load()
    yield backend
    backend.close()


def req(make_request, prompt: str = "a red circle", seed: int = 7, n: int = 1, **image):
    return make_request(prompt, seed=seed, n=n, image={**FAST, **image})


def pixels(gen: Generation, k: int = 0) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(gen.outputs[k].image.data)), dtype=np.int16)


def test_registry_builds_it_without_loading(tiny_sd):
    backend = build_backend("diffusers", model="tiny:sd", path=str(tiny_sd), batch_size=3)
    assert isinstance(backend, DiffusersBackend) and isinstance(backend, Backend)
    assert (backend.name, backend.batch_size, backend.max_concurrency) == ("diffusers", 3, 1)
    assert backend.revision.startswith("local-")
    assert backend.device is None  # nothing loaded yet


def test_fp32_on_cpu(sd):
    assert (sd.device, sd.dtype, sd.pipeline_class) == ("cpu", "float32", "StableDiffusionPipeline")
    import torch

    assert sd._pipe.unet.dtype == torch.float32


def test_images_decode_at_the_asked_size_with_the_prompt_as_text(sd, make_request):
    [gen] = sd.generate_sync([req(make_request, "a blue square", width=48, height=32)])
    assert gen.error is None and len(gen.outputs) == 1
    out = gen.outputs[0]
    assert (out.text, out.finish_reason) == ("a blue square", "stop")
    img = out.image.to_pil()
    assert img.size == (48, 32) and out.image.mime == "image/png"
    assert (out.params["width"], out.params["height"]) == (48, 32)


def test_prompt_is_the_user_text_only(sd, make_request):
    r = make_request("a green star", system="ignored system text", seed=1, image=FAST)
    [gen] = sd.generate_sync([r])
    assert gen.outputs[0].text == "a green star"


def test_n_images_per_request_with_recorded_seeds_and_settings(sd, make_request):
    [gen] = sd.generate_sync([req(make_request, seed=100, n=3, negative_prompt="blurry")])
    assert [o.params["seed"] for o in gen.outputs] == [100, 101, 102]
    assert gen.outputs[0].params == {
        "seed": 100,
        "steps": 2,
        "guidance_scale": 5.0,
        "width": 32,
        "height": 32,
        "negative_prompt": "blurry",
        "scheduler": "DDIMScheduler",
    }
    assert len({o.image.sha256 for o in gen.outputs}) == 3  # three seeds, three images


def test_absent_settings_record_the_pipelines_defaults(sd, make_request):
    r = make_request("a dot", seed=3, image={"steps": 1})
    [gen] = sd.generate_sync([r])
    p = gen.outputs[0].params
    # StableDiffusionPipeline's own defaults: guidance 7.5, size = unet sample size * VAE factor (64 px).
    assert (p["steps"], p["guidance_scale"], p["width"], p["height"]) == (1, 7.5, 64, 64)
    assert p["negative_prompt"] is None and p["scheduler"] == "DDIMScheduler"


def test_same_request_same_bytes_and_a_new_seed_changes_the_image(sd, make_request):
    a, b, c = sd.generate_sync([req(make_request, seed=5)] * 2 + [req(make_request, seed=6)])
    assert a.outputs[0].image.data == b.outputs[0].image.data
    [again] = sd.generate_sync([req(make_request, seed=5)])
    assert again.outputs[0].image.data == a.outputs[0].image.data
    assert np.abs(pixels(a) - pixels(c)).mean() > 5


def test_an_image_does_not_depend_on_its_batch_mates(sd, make_request):
    [alone] = sd.generate_sync([req(make_request, "a red circle", seed=42)])
    mates = [req(make_request, f"a tall {c} triangle", seed=s) for c, s in (("blue", 1), ("pink", 2))]
    batch = sd.generate_sync([mates[0], req(make_request, "a red circle", seed=42), mates[1]])
    assert batch[1].outputs[0].params == alone.outputs[0].params
    # Same starting noise, same prompt: identical but for the float summation order of batched CPU
    # kernels, which moves a few pixels by one level at most.
    diff = np.abs(pixels(batch[1]) - pixels(alone))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.02
    assert np.abs(pixels(batch[0]) - pixels(alone)).mean() > 5  # a batch-mate really is another image


def test_a_request_split_over_calls_keeps_its_seeds(tiny_sd, make_request):
    backend = DiffusersBackend(model="tiny:sd", path=str(tiny_sd), batch_size=2, device="cpu")
    try:
        [gen] = backend.generate_sync([req(make_request, seed=20, n=3)])
    finally:
        backend.close()
    assert [o.params["seed"] for o in gen.outputs] == [20, 21, 22]


def test_scheduler_swap_changes_the_image_is_recorded_and_is_undone(sd, make_request):
    default, dpm = sd.generate_sync(
        [req(make_request, seed=9), req(make_request, seed=9, scheduler="DPMSolverMultistepScheduler")]
    )
    assert dpm.error is None
    assert dpm.outputs[0].params["scheduler"] == "DPMSolverMultistepScheduler"
    assert default.outputs[0].params["scheduler"] == "DDIMScheduler"
    assert np.abs(pixels(default) - pixels(dpm)).mean() > 2
    [after] = sd.generate_sync([req(make_request, seed=9)])
    assert type(sd._pipe.scheduler).__name__ == "DDIMScheduler"
    assert after.outputs[0].image.data == default.outputs[0].image.data


def test_unknown_or_incompatible_scheduler_fails_with_the_known_ones(sd, make_request):
    typo, flow, ok = sd.generate_sync(
        [
            req(make_request, scheduler="EulerDiscretScheduler"),
            req(make_request, scheduler="FlowMatchEulerDiscreteScheduler"),
            req(make_request),
        ]
    )
    assert typo.outputs == () and "unknown scheduler 'EulerDiscretScheduler'" in typo.error
    assert "EulerDiscreteScheduler" in typo.error and "UniPCMultistepScheduler" in typo.error
    assert "Did you mean 'EulerDiscreteScheduler'?" in typo.error
    assert "not compatible" in flow.error and "DDIMScheduler" in flow.error
    assert ok.error is None and len(ok.outputs) == 1


def test_a_bad_request_fails_alone(sd, make_request):
    good1, bad, good2, unknown = sd.generate_sync(
        [
            req(make_request, seed=1),
            req(make_request, seed=2, width=60),
            req(make_request, seed=3),
            make_request("x", seed=4, image={**FAST, "strength": 0.5}),
        ]
    )
    assert bad.outputs == () and "width 60 must be a positive multiple of 8" in bad.error
    assert "unknown image setting(s) strength" in unknown.error
    for g in (good1, good2):
        assert g.error is None and g.outputs[0].image.to_pil().size == (32, 32)


def test_a_call_that_raises_is_retried_request_by_request(sd, make_request, monkeypatch):
    real = sd._call

    def flaky(settings, rows):
        if any("boom" in p for p, _ in rows):
            raise RuntimeError("the pipeline broke on this prompt")
        return real(settings, rows)

    monkeypatch.setattr(sd, "_call", flaky)
    ok1, boom, ok2 = sd.generate_sync(
        [
            req(make_request, "fine", seed=1),
            req(make_request, "boom", seed=2, n=2),
            req(make_request, "ok", seed=3),
        ]
    )
    assert boom.outputs == () and boom.error == "RuntimeError: the pipeline broke on this prompt"
    assert [o.text for o in ok1.outputs + ok2.outputs] == ["fine", "ok"]


def test_options_are_validated(tiny_sd):
    kw = {"model": "tiny:sd", "path": str(tiny_sd)}
    with pytest.raises(ValidationError, match="offlaod"):
        DiffusersBackend(**kw, offlaod="model")
    with pytest.raises(ValidationError, match="offload"):
        DiffusersBackend(**kw, offload="cpu")
    with pytest.raises(ValueError, match="unknown dtype"):
        DiffusersBackend(**kw, dtype="fp8")
    kept = DiffusersBackend(**kw, offload="model", attention_slicing=True, safety_checker="disable")
    assert kept.options.offload == "model" and kept.options.attention_slicing
    assert all(f.description for f in DiffusersBackend.Options.model_fields.values())


def test_offload_needs_cuda(tiny_sd):
    backend = DiffusersBackend(model="tiny:sd", path=str(tiny_sd), device="cpu", offload="model")
    with pytest.raises(ValueError, match="CUDA"):
        backend.load()


def test_slicing_tiling_and_no_safety_checker_still_draw(tiny_sd, make_request):
    backend = DiffusersBackend(
        model="tiny:sd",
        path=str(tiny_sd),
        device="cpu",
        attention_slicing=True,
        vae_tiling=True,
        safety_checker="disable",
    )
    try:
        [gen] = backend.generate_sync([req(make_request)])
        assert backend._pipe.safety_checker is None
    finally:
        backend.close()
    assert gen.outputs[0].image.to_pil().size == (32, 32)


def test_recipe_dtype_is_honoured(tiny_sd):
    import torch

    backend = DiffusersBackend(model="tiny:sd", path=str(tiny_sd), device="cpu", dtype="bfloat16")
    try:
        backend.load()
        assert backend.dtype == "bfloat16" and backend._pipe.unet.dtype == torch.bfloat16
    finally:
        backend.close()
    assert backend._pipe is None


def test_generate_runs_off_the_event_loop(sd, make_request):
    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.create_task(tick())
        gens = await sd.generate([req(make_request, seed=11, n=2)])
        t.cancel()
        return gens, ticks

    gens, ticks = asyncio.run(main())
    assert len(gens[0].outputs) == 2 and ticks > 5


def test_generation_with_images_survives_the_cache_round_trip(sd, make_request):
    [gen] = sd.generate_sync([req(make_request, seed=8, n=2)])
    back = Generation.from_json(json.loads(json.dumps(gen.to_json())))
    assert back == gen
    assert back.outputs[1].image.data == gen.outputs[1].image.data
    assert back.outputs[1].params["seed"] == 9
    assert back.outputs[0].image.to_pil().size == (32, 32)


def test_cli_make_tiny_sd(tmp_path, capsys):
    from mmsynth.factory.cli.main import main

    assert main(["models", "make-tiny", "sd", str(tmp_path / "sd")]) == 0
    assert "tiny sd" in capsys.readouterr().out
    assert (tmp_path / "sd" / "model_index.json").exists()


@pytest.mark.gpu
def test_cuda_auto_dtype_draws(tiny_sd, make_request):
    import torch

    backend = DiffusersBackend(model="tiny:sd", path=str(tiny_sd))
    try:
        [gen] = backend.generate_sync([req(make_request, seed=1, n=2)])
        want = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        assert (backend.device, backend.dtype) == ("cuda", want)
    finally:
        backend.close()
    assert [o.image.to_pil().size for o in gen.outputs] == [(32, 32)] * 2


@pytest.mark.gpu
def test_cuda_model_offload_draws(tiny_sd, make_request):
    backend = DiffusersBackend(model="tiny:sd", path=str(tiny_sd), offload="model")
    try:
        [gen] = backend.generate_sync([req(make_request, seed=1)])
    finally:
        backend.close()
    assert gen.error is None and gen.outputs[0].image.to_pil().size == (32, 32)
