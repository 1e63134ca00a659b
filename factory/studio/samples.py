"""The studio's latest runs as run folders that the viewer opens (docs/viewer.md, "From the studio").

A studio run keeps its records in memory. So that the viewer can show them (gallery, verdicts, lineage
with the template that made them) each Run writes its records into one folder, and each Compare writes
A's and B's into two, in the run folder's layout: `data/<task>/{train,rejected}-00000.parquet` written
by the run's own shard writer, and `templates/<id>@<version>.j2`, the text that was run. Each write
replaces the folder's previous records, so a folder always holds the samples just run. The studio app
serves the viewer over these folders at `/view/` and `/view-compare/`.

They are samples, not a run: no manifest, no run state, so `mmsynth publish` refuses them.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from mmsynth.factory.dataset.records import Record
from mmsynth.factory.dataset.shards import shard_path, write_chunk
from mmsynth.prompts.files import write_atomic

RUN, COMPARE_A, COMPARE_B = "studio-run", "studio-compare-a", "studio-compare-b"


class SampleFolders:
    """The folders under `root` (a new temporary folder when None, removed by `close`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.owned = root is None
        self.root = Path(tempfile.mkdtemp(prefix="mmsynth-studio-")) if root is None else Path(root)
        self._lock = threading.Lock()  # web requests run in a thread pool: one write at a time
        for name in (RUN, COMPARE_A, COMPARE_B):
            (self.root / name / "data").mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, name: str, records: list[Record], template_ref: str, template_source: bytes) -> Path:
        """Replace folder `name`'s records with `records` (one chunk) and its template copy; its path."""
        with self._lock:
            return self._write(self.path(name), records, template_ref, template_source)

    def _write(self, folder: Path, records: list[Record], template_ref: str, template_source: bytes) -> Path:
        groups = write_chunk(folder, 0, records, list(dict.fromkeys(r.task for r in records)))
        written = {shard_path(folder, task, "train" if ok else "rejected", 0) for task, ok in groups}
        for old in (folder / "data").glob("*/*.parquet"):
            if old not in written:
                old.unlink()
        (folder / "templates").mkdir(exist_ok=True)
        for old in (folder / "templates").glob("*.j2"):
            old.unlink()
        write_atomic(folder / "templates" / f"{template_ref}.j2", template_source)
        return folder

    def close(self) -> None:
        if self.owned:
            shutil.rmtree(self.root, ignore_errors=True)
