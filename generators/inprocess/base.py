"""What the in-process backends (transformers, diffusers, vllm-offline) share: one model in this
process behind one lock, loaded on demand, freed on close, and run in a worker thread.

A subclass says how to load (`_load`, setting `self.device`/`self.dtype`), whether it is loaded
(`_is_loaded`), how to drop the model (`_unload`) and how to answer a list of requests with it loaded
(`_generate`); the base does the locking, the lazy load, the memory release and the thread. Nothing
here imports torch, so constructing a backend stays cheap and import-free.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

from mmsynth.generators.inprocess.memory import release_memory
from mmsynth.generators.revision import SHA_RE, record_revision
from mmsynth.generators.types import Generation, GenerationRequest

# The dtype names a recipe may use, by the torch name they mean; "auto" is decided at load time.
DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def load_revision(path: str, recorded: str, asked: str | None) -> str | None:
    """The revision to pass to `from_pretrained`: None for a local folder (its content is the truth),
    the recorded commit when there is one (a branch may move), else what the user asked for."""
    if Path(path).expanduser().is_dir():
        return None
    return recorded if SHA_RE.match(recorded) else asked


def pick_device(device: str) -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> str:
    """The torch dtype name for a recipe's `dtype` on `device`: "auto" is bfloat16 on a GPU that
    supports it (float16 on older GPUs) and float32 on the CPU."""
    if dtype != "auto":
        return DTYPES.get(dtype, dtype)
    if not device.startswith("cuda"):
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


class InProcessBackend:
    """One model in this process: one list of requests at a time (max_concurrency 1), loaded lazily.

    model: what the user named (kept for lineage). path: the folder or Hub id to load (defaults to
    `model`). revision: recorded as `record_revision(path, revision)` (content hash for folders);
    `self._load_revision` is what to load (see `load_revision`). device/dtype: the recipe's settings,
    kept as `device_arg`/`dtype_arg`; `device`/`dtype` are what the load chose (None before).
    """

    name: str
    max_concurrency = 1

    def __init__(
        self,
        model: str,
        path: str | None,
        revision: str | None,
        batch_size: int,
        device: str,
        dtype: str,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use 'auto' or one of {', '.join(sorted(DTYPES))}")
        self.model = model
        self.path = str(path or model)
        self.batch_size = batch_size
        self.device_arg = device
        self.dtype_arg = dtype
        self.revision = record_revision(self.path, revision)
        self._load_revision = load_revision(self.path, self.revision, revision)
        self._lock = threading.Lock()
        self.device: str | None = None
        self.dtype: str | None = None

    # -- what a subclass provides -----------------------------------------------------------------

    def _is_loaded(self) -> bool:
        raise NotImplementedError

    def _load(self) -> None:
        """Load the model (called under the lock, only when not loaded)."""
        raise NotImplementedError

    def _unload(self) -> None:
        """Drop every reference to the model (called under the lock, loaded or not)."""
        raise NotImplementedError

    def _generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One Generation per request, in order (called under the lock, with the model loaded)."""
        raise NotImplementedError

    # -- the lifecycle and the thread -------------------------------------------------------------

    def load(self) -> None:
        """Load the model now (idempotent), so that load errors surface before a run."""
        with self._lock:
            self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        if not self._is_loaded():
            self._load()

    def close(self) -> None:
        """Free the model (and GPU memory); a later `generate` loads it again."""
        with self._lock:
            self._unload()
            release_memory()

    async def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """One Generation per request, in order; the model runs in a worker thread."""
        return await asyncio.to_thread(self.generate_sync, requests)

    def generate_sync(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """The blocking form of `generate`, for scripts and the worker thread."""
        with self._lock:
            self._ensure_loaded()
            return self._generate(requests)
