"""What exact model produced an output: a commit sha for Hub models, a content hash for local folders.

The revision goes into every request's cache key, so a changed model never reuses stale generations.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

UNKNOWN = "unknown"

SHA_RE = re.compile(r"^[0-9a-f]{40}$")  # a full git commit sha, the only Hub revision that cannot move
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FULL_HASH_LIMIT = 4 << 20  # files up to 4 MiB are hashed whole (configs, tokenizers, tiny weights)
_WINDOW = 64 << 10  # larger files: 16 windows of 64 KiB spread over the file, plus the size
_WINDOWS = 16
_SKIP_DIRS = {".git", ".cache", "__pycache__", ".locks"}


def resolve_revision(model: str, revision: str | None = None) -> str:
    """The revision to record for `model`: a local folder, a Hub id, or anything else.

    Local folder: "local-" plus 16 hex digits of a sha256 over every file's relative path, size and
    content. Files up to 4 MiB (config.json, tokenizer and processor files, weight indexes, tiny weights)
    are hashed whole; larger ones (real weight shards) contribute their size and 16 evenly spaced 64 KiB
    windows, the first holding the safetensors header. That reads at most ~1 MiB per shard, so a 15 GB
    checkpoint resolves in well under a second, and it still changes when a config, the tokenizer or
    the weights of a fine-tune change. mtimes are left out on purpose: copying a folder keeps its
    revision. `revision`, when given, is ignored for a local folder (its content is the truth).

    Hub id: a given 40-hex commit sha is returned as is. Otherwise the ref (`revision` or "main") is
    looked up in the local Hugging Face cache (`refs/<ref>`), then, unless HF_HUB_OFFLINE is set, asked
    of the Hub API. When neither answers: the given `revision`, else "unknown".
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return "local-" + hash_folder(path)[:16]
    if revision and SHA_RE.match(revision):
        return revision
    if _HUB_ID_RE.match(model) and not path.exists():
        sha = _cached_sha(model, revision or "main") or _api_sha(model, revision)
        if sha:
            return sha
    return revision or UNKNOWN


def is_resolved(revision: str | None) -> bool:
    """True for a revision `resolve_revision` may have returned as final: a commit sha or a local hash."""
    return bool(revision) and (revision.startswith("local-") or bool(SHA_RE.match(revision)))


def record_revision(path: str, revision: str | None) -> str:
    """The revision a backend records: `revision` as is when already resolved (the factory resolves
    before it builds a backend, so a folder is not hashed twice), else `resolve_revision(path, revision)`."""
    return revision if is_resolved(revision) else resolve_revision(path, revision)  # type: ignore[return-value]


def hash_folder(folder: str | Path) -> str:
    """sha256 (hex) of a folder's files as `resolve_revision` describes: path, size, content or windows."""
    root = Path(folder)
    h = hashlib.sha256()
    for p in sorted(_files(root)):
        size = p.stat().st_size
        h.update(f"{p.relative_to(root).as_posix()}\0{size}\0".encode())
        with p.open("rb") as f:
            if size <= _FULL_HASH_LIMIT:
                h.update(f.read())
            else:
                step = (size - _WINDOW) // (_WINDOWS - 1)
                for i in range(_WINDOWS):
                    f.seek(i * step)
                    h.update(f.read(_WINDOW))
    return h.hexdigest()


def _files(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_file():
                yield p


def _hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface" / "hub"


def _cached_sha(repo_id: str, ref: str) -> str | None:
    ref_file = _hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "refs" / ref
    try:
        sha = ref_file.read_text().strip()
    except OSError:
        return None
    return sha if SHA_RE.match(sha) else None


def _api_sha(repo_id: str, revision: str | None) -> str | None:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(repo_id, revision=revision).sha
    except Exception:  # no network, private repo, unknown id: the revision stays unresolved, not fatal
        return None
