"""Model backends: they turn rendered prompts into generations (transformers, vLLM, diffusers).

Importing this package stays light (no torch): backends and tiny-model builders import their heavy
dependencies when used. `TransformersBackend` and `make_tiny` are resolved lazily on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmsynth.generators.registry import BACKENDS, build_backend, known_backends
from mmsynth.generators.revision import resolve_revision
from mmsynth.generators.types import (
    Backend,
    Generation,
    GenerationRequest,
    Output,
    SamplingParams,
    request_key,
)

if TYPE_CHECKING:
    from mmsynth.generators.inprocess.diffusers_backend import DiffusersBackend
    from mmsynth.generators.inprocess.transformers_backend import TransformersBackend
    from mmsynth.generators.openai.backend import OpenAIBackend
    from mmsynth.generators.openai.launch import LaunchError, ServerPool
    from mmsynth.generators.tiny.builders import make_tiny

_LAZY = {
    "DiffusersBackend": "mmsynth.generators.inprocess.diffusers_backend",
    "OpenAIBackend": "mmsynth.generators.openai.backend",
    "ServerPool": "mmsynth.generators.openai.launch",
    "LaunchError": "mmsynth.generators.openai.launch",
    "TransformersBackend": "mmsynth.generators.inprocess.transformers_backend",
    "make_tiny": "mmsynth.generators.tiny.builders",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "Backend",
    "DiffusersBackend",
    "Generation",
    "GenerationRequest",
    "LaunchError",
    "OpenAIBackend",
    "Output",
    "SamplingParams",
    "ServerPool",
    "TransformersBackend",
    "build_backend",
    "known_backends",
    "make_tiny",
    "request_key",
    "resolve_revision",
]
