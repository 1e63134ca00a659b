"""Backends by name: an explicit dict of import paths, imported only when a backend is built.

Adding a backend is one module plus one entry here; nothing registers itself on import.
"""

from __future__ import annotations

import importlib
from typing import Any

from mmsynth.generators.types import Backend
from mmsynth.prompts.names import did_you_mean

BACKENDS: dict[str, str] = {
    "transformers": "mmsynth.generators.inprocess.transformers_backend:TransformersBackend",
    "vllm-server": "mmsynth.generators.openai.backend:OpenAIBackend",
    "vllm-offline": "mmsynth.generators.inprocess.vllm_offline:VLLMOfflineBackend",
    "diffusers": "mmsynth.generators.inprocess.diffusers_backend:DiffusersBackend",
}


def known_backends() -> list[str]:
    """The registered backend names, sorted."""
    return sorted(BACKENDS)


def backend_class(name: str) -> type:
    """Import and return the class registered as `name`; ValueError naming the known ones if none is."""
    try:
        target = BACKENDS[name]
    except KeyError:
        hint = did_you_mean(name, BACKENDS)
        raise ValueError(
            f"unknown backend {name!r}; known backends: {', '.join(known_backends())}.{hint}"
        ) from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_backend(name: str, **kwargs: Any) -> Backend:
    """Construct the backend registered as `name` with `kwargs` (see that class for its arguments)."""
    return backend_class(name)(**kwargs)
