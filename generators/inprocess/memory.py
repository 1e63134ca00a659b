"""Giving memory back after an in-process model is dropped."""

from __future__ import annotations

import contextlib
import gc


def release_memory() -> None:
    """Collect garbage, then return cached CUDA blocks to the driver (a no-op without torch or a GPU)."""
    gc.collect()  # the model's tensors must be unreachable before empty_cache can free them
    with contextlib.suppress(ImportError):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
