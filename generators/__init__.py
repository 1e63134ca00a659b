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
    from mmsynth.generators.diffusers_backend import DiffusersBackend
    from mmsynth.generators.openai_backend import OpenAIBackend
    from mmsynth.generators.tiny_models import make_tiny
    from mmsynth.generators.transformers_backend import TransformersBackend
    from mmsynth.generators.vllm_launch import LaunchError, ServerPool

_LAZY = {
    "DiffusersBackend": "mmsynth.generators.diffusers_backend",
    "OpenAIBackend": "mmsynth.generators.openai_backend",
    "ServerPool": "mmsynth.generators.vllm_launch",
    "LaunchError": "mmsynth.generators.vllm_launch",
    "TransformersBackend": "mmsynth.generators.transformers_backend",
    "make_tiny": "mmsynth.generators.tiny_models",
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
