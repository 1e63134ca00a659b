"""Examples the trainer trains and evaluates on, read from mmsynth run folders and plain datasets.

A run folder is read by its Parquet column contract (data/<task>/train-*.parquet: task, image, output,
parsed, texts, images, accepted), never through the factory's code. A baseline dataset is anything the
row reader (mmsynth.prompts.rows) opens: a Parquet, JSONL or CSV file, a folder of them or a saved
`datasets` folder, or a Hub id for users with network, with the columns of one of the kinds below.
Image cells are read by `ImageRef.from_cell`, so an image over the pixel limit is refused by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.rows import RowsError, open_rows, parquet_part, run_shards

KINDS = ("caption", "vqa", "text", "interleaved")
CAPTION_PROMPT = "Describe the image."
IMAGE = "<image>"  # where an image sits in a prompt; images are given in order


@dataclass(frozen=True)
class Example:
    """One training or evaluation example.

    `prompt` is the user turn with IMAGE where each of `images` sits; `target` is what the student learns
    to answer. `references` are every accepted answer (captions, or the human answers of a VQA question);
    the first one is the training target. Interleaved and text examples with an empty prompt are trained
    on their whole text (language-model style).
    """

    id: str
    kind: str
    prompt: str
    target: str
    images: tuple[bytes, ...] = ()
    references: tuple[str, ...] = ()
    source: str = "baseline"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def with_target(self, target: str) -> Example:
        return replace(self, target=target, references=(target,))

    def texts(self) -> list[str]:
        """Every text of the example (prompt, target, references): what decontamination compares."""
        return [t for t in (self.prompt.replace(IMAGE, " "), self.target, *self.references) if t.strip()]


def caption_example(id: str, image: bytes, captions: Sequence[str], source: str = "baseline") -> Example:
    return Example(
        id=id,
        kind="caption",
        prompt=IMAGE + CAPTION_PROMPT,
        target=captions[0],
        images=(image,),
        references=tuple(captions),
        source=source,
    )


def vqa_example(
    id: str, image: bytes | None, question: str, answers: Sequence[str], source: str = "baseline"
) -> Example:
    # The training target is the most frequent human answer (first on ties).
    target = max(answers, key=lambda a: (list(answers).count(a), -list(answers).index(a)))
    return Example(
        id=id,
        kind="vqa",
        prompt=(IMAGE if image is not None else "") + question,
        target=target,
        images=(image,) if image is not None else (),
        references=tuple(answers),
        source=source,
    )


# --- run folders -----------------------------------------------------------------------------------


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and bool(run_shards(path))


RUN_COLUMNS = ("id", "task", "image", "output", "parsed", "texts", "images", "accepted")


def read_run_dir(
    run_dir: str | Path, tasks: Iterable[str] | None = None, split: str = "train"
) -> list[Example]:
    """Accepted records of an mmsynth run folder as Examples, in file order (deterministic)."""
    wanted = set(tasks) if tasks else None
    out: list[Example] = []
    for path in run_shards(Path(run_dir), split):
        task = path.parent.name
        if wanted is not None and task not in wanted:
            continue
        part = parquet_part(path, RUN_COLUMNS)
        index = 0
        for batch in part.batches:
            for row in batch:
                if row.get("accepted") is not False:
                    out.extend(_located(_row_examples, part.where(index), row, task))
                index += 1
    return out


def _located(make, where: str, *args: Any) -> list[Example]:
    """`make(*args)`, a ValueError (an unreadable or too large image) naming the file and row."""
    try:
        return make(*args)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _image_bytes(value: Any, base: Path | None = None) -> bytes | None:
    image = ImageRef.from_cell(value, base)
    return image.data if image is not None else None


def _row_examples(row: dict[str, Any], task: str) -> list[Example]:
    """One record -> examples: VQA pairs become one example each, a document one interleaved example."""
    rid = row.get("id") or ""
    image = _image_bytes(row.get("image"))
    parsed = row.get("parsed")
    if isinstance(parsed, str):
        try:
            parsed = json.loads(parsed)
        except ValueError:
            parsed = None
    texts = row.get("texts") or []
    if texts:
        images = row.get("images") or []
        prompt, imgs = [], []
        for i, t in enumerate(texts):
            img = _image_bytes(images[i]) if i < len(images) else None
            if img is not None:
                prompt.append(IMAGE)
                imgs.append(img)
            elif t:
                prompt.append(t)
        return [
            Example(
                id=rid,
                kind="interleaved",
                prompt="",
                target="\n".join(prompt),
                images=tuple(imgs),
                source="synthetic",
                meta={"task": task},
            )
        ]
    if isinstance(parsed, dict) and isinstance(parsed.get("pairs"), list):
        out = []
        for j, pair in enumerate(parsed["pairs"]):
            if isinstance(pair, dict) and pair.get("question") and pair.get("answer") is not None:
                ex = vqa_example(
                    f"{rid}/{j}", image, str(pair["question"]), [str(pair["answer"])], "synthetic"
                )
                out.append(replace(ex, meta={"task": task}))
        return out
    text = (row.get("output") or "").strip()
    if isinstance(parsed, dict) and isinstance(parsed.get("caption"), str):
        text = parsed["caption"].strip()
    if not text:
        return []
    if image is not None:
        return [replace(caption_example(rid, image, [text], "synthetic"), meta={"task": task})]
    return [Example(id=rid, kind="text", prompt="", target=text, source="synthetic", meta={"task": task})]


# --- baseline datasets -----------------------------------------------------------------------------


def load_dataset_examples(source: str | Path) -> dict[str, list[Example]]:
    """Examples per split from a run folder, a local dataset folder or file, or a Hub dataset id.

    Columns recognised per row (first match wins): `question` + `answers`/`answer` (VQA);
    `captions`/`caption`/`text` with an `image` (caption); `text` alone (text-only, language-model style);
    `prompt` + `target`/`answer` without an image (text QA). Images: a `datasets` Image column, bytes or
    a path relative to the dataset folder.
    """
    path = Path(source)
    if is_run_dir(path):
        return {s: ex for s in ("train", "test", "validation") if (ex := read_run_dir(path, split=s))}
    try:
        _, parts = open_rows(source, hub=True)
    except RowsError as e:
        raise ValueError(str(e)) from None
    out: dict[str, list[Example]] = {}
    seen: dict[str, int] = {}  # rows read per split: a row's id is `split/N` when it has no `id`
    for part in parts:
        examples = out.setdefault(part.split, [])
        index = 0
        for batch in part.batches:
            for row in batch:
                where = part.where(index)
                if not isinstance(row, dict):  # a line that is not a JSON object
                    raise ValueError(f"{where}: {row.error}")
                rid = f"{part.split}/{seen.get(part.split, 0)}"
                seen[part.split] = seen.get(part.split, 0) + 1
                examples.extend(_located(_dataset_row, where, row, rid, part.base_dir))
                index += 1
    return out


def _dataset_row(row: dict[str, Any], id: str, base: Path | None) -> list[Example]:
    rid = str(row.get("id", id))
    image = _image_bytes(row.get("image"), base) if "image" in row else None
    if row.get("question"):
        answers = row.get("answers") or row.get("answer")
        if isinstance(answers, str):
            answers = [answers]
        answers = [a["answer"] if isinstance(a, dict) else str(a) for a in answers or []]
        return [vqa_example(rid, image, str(row["question"]), answers)] if answers else []
    caps = row.get("captions") or row.get("caption") or (row.get("text") if image is not None else None)
    if image is not None and caps:
        caps = [caps] if isinstance(caps, str) else [str(c) for c in caps]
        return [caption_example(rid, image, caps)]
    if row.get("prompt") and (row.get("target") or row.get("answer")):
        target = str(row.get("target") or row.get("answer"))
        return [Example(id=rid, kind="text", prompt=str(row["prompt"]), target=target, references=(target,))]
    if row.get("text"):
        return [
            Example(id=rid, kind="text", prompt="", target=str(row["text"]), references=(str(row["text"]),))
        ]
    return []
