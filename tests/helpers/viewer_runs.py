"""Run folders for the viewer tests, written through the factory's own Record type and shard writer.

`write_run` makes a small run with three tasks (captions with two samples per seed, QA as JSON, interleaved
documents made from captions: parent_id) and three validators, one scored; `variant` "b" changes the
outputs and verdicts of some seeds so that two runs differ in known ways. `write_big_run` makes a large
run of cheap synthetic rows whose images, loaded all at once, would take gigabytes.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from PIL import Image

from mmsynth.factory.dataset.records import Record
from mmsynth.factory.dataset.shards import shard_path, write_shard
from mmsynth.generators.scenes.world import make_scene
from mmsynth.prompts import ImageRef
from mmsynth.validators.types import Verdict

TEMPLATE = (
    "---\nid: caption.short\nversion: 1\n---\n{% block user %}{{ image }}\nDescribe it.{% endblock %}\n"
)


def _record(task: str, seed: int, sample: int, output: str, verdicts: list[Verdict], **kw) -> Record:
    fields = dict(
        id=f"{task}-{seed:05d}-{sample}",
        task=task,
        seed_id=f"seed{seed:05d}",
        seed_index=seed,
        seed={"description": f"scene {seed}"},
        images=(),
        system="You describe images.",
        prompt="<image>\nDescribe it.",
        output=output,
        parsed=None,
        parse_error=None,
        finish_reason="stop",
        prompt_tokens=12,
        completion_tokens=len(output.split()),
        template_id="caption.short",
        template_version=1,
        template_hash="9a75" + "0" * 60,
        model="tiny:vlm",
        model_revision="local-123",
        backend="transformers",
        sampling={"temperature": 0.8, "max_tokens": 24},
        sample_seed=1000 + seed * 10 + sample,
        sample_index=sample,
        request_key=f"req-{task}-{seed}",
        created_at="2026-12-03T12:00:00+00:00",
        verdicts=verdicts,
    )
    fields.update(kw)
    return Record(**fields)


def _judge(seed: int, sample: int, variant: str) -> Verdict:
    score = ((seed * 37 + sample * 11) % 100) / 100
    if variant == "b" and seed % 4 == 0:
        score = 0.95  # run b's judge likes every fourth seed
    return Verdict("judge", score >= 0.3, None if score >= 0.3 else "low score", score)


def write_run(folder: Path, seeds: int = 12, variant: str = "a", chunk: int = 6) -> Path:
    """A finished-looking run folder (manifest, templates/) with captions, qa and documents."""
    images = [make_scene(7, i)["image"] for i in range(seeds)]
    records: list[Record] = []
    for s in range(seeds):
        img = (images[s],)
        for sample in range(2):
            text = f"A {'red' if s % 2 else 'blue'} square, take {sample} ({variant})"
            if s == 3 and sample == 1:
                text = "no"  # too short: heuristics rejects it
            verdicts = [
                Verdict("heuristics", len(text) >= 8, None if len(text) >= 8 else "too short: 2 < 8 chars"),
                _judge(s, sample, variant),
            ]
            records.append(_record("captions", s, sample, text, verdicts, images=img))
        pairs = {"pairs": [{"question": "How many squares?", "answer": str(s % 3 + 1), "type": "counting"}]}
        good = s % 5 != 0 or variant == "b"
        output = json.dumps(pairs) if good else "pairs: none"
        qa_verdicts = [
            Verdict("heuristics", True),
            Verdict("json_schema", good, None if good else "output is not valid JSON"),
        ]
        records.append(
            _record(
                "qa",
                s,
                0,
                output,
                qa_verdicts,
                images=img,
                parsed=pairs if good else None,
                template_id="vqa.pairs",
            )
        )
    # Documents: made from a caption record (their parent), texts and images interleaved.
    for s in range(0, seeds, 3):
        doc_texts = [f"Document {s}: a title.", None, "The square sits in the middle.", None]
        doc_images = [None, images[s], None, images[(s + 1) % seeds]]
        records.append(
            _record(
                "documents",
                s,
                0,
                json.dumps({"title": f"Document {s}"}),
                [Verdict("heuristics", True)],
                parsed={"title": f"Document {s}"},
                texts=doc_texts,
                doc_images=doc_images,
                parent_id=f"captions-{s:05d}-0",
                template_id="doc.interleaved",
                generation={"steps": 4, "guidance": 1.0},
            )
        )
    _write(folder, records, chunk)
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    (folder / "templates" / "caption.short@1.j2").write_text(TEMPLATE)
    (folder / "manifest.json").write_text(
        json.dumps({"complete": True, "lineage": {"recipe": f"viewer-{variant}"}})
    )
    return folder


def _write(folder: Path, records: list[Record], chunk: int) -> None:
    """Shards as the engine names them: per task and split, `chunk` seeds' records per chunk."""
    by_key: dict[tuple[str, str, int], list[Record]] = {}
    for r in records:
        split = "train" if r.accepted else "rejected"
        by_key.setdefault((r.task, split, r.seed_index // chunk), []).append(r)
    for (task, split, c), rs in by_key.items():
        write_shard(shard_path(folder, task, split, c), rs)


def noise_images(count: int, side: int) -> list[ImageRef]:
    """Random-noise PNGs: they do not compress, so each weighs about 3 * side**2 bytes."""
    rng = random.Random(0)
    out = []
    for i in range(count):
        img = Image.frombytes("RGB", (side, side), bytes(rng.getrandbits(8) for _ in range(3 * side * side)))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(ImageRef.from_bytes(buf.getvalue(), source=f"noise:{i}"))
    return out


WORDS = [
    "red",
    "blue",
    "green",
    "square",
    "circle",
    "triangle",
    "small",
    "large",
    "left",
    "right",
    "top",
    "bottom",
    "middle",
    "corner",
]


def write_big_run(folder: Path, records: int, shard_rows: int = 1000, image_side: int = 80) -> Path:
    """`records` rows of one task in shards of `shard_rows`, 16 distinct noise images repeated.

    Parquet stores each shard's few distinct images once (dictionary encoding), so the folder stays
    small on disk, but reading every row's image into memory would take records * ~19 KB.
    """
    images = noise_images(16, image_side)
    rng = random.Random(1)
    chunk, rows = 0, []
    for i in range(records):
        text = " ".join(rng.choice(WORDS) for _ in range(12)) + f" #{i}"
        score = rng.random()
        verdicts = [Verdict("heuristics", True, None, len(text) / 100), _judge_big(score)]
        rows.append(_record("captions", i, 0, text, verdicts, images=(images[i % 16],)))
        if len(rows) == shard_rows or i == records - 1:
            accepted = [r for r in rows if r.accepted]
            rejected = [r for r in rows if not r.accepted]
            for split, rs in (("train", accepted), ("rejected", rejected)):
                if rs:
                    write_shard(shard_path(folder, "captions", split, chunk), rs)
            chunk, rows = chunk + 1, []
    return folder


def _judge_big(score: float) -> Verdict:
    return Verdict("judge", score >= 0.2, None if score >= 0.2 else "low score", score)
