"""Semantic dedup: reject a text whose sentence embedding is too close (cosine) to one already kept.

Embeddings come from a local sentence-embedding model folder (a sentence-transformers folder such as
all-MiniLM-L6-v2, or any transformers encoder), loaded and run by sentence-transformers itself so
that every module of its pipeline (pooling of any mode, Dense, Normalize) applies; L2-normalised. Memory is the embedding matrix of the remembered records (float16 by
default: 2 bytes per dimension) searched by matrix product in blocks; texts are never kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.ids import IdTable
from mmsynth.validators.types import Candidate, Verdict

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

_BLOCK_ROWS = 16384  # stored rows per block: also the rows converted to float32 per matmul


class SemanticDedupConfig(ValidatorConfig):
    type: Literal["semantic_dedup"] = Field(
        default="semantic_dedup", description="Registry key: 'semantic_dedup'."
    )
    model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        min_length=1,
        description="Sentence-embedding model: a local folder (sentence-transformers layout or a plain transformers encoder) or a Hub id (needs the network). Loaded on first use.",
    )
    threshold: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Cosine similarity at or above which a text is a semantic duplicate.",
    )
    batch_size: int = Field(default=64, ge=1, description="Texts embedded per forward pass.")
    max_length: int | None = Field(
        default=None,
        ge=8,
        description="Tokens per text (longer ones are truncated); null: the folder's max_seq_length, else 256.",
    )
    device: str = Field(default="cpu", description="Torch device for the encoder: 'cpu', 'cuda', 'cuda:1'.")
    store_dtype: Literal["float16", "float32"] = Field(
        default="float16",
        description="How remembered embeddings are stored: float16 halves memory; searches convert blocks to float32.",
    )


def load_encoder(path: str, device: str = "cpu", max_length: int | None = None) -> SentenceTransformer:
    """The model folder (or Hub id) as sentence-transformers loads it, with its whole module pipeline.

    sentence-transformers runs what `modules.json` lists (Transformer, any Pooling mode, Dense, Normalize,
    ...), so the embeddings are the model's own; a plain transformers encoder gets mean pooling.
    """
    from sentence_transformers import SentenceTransformer

    if not Path(path).exists() and _looks_local(path):
        raise FileNotFoundError(f"semantic_dedup: model folder {path!r} does not exist")
    model = SentenceTransformer(path, device=device)
    if max_length is not None:
        model.max_seq_length = max_length
    elif model.max_seq_length is None:
        model.max_seq_length = 256
    return model.eval()


def _looks_local(path: str) -> bool:
    """A path that cannot be a Hub id: Hub ids never start with '/', '.' or '~'."""
    return path.startswith(("/", ".", "~"))


def embed(encoder: SentenceTransformer, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """(texts x dim) float32, L2-normalised (cosine is a dot product), batched by sentence-transformers."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    vecs = encoder.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(vecs, dtype=np.float32)


class SemanticDedupValidator(ConfiguredValidator[SemanticDedupConfig]):
    """Rejects a candidate whose embedding has cosine >= threshold with a remembered record or an
    earlier kept candidate of the batch, of the same task. Empty texts are kept and not remembered.

    `check` never changes memory; `remember` queues, and the queue is embedded in batches before the
    next `check` (records the last `check` embedded are not embedded again).
    """

    config_cls = SemanticDedupConfig
    stateful = True

    def __init__(self, config: SemanticDedupConfig | None = None) -> None:
        super().__init__(config)
        self._encoder: SentenceTransformer | None = None
        self._ids = IdTable()
        self._blocks: list[np.ndarray] = []  # (_BLOCK_ROWS x dim) store_dtype
        self._task_blocks: list[np.ndarray] = []  # (_BLOCK_ROWS,) int32 task numbers
        self._tasks: dict[str, int] = {}
        self._pending: list[Candidate] = []
        self._last: dict[str, tuple[str, str, np.ndarray]] = {}

    def load(self) -> None:
        """Load the encoder now (otherwise on first use)."""
        if self._encoder is None:
            cfg = self.config
            self._encoder = load_encoder(cfg.model, cfg.device, cfg.max_length)

    def __len__(self) -> int:
        self._flush()
        return len(self._ids)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised float32 embeddings of `texts`."""
        self.load()
        assert self._encoder is not None
        return embed(self._encoder, texts, self.config.batch_size)

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        self._flush()
        live = [i for i, c in enumerate(candidates) if c.text.strip()]
        verdicts = [Verdict.ok(self.name) for _ in candidates]
        if not live:
            return verdicts
        vecs = self.embed([candidates[i].text for i in live])
        tasks = np.array([self._task_number(candidates[i].task) for i in live], dtype=np.int32)
        self._last = {
            candidates[i].id: (candidates[i].text, candidates[i].task, vecs[k]) for k, i in enumerate(live)
        }
        mem_sim, mem_arg = self._search(vecs, tasks)
        in_batch = vecs @ vecs.T
        kept: list[int] = []  # positions in `live` kept so far
        thr = self.config.threshold
        for k, i in enumerate(live):
            best_sim, best_id = float(mem_sim[k]), None
            if best_sim >= thr:
                best_id = self._ids[int(mem_arg[k])]
            same = [j for j in kept if tasks[j] == tasks[k]]
            if same:
                j = same[int(np.argmax(in_batch[k, same]))]
                if in_batch[k, j] >= thr and in_batch[k, j] > best_sim:
                    best_sim, best_id = float(in_batch[k, j]), candidates[live[j]].id
            if best_id is None:
                kept.append(k)
            else:
                reason = f"semantic duplicate of: {best_id} (cosine {best_sim:.2f})"
                verdicts[i] = Verdict.reject(self.name, reason, score=best_sim)
        return verdicts

    def remember(self, candidate: Candidate) -> None:
        self._pending.append(candidate)
        if len(self._pending) >= 1024:
            self._flush()

    def nbytes(self) -> int:
        """Bytes of stored embeddings, task numbers and ids."""
        self._flush()
        per_row = (self._blocks[0].shape[1] * self._blocks[0].itemsize + 4) if self._blocks else 0
        return per_row * len(self._ids) + self._ids.nbytes()

    # -- internals ----------------------------------------------------------------------------

    def _task_number(self, task: str) -> int:
        return self._tasks.setdefault(task, len(self._tasks))

    def _search(self, vecs: np.ndarray, tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best cosine in memory (same task) and its record index, per row; -inf / -1 when none."""
        best = np.full(len(vecs), -np.inf, dtype=np.float32)
        arg = np.full(len(vecs), -1, dtype=np.int64)
        n = len(self._ids)
        for b, (block, block_tasks) in enumerate(zip(self._blocks, self._task_blocks, strict=True)):
            rows = min(_BLOCK_ROWS, n - b * _BLOCK_ROWS)
            if rows <= 0:
                break
            sims = vecs @ block[:rows].astype(np.float32, copy=False).T
            sims[tasks[:, None] != block_tasks[None, :rows]] = -np.inf
            top = sims.argmax(axis=1)
            top_sim = sims[np.arange(len(vecs)), top]
            better = top_sim > best
            best[better], arg[better] = top_sim[better], top[better] + b * _BLOCK_ROWS
        return best, arg

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        live = [c for c in pending if c.text.strip()]
        todo = [c for c in live if self._cached(c) is None]
        fresh = (
            dict(zip((id(c) for c in todo), self.embed([c.text for c in todo]), strict=True)) if todo else {}
        )
        for c in live:
            vec = self._cached(c)
            self._store(c, vec if vec is not None else fresh[id(c)])

    def _cached(self, c: Candidate) -> np.ndarray | None:
        hit = self._last.get(c.id)
        return hit[2] if hit is not None and hit[0] == c.text and hit[1] == c.task else None

    def _store(self, c: Candidate, vec: np.ndarray) -> None:
        record = self._ids.append(c.id)
        block, row = divmod(record, _BLOCK_ROWS)
        if block == len(self._blocks):
            self._blocks.append(np.zeros((_BLOCK_ROWS, len(vec)), dtype=self.config.store_dtype))
            self._task_blocks.append(np.full(_BLOCK_ROWS, -1, dtype=np.int32))
        self._blocks[block][row] = vec
        self._task_blocks[block][row] = self._task_number(c.task)
