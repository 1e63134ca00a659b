"""The sweep's live view: a rich panel on a terminal, a plain status line per event otherwise.

Same switch as `mmsynth run`'s display (factory/engine/progress.py): `console.is_terminal` picks the
panel, redrawn in place by rich's refresh thread (so the elapsed time moves while a student trains);
anything else (a pipe, a CI log) gets one line each time the sweep finishes something. A sweep's
events are seconds to minutes apart, so a line per event is few lines. Both go to stderr.

`SweepView` is what `measure.generate` and `measure.measure` report to (the `SweepEvents` seam); it
keeps only what the view shows: variants generated, the current rung and its arms, each variant's gain
on this rung, and the current best with its interval (and how far it is ahead of #2).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mmsynth.factory.engine.progress import clock
from mmsynth.factory.sweep.measure import BASELINE, Rung, VariantRun
from mmsynth.factory.sweep.report import rank_key, ranked
from mmsynth.factory.sweep.variants import Variant

REFRESH_PER_SECOND = 2


@dataclass(frozen=True)
class Interval:
    """A paired gain and its interval on the ranking task."""

    gain: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.gain:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]"


@dataclass
class Row:
    """One variant as the view shows it."""

    variant: Variant
    status: str = "waiting"  # waiting, generated, measuring, measured, promoted, cut at <rung>
    accepted: str = ""
    requests: str = ""
    gain: Interval | None = None


@dataclass
class SweepView:
    """The sweep's state for the view; every event updates it and calls `on_change`."""

    name: str = ""
    rows: dict[str, Row] = field(default_factory=dict)
    rung: str = ""
    rung_index: int = 0
    rungs_total: int = 0
    arms_total: int = 0
    arms_done: int = 0
    trained: int = 0
    rank_by: str = ""
    best: str | None = None
    best_gain: Interval | None = None
    runner_up: str | None = None
    ahead: Interval | None = None
    started: float = field(default_factory=time.monotonic)
    elapsed: float | None = None  # frozen by `finish`, so the last frame and line stay as they were
    on_change: Callable[[SweepView], None] | None = None

    # --- events (measure.SweepEvents) ---

    def variants_checked(self, variants: list[Variant]) -> None:
        self.rows = {v.name: Row(v) for v in variants}
        self._changed()

    def variant_generated(self, run: VariantRun) -> None:
        row = self.rows.setdefault(run.variant.name, Row(run.variant))
        row.status = "generated"
        row.accepted = f"{run.accepted}/{run.total}"
        row.requests = f"{run.requests_sent} / {run.requests_reused}"
        self._changed()

    def rung_started(self, rung: Rung, index: int, total: int, rank_by: str | None) -> None:
        task, k = rank_key(rung, rank_by)
        self.rung, self.rung_index, self.rungs_total = rung.name, index, total
        self.rank_by = f"{task}@{k}"
        self.arms_total, self.arms_done = len(rung.arms) + 1, 0
        self.best = self.runner_up = None
        self.best_gain = self.ahead = None
        for name in rung.arms:
            self.rows[name].status = "measuring"
            self.rows[name].gain = None
        self._changed()

    def arm_measured(self, rung: Rung, arm: str, trained: int, rank_by: str | None) -> None:
        """After each arm: its gain, and the best of the arms measured so far on this rung."""
        self.arms_done += 1
        self.trained = trained
        scores = rung.measurement.scores
        if BASELINE in scores:
            done = [a for a in rung.arms if a in scores]
            for a in done if arm == BASELINE else [arm]:
                self.rows[a].gain = _interval(rung, a, BASELINE, rank_by)
                self.rows[a].status = "measured"
            order = ranked(rung, done, rank_by)
            if order:
                self.best, self.best_gain = order[0], self.rows[order[0]].gain
                self.runner_up = order[1] if len(order) > 1 else None
                self.ahead = _interval(rung, order[0], order[1], rank_by) if len(order) > 1 else None
        self._changed()

    def variants_cut(self, rung: Rung, kept: list[str]) -> None:
        for name in rung.arms:
            self.rows[name].status = "promoted" if name in kept else f"cut at {rung.name}"
        self._changed()

    def finish(self) -> None:
        if self.elapsed is None:
            self.elapsed = time.monotonic() - self.started

    def _changed(self) -> None:
        if self.on_change:
            self.on_change(self)

    # --- what both displays read ---

    def seconds(self) -> float:
        return self.elapsed if self.elapsed is not None else time.monotonic() - self.started

    def generated(self) -> int:
        return sum(r.status != "waiting" for r in self.rows.values())

    def rung_text(self) -> str:
        if not self.rung:
            return "generating"
        return (
            f"rung {self.rung} ({self.rung_index + 1} of {self.rungs_total}): "
            f"{self.arms_done}/{self.arms_total} arms measured, {self.trained} trainings run"
        )

    def best_text(self) -> str:
        if self.best is None or self.best_gain is None:
            return "best: - (no arm measured yet)"
        text = (
            f"best: {self.best} ({self.rows[self.best].variant.label()}) {self.best_gain} on {self.rank_by}"
        )
        if self.runner_up is not None and self.ahead is not None:
            text += f", ahead of {self.runner_up} by {self.ahead}"
        return text


def _interval(rung: Rung, a: str, b: str, rank_by: str | None) -> Interval:
    task, k = rank_key(rung, rank_by)
    cfg = rung.config
    for g in rung.measurement.compare(cfg, a, b):
        if g["task"] == task and g["shots"] == k:
            return Interval(g["gain"], g["lo"], g["hi"])
    raise ValueError(f"no {task}@{k} in the measurement")


def plain_line(view: SweepView) -> str:
    """One status line: variants generated, rung and arms, current best with its interval, elapsed."""
    return (
        f"[sweep] variants {view.generated()}/{len(view.rows)} generated | {view.rung_text()} | "
        f"{view.best_text()} | elapsed {clock(view.seconds())}"
    )


def render_panel(view: SweepView) -> Panel:
    """The live panel: a header (variants, rung, best), then a row per variant."""
    head = Text.assemble(
        ("variants ", "bold"),
        f"{view.generated()}/{len(view.rows)} generated",
        ("   ", ""),
        (view.rung_text(), "bold" if view.rung else ""),
        ("   elapsed ", "bold"),
        clock(view.seconds()),
    )
    best = Text(view.best_text(), style="green" if view.ahead and view.ahead.lo > 0 else "")
    table = Table(box=None, pad_edge=False)
    for col, just in (
        ("variant", "left"),
        ("values", "left"),
        ("accepted", "right"),
        ("sent / reused", "right"),
        ("status", "left"),
        (f"gain on {view.rank_by or 'the ranking task'}", "right"),
    ):
        table.add_column(col, justify=just, no_wrap=True)
    for name, r in view.rows.items():
        style = "bold green" if name == view.best else ("dim" if r.status.startswith("cut") else "")
        table.add_row(
            name,
            r.variant.label(),
            r.accepted,
            r.requests,
            r.status,
            str(r.gain) if r.gain else "",
            style=style,
        )
    title = f"mmsynth sweep {view.name}".strip()
    return Panel(Group(head, best, Text(""), table), title=title, title_align="left")


@contextmanager
def show_sweep(view: SweepView, enabled: bool = True) -> Iterator[SweepView]:
    """Attach a display to `view` for the block: the panel on a terminal, plain lines otherwise."""
    if not enabled:
        yield view
        return
    console = Console(stderr=True)
    if not console.is_terminal:
        view.on_change = lambda v: print(plain_line(v), file=sys.stderr, flush=True)
        try:
            yield view
        finally:
            view.on_change = None
            view.finish()
        print(plain_line(view), file=sys.stderr, flush=True)
        return
    live = Live(
        get_renderable=lambda: render_panel(view),
        console=console,
        refresh_per_second=REFRESH_PER_SECOND,
    )
    with live:  # stopping draws the last frame, so the final state stays on screen
        try:
            yield view
        finally:
            view.finish()
