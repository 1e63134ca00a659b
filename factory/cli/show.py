"""`mmsynth show`: one record of a run, as readable JSON and optionally as a picture.

Reads the Parquet shards directly (no `datasets` cache involved), so it always shows what is on disk.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mmsynth.prompts.media import ImageRef

# Columns that hold JSON text in the shards, shown decoded.
_JSON_COLUMNS = ("parsed", "seed", "sampling", "generation")


def read_record(run: Path, subset: str, split: str, index: int) -> dict[str, Any]:
    """The `index`-th row of a subset and split, in shard order; ValueError saying what exists if absent."""
    files = sorted((run / "data" / subset).glob(f"{split}-*.parquet"))
    if not files:
        have = sorted(p.name for p in (run / "data").glob("*")) if (run / "data").exists() else []
        raise ValueError(
            f"no {split} shards for '{subset}' in {run}/data (subsets: {', '.join(have) or 'none'})"
        )
    seen = 0
    for f in files:
        n = pq.ParquetFile(f).metadata.num_rows
        if index < seen + n:
            return pq.read_table(f).slice(index - seen, 1).to_pylist()[0]
        seen += n
    raise ValueError(f"'{subset}' {split} has {seen} records; index {index} is out of range")


def readable(row: dict[str, Any]) -> dict[str, Any]:
    """The row with JSON columns decoded and image bytes replaced by their size."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in _JSON_COLUMNS and isinstance(v, str):
            v = json.loads(v)
        elif k == "image" and v:
            v = f"<image, {len(v['bytes'])} bytes>"
        elif k == "images":
            v = [None if x is None else f"<image, {len(x['bytes'])} bytes>" for x in v]
        out[k] = v
    return out


def render_png(row: dict[str, Any], path: Path, width: int = 520) -> None:
    """A picture of the record: a document's texts and images in order, or an image with its text."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=14)
    blocks: list[Any] = []
    if row.get("texts"):
        for text, img in zip(row["texts"], row["images"], strict=True):
            blocks.append(text if text is not None else _image(img))
    else:
        if row.get("image"):
            blocks.append(_image(row["image"]))
        blocks.append(f"[{row['task']}] {row['output']}")
        if row.get("reject_reason"):
            blocks.append(f"rejected: {row['reject_reason']}")
    rendered = []
    for b in blocks:
        if isinstance(b, str):
            lines = [ln for para in b.splitlines() for ln in textwrap.wrap(para, 64) or [""]][:12]
            rendered.append(("text", lines, 18 * len(lines) + 8))
        else:
            scale = min(4, max(1, 256 // max(b.size)))
            img = b.resize((b.width * scale, b.height * scale), Image.NEAREST)
            rendered.append(("image", img, img.height + 8))
    canvas = Image.new("RGB", (width, sum(h for *_, h in rendered) + 16), "white")
    draw, y = ImageDraw.Draw(canvas), 8
    for kind, content, h in rendered:
        if kind == "text":
            for i, line in enumerate(content):
                draw.text((12, y + 18 * i), line, fill="black", font=font)
        else:
            canvas.paste(content, (12, y))
        y += h
    canvas.save(path)


def _image(cell: dict[str, Any]):
    """The cell's pixels, by the one decoder (refuses an image over the pixel limit, by name)."""
    image = ImageRef.from_cell(cell, source="the record's image")
    if image is None:
        raise ValueError("the record's image cell is empty")
    return image.to_pil()


def cmd_show(args: argparse.Namespace) -> int:
    try:
        row = read_record(Path(args.run_dir), args.subset, args.split, args.index)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(readable(row), indent=2, ensure_ascii=False, default=str))
    if args.png:
        try:
            render_png(row, Path(args.png))
        except ValueError as e:  # an image that cannot be decoded, or one over the pixel limit
            print(f"error: {args.subset} {args.split} #{args.index}: {e}", file=sys.stderr)
            return 2
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def add_show_command(sub) -> None:
    s = sub.add_parser("show", help="print one record of a run (and optionally render it as a PNG)")
    s.add_argument("run_dir")
    s.add_argument("subset", help="a task or document subset name (a dataset config)")
    s.add_argument("--split", choices=["train", "rejected"], default="train")
    s.add_argument("--index", type=int, default=0, help="which record, in shard order")
    s.add_argument(
        "--png", help="also draw the record (a document's texts and images in order) into this file"
    )
    s.set_defaults(func=cmd_show)
