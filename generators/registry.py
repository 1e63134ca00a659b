"""Backends by name: an explicit dict of import paths, imported only when a backend is built.

Adding a backend is one module plus one entry here; nothing registers itself on import.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from mmsynth.generators.types import Backend

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
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown backend {name!r}; known backends: {', '.join(known_backends())}.{hint}"
        ) from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_backend(name: str, **kwargs: Any) -> Backend:
    """Construct the backend registered as `name` with `kwargs` (see that class for its arguments)."""
    return backend_class(name)(**kwargs)
