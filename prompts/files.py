"""Writing a file atomically: readers see the old file or the whole new one, never half of it.

It lives in the lowest layer (stdlib only) because the factory, the generators and the trainer all write
files that a crash must not leave torn (shards, chunk markers, stats.json, reports).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def tmp_path(path: Path) -> Path:
    """The temporary name `path` is written under: hidden, beside it (same filesystem, so the rename is
    atomic), and tagged with the process id so that two writers never share one."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit flush, fsync and rename it over `path`.

    The parent folder is created. If the body raises, the temporary file is removed and `path` is
    left as it was. `mode` is "wb" or "w" (kwargs go to `open`, e.g. encoding).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file; mode {mode!r} is not 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            # Without fsync a crash after the rename can leave an empty file under the final name.
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> None:
    """Write `data` (bytes, or text in `encoding`) to `path` atomically (see `atomic_open`)."""
    if isinstance(data, str):
        data = data.encode(encoding)
    with atomic_open(path, "wb") as f:
        f.write(data)
