"""Progress display: a live rich panel on a terminal, a plain log line every few seconds otherwise.

Both read the same numbers: the engine's totals (`Progress`) and its per task and per model counters
(`Progress.meter`, factory/engine/meter.py). The panel is redrawn in place by rich's refresh thread, so
it stays current (elapsed time, requests in flight) while a long batch runs; the plain line is written
when the engine counts something, at most every `PLAIN_EVERY_S` seconds, and once more at the end.
Both go to stderr, so stdout keeps only the run's result.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mmsynth.factory.engine.chunks import Progress
from mmsynth.factory.engine.meter import MeterSnapshot

PLAIN_EVERY_S = 5.0
REFRESH_PER_SECOND = 4
REASON_WIDTH = 60  # characters of the top reject reason shown (the rest as an ellipsis)


@dataclass(frozen=True)
class RunShape:
    """What the display knows of the run before it starts: its name and how much work there is."""

    name: str = ""
    chunks_total: int | None = None  # None when the seed count is unknown (a streamed source)
    requests_total: int | None = None  # an estimate: seeds x tasks (a `for_each` task makes more)


@contextmanager
def show_progress(
    progress: Progress,
    seeds_total: int | None,
    tasks: int,
    enabled: bool = True,
    chunk_size: int | None = None,
    name: str = "",
):
    """Attach a display to `progress` for the duration of the block (nothing when not `enabled`)."""
    if not enabled:
        yield
        return
    shape = RunShape(
        name=name,
        chunks_total=math.ceil(seeds_total / chunk_size) if seeds_total is not None and chunk_size else None,
        requests_total=seeds_total * tasks if seeds_total is not None else None,
    )
    console = Console(stderr=True)
    if not console.is_terminal:
        last = [0.0]

        def log(p: Progress) -> None:
            now = time.monotonic()
            if now - last[0] >= PLAIN_EVERY_S:
                last[0] = now
                print(plain_line(p, p.meter.snapshot(), shape), file=sys.stderr, flush=True)

        progress.on_change = log
        try:
            yield
        finally:
            progress.on_change = None
        print(plain_line(progress, progress.meter.snapshot(), shape), file=sys.stderr, flush=True)
        return
    live = Live(
        get_renderable=lambda: render_panel(progress, progress.meter.snapshot(), shape),
        console=console,
        refresh_per_second=REFRESH_PER_SECOND,
    )
    with live:  # stopping draws the last frame, so the final counts stay on screen
        yield


def eta_seconds(p: Progress, snap: MeterSnapshot, shape: RunShape) -> float | None:
    """Seconds left, from finished chunks (or, before the first, answered requests); None when unknown."""
    if shape.chunks_total and p.chunks_done:
        left = max(shape.chunks_total - p.chunks_done, 0)
        return snap.elapsed * left / p.chunks_done
    total = shape.requests_total or p.requests_total
    if total and p.requests_done:
        return snap.elapsed * max(total - p.requests_done, 0) / p.requests_done
    return None


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _rate(n: int, seconds: float) -> str:
    r = n / seconds if seconds > 0 else 0.0
    return f"{r:.0f}" if r >= 100 else f"{r:.1f}"


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def _chunks(p: Progress, shape: RunShape) -> str:
    return f"{p.chunks_done}/{shape.chunks_total}" if shape.chunks_total is not None else str(p.chunks_done)


def plain_line(p: Progress, snap: MeterSnapshot, shape: RunShape) -> str:
    """One log line: totals, then each task and each model, in the order they first did something."""
    el = snap.elapsed
    parts = [
        f"[mmsynth] requests {p.requests_done}/{p.requests_total}  accepted {p.accepted}  "
        f"rejected {p.rejected}  failed {p.failed}  chunks {_chunks(p, shape)}  "
        f"elapsed {clock(el)}  ETA {clock(eta_seconds(p, snap, shape))}"
    ]
    for t in snap.tasks:
        reason = f", top reject {t.top_reason} ({t.top_count})" if t.top_reason else ""
        parts.append(
            f"task {t.name}: {t.records} records ({_rate(t.records, el)}/s, "
            f"{_share(t.accepted, t.records)} accepted{reason})"
        )
    for m in snap.models:
        parts.append(
            f"model {m.name}: {m.in_flight}/{m.limit} in flight, tokens/s {_rate(m.prompt_tokens, el)} in "
            f"{_rate(m.completion_tokens, el)} out, {m.errors} errors, {m.retries} retries"
        )
    return " | ".join(parts)


def render_panel(p: Progress, snap: MeterSnapshot, shape: RunShape) -> Panel:
    """The live panel: a header of totals, a row per task, a row per model."""
    el = snap.elapsed
    head = Text.assemble(
        ("chunks ", "bold"),
        _chunks(p, shape),
        ("   requests ", "bold"),
        f"{p.requests_done}/{p.requests_total}",
        ("   records ", "bold"),
        (f"{p.accepted} accepted", "green"),
        " ",
        (f"{p.rejected} rejected", "red"),
        " ",
        (f"{p.failed} failed", "yellow"),
        ("   elapsed ", "bold"),
        clock(el),
        ("   ETA ", "bold"),
        clock(eta_seconds(p, snap, shape)),
    )
    tasks = Table(title="tasks", title_justify="left", box=None, pad_edge=False)
    for col, just in (("task", "left"), ("records", "right"), ("records/s", "right"), ("accepted", "right")):
        tasks.add_column(col, justify=just, no_wrap=True)
    tasks.add_column("top reject reason", overflow="ellipsis", no_wrap=True, max_width=REASON_WIDTH)
    for t in snap.tasks:
        reason = f"{t.top_reason} ({t.top_count})" if t.top_reason else ""
        tasks.add_row(t.name, str(t.records), _rate(t.records, el), _share(t.accepted, t.records), reason)
    if not snap.tasks:
        tasks.add_row("(waiting for the first chunk)", "", "", "", "")
    models = Table(title="models", title_justify="left", box=None, pad_edge=False)
    for col in ("model", "backend", "in flight", "limit", "tokens/s in", "tokens/s out", "errors", "retries"):
        models.add_column(col, justify="left" if col in ("model", "backend") else "right", no_wrap=True)
    for m in snap.models:
        models.add_row(
            m.name,
            m.backend,
            str(m.in_flight),
            str(m.limit),
            _rate(m.prompt_tokens, el),
            _rate(m.completion_tokens, el),
            Text(str(m.errors), style="red" if m.errors else ""),
            str(m.retries),
        )
    title = f"mmsynth run {shape.name}".strip()
    return Panel(Group(head, Text(""), tasks, Text(""), models), title=title, title_align="left")
