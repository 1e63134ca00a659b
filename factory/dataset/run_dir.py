"""The run folder: what is finished, what is not, and whether a rerun may continue it.

Layout:
    RUN/README.md                  dataset card with `configs` (written at the end)
    RUN/data/<task>/{train,rejected}-<chunk>.parquet
    RUN/stats.json, RUN/recipe.yaml, RUN/templates/   (written at the end)
    RUN/manifest.json              written last: its existence means the run is complete
    RUN/.mmsynth/run.json          fingerprint of the recipe and templates that made this folder
    RUN/.mmsynth/chunks/<chunk>.json   one per finished chunk, written after its shards
    RUN/.mmsynth/requests.jsonl    every batch sent to and answered by a backend
    RUN/.mmsynth/cache/            response cache (unless the recipe points elsewhere)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsynth.factory.dataset.lock import LOCK_NAME, RunLock, RunLocked
from mmsynth.prompts.errors import MmsynthError
from mmsynth.prompts.files import atomic_open


class RunDirError(MmsynthError):
    """The output folder cannot be used as asked (different recipe, not a run folder)."""

    exit_code = 2


def write_json_atomic(path: Path, obj: Any) -> None:
    """`obj` as the run folder's JSON (indented, keys sorted) at `path`, atomically."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)


@dataclass
class RunDir:
    path: Path
    lock: RunLock | None = field(default=None, repr=False, compare=False)  # held from open() to close()

    @property
    def state(self) -> Path:
        return self.path / ".mmsynth"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def requests_log(self) -> Path:
        return self.state / "requests.jsonl"

    def chunk_marker(self, chunk: int) -> Path:
        return self.state / "chunks" / f"{chunk:05d}.json"

    @property
    def complete(self) -> bool:
        return self.manifest.exists()

    def open(self, fingerprint: str, describe: dict[str, Any], fresh: bool) -> None:
        """Claim the folder for this recipe; refuse one made by a different recipe unless `fresh`.

        `fresh` deletes the outputs but keeps the response cache, so unchanged requests are not sent again.
        """
        info = self.state / "run.json"
        # Only .mmsynth and no run.json: a claim cut short, which this run may take.
        foreign = self.path.exists() and any(p.name != ".mmsynth" for p in self.path.iterdir())
        if not fresh and not info.exists() and foreign:
            raise RunDirError(
                f"{self.path} exists, is not empty and is not an mmsynth run folder. "
                f"Choose another --out, or empty it first."
            )
        try:  # before anything is read or cleared: a second writer must not touch the folder
            self.lock = RunLock.acquire(self.state)
        except RunLocked as e:
            raise RunDirError(str(e)) from None
        try:
            if fresh and self.path.exists():
                self._clear_outputs()
            elif info.exists():
                old = json.loads(info.read_text())
                if old.get("fingerprint") != fingerprint:
                    changed = _what_changed(old.get("describe", {}), describe)
                    raise RunDirError(
                        f"{self.path} was made by a different recipe ({changed}). "
                        f"Rerun with --fresh to rebuild it (cached responses are reused, so only changed "
                        f"requests go to the model), or choose another --out."
                    )
                return
            write_json_atomic(info, {"fingerprint": fingerprint, "describe": describe})
        except BaseException:
            self.close()  # a refused or failed claim leaves the folder free for the next command
            raise

    def close(self) -> None:
        """Release the folder for the next run."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _clear_outputs(self) -> None:
        for child in self.path.iterdir():
            if child.name == ".mmsynth":
                for sub in child.iterdir():
                    if sub.name not in ("cache", LOCK_NAME):
                        shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
            else:
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    def finished_chunks(self) -> int:
        """Chunks finish strictly in order, so the finished ones are a prefix 0..k-1; returns k."""
        k = 0
        while self.chunk_marker(k).exists():
            k += 1
        return k

    def chunk_info(self, chunk: int) -> dict[str, Any]:
        return json.loads(self.chunk_marker(chunk).read_text())

    def discard_unfinished(self, first_unfinished: int) -> None:
        """Remove shards of chunks without a marker (a kill can leave some of a chunk's files renamed)."""
        data = self.path / "data"
        if not data.exists():
            return
        for f in data.glob("*/*.parquet"):
            if int(f.stem.rsplit("-", 1)[1]) >= first_unfinished:
                f.unlink()
        for f in data.glob("*/.*.tmp-*"):
            f.unlink()


def _what_changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "changed: " + ", ".join(keys) if keys else "its fingerprint differs"
