"""Helpers for the generator tests: one or two torch threads, and small request builders."""

from __future__ import annotations

import pytest

from mmsynth.generators.types import GenerationRequest, SamplingParams, request_key
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import ImagePart, Message, RenderedPrompt, TextPart


@pytest.fixture(scope="session", autouse=True)
def _few_torch_threads():
    # The CI machines have 2 cores; more threads only add contention for these tiny models.
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def make_request():
    """`make_request(*parts, system=None, **sampling)`: a request whose user message has `parts` in order."""
    return _make_request


@pytest.fixture(scope="session")
def solid_image():
    """`solid_image(colour, size=(64, 64))`: a PNG ImageRef of one colour."""
    return _solid_image


def _make_request(*parts: str | ImageRef, system: str | None = None, **sampling) -> GenerationRequest:
    user = Message("user", tuple(ImagePart(p) if isinstance(p, ImageRef) else TextPart(p) for p in parts))
    messages = ((Message("system", (TextPart(system),)),) if system else ()) + (user,)
    prompt = RenderedPrompt(messages=messages, template_id="test", template_version=1, template_hash="0")
    sp = SamplingParams(**sampling)
    return GenerationRequest(prompt, sp, request_key(prompt, sp, "tiny", "rev", "transformers"))


def _solid_image(colour: str, size: tuple[int, int] = (64, 64)) -> ImageRef:
    from PIL import Image

    return ImageRef.from_pil(Image.new("RGB", size, colour), source=f"solid:{colour}")
