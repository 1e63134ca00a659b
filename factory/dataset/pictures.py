"""The dataset card's pictures, drawn with Pillow from the run folder's shards: a sample grid (a few
accepted records with their images and outputs, and one rejected record of the run's most common kind
of reject, with its reason) and the score histograms of the validators that score (kept and rejected
records stacked in each bin).

The run folder's README (card.py) and the published card (factory/publish/) link the same drawings.
Deterministic: the records shown are the first ones (of that kind, for the reject) in task and shard
order, the drawing uses Pillow's bundled font, and PNG encoding has no timestamp, so the same run gives
the same bytes. Bounded: at most `MAX_ACCEPTED` + 1 cells of `CELL_W` x `CELL_H` pixels, and
`MAX_HISTOGRAMS` panels.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mmsynth.prompts.files import write_atomic
from mmsynth.prompts.media import ImageRef
from mmsynth.validators import RECORD_REASON_FIELDS, reason_key

SAMPLES = "images/samples.png"
SCORES = "images/scores.png"
MAX_ACCEPTED = 6
GRID_COLUMNS = 4
THUMB = 160
CELL_W, CELL_H = 200, 300
TEXT_LINES = 7
MAX_HISTOGRAMS = 6
BINS = 20
PANEL_W, PANEL_H = 380, 200
COLUMNS = ["task", "output", "reject_reason", "image", "texts", "images"]
KEPT, REJECTED, INK, MUTED, PAPER, EDGE = "#3c9a5f", "#c8553d", "#222222", "#777777", "#ffffff", "#dddddd"


@dataclass(frozen=True)
class Picture:
    """One drawing for the card: its path in the folder (and in the dataset repository), alt text, bytes."""

    path: str
    alt: str
    data: bytes


def card_pictures(
    run_dir: Path, tasks: list[str], stats: dict[str, Any], include_rejected: bool = True
) -> list[Picture]:
    """The card's pictures of a run: the sample grid (with a rejected record when `include_rejected` and
    there is one) and the score histograms; a picture with nothing to show is left out."""
    out = []
    # The rejected record shown is one of the run's most common kind of reject, not a stray one.
    rows = pick_samples(run_dir, tasks, include_rejected, top_reason(stats))
    if rows:
        n_acc = sum(r.get("reject_reason") is None for r in rows)
        what = [f"{n_acc} accepted record{'s' * (n_acc != 1)}"] if n_acc else []
        if n_acc < len(rows):
            what.append(f"a rejected one ({reason_key(rows[-1]['reject_reason'], RECORD_REASON_FIELDS)})")
        alt = f"Samples: {' and '.join(what)}, with their images and outputs"
        out.append(Picture(SAMPLES, alt, sample_grid(rows)))
    scores = score_histograms(run_dir, tasks, stats)
    if scores is not None:
        out.append(Picture(SCORES, "Validator score histograms, kept and rejected records", scores))
    return out


def write_pictures(run_dir: Path, tasks: list[str], stats: dict[str, Any]) -> list[Picture]:
    """Draw the card's pictures into RUN/images/ (atomically; old ones removed) and return them."""
    pictures = card_pictures(run_dir, tasks, stats)
    for name in (SAMPLES, SCORES):
        if name not in {p.path for p in pictures}:
            (run_dir / name).unlink(missing_ok=True)
    for p in pictures:
        (run_dir / p.path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / p.path, p.data)
    return pictures


# --- reading -----------------------------------------------------------------------------------------


def _shards(run_dir: Path, task: str, split: str) -> list[Path]:
    return sorted((run_dir / "data" / task).glob(f"{split}-*.parquet"))


def _first_rows(files: list[Path], n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in files:
        pf = pq.ParquetFile(f)
        cols = [c for c in COLUMNS if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=n - len(rows), columns=cols):
            rows.extend(batch.to_pylist())
            if len(rows) >= n:
                return rows[:n]
    return rows


def pick_samples(
    run_dir: Path, tasks: list[str], include_rejected: bool = True, reason: str | None = None
) -> list[dict[str, Any]]:
    """Up to MAX_ACCEPTED accepted rows taken in turn from each task, then one rejected row: the first
    whose reject reason falls in the group `reason` (as stats.json groups them), else the first one."""
    per_task = {t: _first_rows(_shards(run_dir, t, "train"), MAX_ACCEPTED) for t in tasks}
    rows: list[dict[str, Any]] = []
    for i in range(MAX_ACCEPTED):
        for t in tasks:
            if i < len(per_task[t]) and len(rows) < MAX_ACCEPTED:
                rows.append(per_task[t][i])
    if include_rejected:
        files = [f for t in tasks for f in _shards(run_dir, t, "rejected")]
        row = (_first_with_reason(files, reason) if reason else None) or next(
            iter(_first_rows(files, 1)), None
        )
        if row is not None:
            rows.append(row)
    return rows


def top_reason(stats: dict[str, Any]) -> str | None:
    """The reject-reason group with the most records in stats.json (ties: the first by name), or None."""
    reasons = stats.get("reject_reasons") or {}
    return min(reasons, key=lambda k: (-reasons[k], k)) if reasons else None


def _first_with_reason(files: list[Path], group: str) -> dict[str, Any] | None:
    """The first row of `files` whose reject reason groups as `group`; only that shard's row is decoded."""
    for f in files:
        reasons = pq.read_table(f, columns=["reject_reason"]).column(0).to_pylist()
        i = next((i for i, r in enumerate(reasons) if reason_key(r, RECORD_REASON_FIELDS) == group), None)
        if i is not None:
            cols = [c for c in COLUMNS if c in pq.ParquetFile(f).schema_arrow.names]
            return pq.read_table(f, columns=cols).slice(i, 1).to_pylist()[0]
    return None


def _image_of(row: dict[str, Any]):
    """The row's image (a document's first), as RGB, or None when it has none or it cannot be decoded."""
    cells = [row.get("image"), *(row.get("images") or [])]
    for cell in cells:
        if cell and cell.get("bytes"):
            try:
                return ImageRef.from_cell(cell, source="a card sample").to_pil()
            except ValueError:  # drawn as "no image": the card is no place to fail a finished run
                return None
    return None


def _text_of(row: dict[str, Any]) -> str:
    if row.get("texts"):
        return " / ".join(t for t in row["texts"] if t)
    return row.get("output") or ""


# --- drawing -----------------------------------------------------------------------------------------


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _wrap(text: str, font, width: int, lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels, at most `lines` lines (the last ends in '...' when cut)."""
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    out: list[str] = []
    line = ""
    for word in text.split():
        while font.getlength(word) > width:  # a word longer than the line: cut it
            cut = max(1, next((i for i in range(len(word), 0, -1) if font.getlength(word[:i]) <= width), 1))
            if line:
                out.append(line)
                line = ""
            out.append(word[:cut])
            word = word[cut:]
        trial = f"{line} {word}".strip()
        if font.getlength(trial) <= width:
            line = trial
        else:
            out.append(line)
            line = word
    if line:
        out.append(line)
    if len(out) > lines:
        out = out[:lines]
        last = out[-1]
        while last and font.getlength(last + " ...") > width:
            last = last[:-1]
        out[-1] = last + " ..."
    return out


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def sample_grid(rows: list[dict[str, Any]]) -> bytes:
    """The grid of `rows` (from `pick_samples`, at least one) as PNG bytes."""
    from PIL import Image, ImageDraw, ImageOps

    cols = min(GRID_COLUMNS, len(rows))
    canvas = Image.new("RGB", (cols * CELL_W, math.ceil(len(rows) / cols) * CELL_H), PAPER)
    draw = ImageDraw.Draw(canvas)
    head, body = _font(13), _font(11)
    for i, row in enumerate(rows):
        x, y = (i % cols) * CELL_W, (i // cols) * CELL_H
        accepted = row.get("reject_reason") is None
        draw.rectangle(
            [x + 3, y + 3, x + CELL_W - 4, y + CELL_H - 4], outline=KEPT if accepted else REJECTED, width=2
        )
        label = f"{row.get('task')}: " + ("accepted" if accepted else "rejected")
        draw.text((x + 12, y + 10), label, fill=KEPT if accepted else REJECTED, font=head)
        box = (x + (CELL_W - THUMB) // 2, y + 30)
        img = _image_of(row)
        if img is None:
            draw.rectangle(
                [box[0], box[1], box[0] + THUMB - 1, box[1] + THUMB - 1], fill="#f3f3f3", outline=EDGE
            )
            draw.text((box[0] + 48, box[1] + 72), "no image", fill=MUTED, font=body)
        else:
            # Small images (rendered scenes are 64 px) are enlarged without smoothing, so pixels stay pixels.
            method = Image.NEAREST if max(img.size) <= THUMB else Image.LANCZOS
            thumb = ImageOps.contain(img, (THUMB, THUMB), method=method)
            canvas.paste(thumb, (box[0] + (THUMB - thumb.width) // 2, box[1] + (THUMB - thumb.height) // 2))
        lines = _wrap(_text_of(row), body, CELL_W - 24, TEXT_LINES)
        if not accepted:
            reason = _wrap(f"reason: {row.get('reject_reason')}", body, CELL_W - 24, 3)
            lines = lines[: TEXT_LINES - len(reason)] + reason
        ty = y + 30 + THUMB + 8
        for j, line in enumerate(lines):
            is_reason = not accepted and j >= len(lines) - len(reason)
            draw.text((x + 12, ty + 14 * j), line, fill=REJECTED if is_reason else INK, font=body)
    return _png(canvas)


def _scored(stats: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(validator, min, max) of the validators whose scores stats.json summarises, in its order."""
    out = []
    for name, v in (stats.get("validators") or {}).items():
        score = v.get("score") or {}
        if score.get("count") and score.get("min") is not None and score.get("max") is not None:
            out.append((name, float(score["min"]), float(score["max"])))
    return out[:MAX_HISTOGRAMS]


def score_counts(run_dir: Path, tasks: list[str], stats: dict[str, Any]) -> dict[str, dict[str, list]]:
    """Per scored validator: BINS equal bins over the range stats.json gives, with the kept and the
    rejected verdicts counted apart. Read shard by shard (only the `verdicts` column): memory stays small."""
    ranges = {name: (lo, hi if hi > lo else lo + 1.0) for name, lo, hi in _scored(stats)}
    counts = {name: {"kept": [0] * BINS, "rejected": [0] * BINS} for name in ranges}
    for t in tasks:
        for f in _shards(run_dir, t, "train") + _shards(run_dir, t, "rejected"):
            for verdicts in pq.read_table(f, columns=["verdicts"]).column("verdicts").to_pylist():
                for v in verdicts or ():
                    name, score = v.get("validator"), v.get("score")
                    if name not in ranges or score is None or math.isnan(score):
                        continue
                    lo, hi = ranges[name]
                    b = min(max(int((score - lo) / (hi - lo) * BINS), 0), BINS - 1)
                    counts[name]["kept" if v.get("keep") else "rejected"][b] += 1
    for name, (lo, hi) in ranges.items():
        counts[name]["edges"] = [lo + (hi - lo) * i / BINS for i in range(BINS + 1)]
    return counts


def score_histograms(run_dir: Path, tasks: list[str], stats: dict[str, Any]) -> bytes | None:
    """The histograms as PNG bytes, two panels a row; None when no validator gave scores."""
    from PIL import Image, ImageDraw

    counts = score_counts(run_dir, tasks, stats)
    counts = {k: c for k, c in counts.items() if sum(c["kept"]) + sum(c["rejected"])}
    if not counts:
        return None
    cols = min(2, len(counts))
    canvas = Image.new("RGB", (cols * PANEL_W, math.ceil(len(counts) / cols) * PANEL_H), PAPER)
    draw = ImageDraw.Draw(canvas)
    head, small = _font(13), _font(10)
    for i, (name, c) in enumerate(counts.items()):
        x0, y0 = (i % cols) * PANEL_W, (i // cols) * PANEL_H
        total = [k + r for k, r in zip(c["kept"], c["rejected"], strict=True)]
        n = sum(total)
        draw.text((x0 + 12, y0 + 8), f"{name}: {n} scores", fill=INK, font=head)
        draw.text((x0 + PANEL_W - 120, y0 + 10), "kept", fill=KEPT, font=small)
        draw.text((x0 + PANEL_W - 85, y0 + 10), "rejected", fill=REJECTED, font=small)
        left, right, top, bottom = x0 + 40, x0 + PANEL_W - 14, y0 + 32, y0 + PANEL_H - 30
        draw.line([left, bottom, right, bottom], fill=MUTED)
        draw.line([left, top, left, bottom], fill=MUTED)
        peak = max(total) or 1
        draw.text((x0 + 8, top - 4), str(peak), fill=MUTED, font=small)
        draw.text((x0 + 8, bottom - 10), "0", fill=MUTED, font=small)
        width = (right - left) // BINS
        for b in range(BINS):
            bx0, bx1 = left + b * width + 1, left + (b + 1) * width - 1
            # Whole pixels, at least one for a bin that has any: a single record still shows.
            kh, rh = (_bar(c[k][b], peak, bottom - top) for k in ("kept", "rejected"))
            if kh:
                draw.rectangle([bx0, bottom - kh, bx1, bottom - 1], fill=KEPT)
            if rh:
                draw.rectangle([bx0, bottom - kh - rh, bx1, bottom - kh - 1], fill=REJECTED)
        lo, hi = c["edges"][0], c["edges"][-1]
        draw.text((left, bottom + 6), f"{lo:.3g}", fill=MUTED, font=small)
        label = f"{hi:.3g}"
        draw.text((right - small.getlength(label), bottom + 6), label, fill=MUTED, font=small)
    return _png(canvas)


def _bar(count: int, peak: int, height: int) -> int:
    return max(1, round(height * count / peak)) if count else 0
