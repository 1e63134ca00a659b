"""Progress display: a live rich panel on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from mmsynth.factory.engine.chunks import Progress


@contextmanager
def show_progress(
    progress: Progress, seeds_total: int | None, tasks: int, outputs_per_seed: int = 1, enabled: bool = True
):
    """Attach a display to `progress` for the duration of the block."""
    console = Console(stderr=True)
    if not enabled:
        yield
        return
    if not console.is_terminal:
        last = [0.0]

        def log(p: Progress) -> None:
            now = time.monotonic()
            if now - last[0] >= 5:
                last[0] = now
                print(
                    f"[mmsynth] requests {p.requests_done}/{p.requests_total}  accepted {p.accepted}  "
                    f"rejected {p.rejected}  failed {p.failed}  chunks {p.chunks_done}",
                    file=sys.stderr,
                    flush=True,
                )

        progress.on_change = log
        yield
        progress.on_change = None
        return
    bar = RichProgress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[extra]}"),
        console=console,
        refresh_per_second=4,
    )
    start = time.monotonic()
    total_req = seeds_total * tasks if seeds_total is not None else None
    gen = bar.add_task("generate", total=total_req, rate="", extra="")
    # A failed request yields one record instead of n, so this total is an upper bound.
    total_rec = seeds_total * outputs_per_seed if seeds_total is not None else None
    rec = bar.add_task("records", total=total_rec, rate="", extra="")

    def update(p: Progress) -> None:
        el = max(time.monotonic() - start, 1e-6)
        bar.update(
            gen,
            completed=p.requests_done,
            total=total_req or p.requests_total or None,
            rate=f"{p.requests_done / el:.1f} req/s",
        )
        done = p.accepted + p.rejected
        bar.update(
            rec,
            completed=done,
            rate=f"{done / el:.1f} rec/s",
            extra=f"[green]{p.accepted} accepted[/] [red]{p.rejected} rejected[/] [yellow]{p.failed} failed[/]",
        )

    progress.on_change = update
    with bar:
        yield
        update(progress)
    progress.on_change = None
