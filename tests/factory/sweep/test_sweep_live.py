"""The sweep's live view: a rendered frame in a recording console, the plain lines, and the switch.

The events are fed by hand with made-up scores (three seeds, eight evaluation examples), so the
numbers the view shows are known: v01's data is better than v00's on every example.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from rich.console import Console

from mmsynth.factory.sweep.live import SweepView, plain_line, render_panel, show_sweep
from mmsynth.factory.sweep.measure import BASELINE, Rung, VariantRun, gain_config
from mmsynth.factory.sweep.spec import SweepSpec
from mmsynth.factory.sweep.variants import Variant
from mmsynth.trainer.gain import Measurement
from mmsynth.trainer.tasks import get_task

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
VARIANTS = [
    Variant("v00", {"tasks.captions.sampling.temperature": "2.0"}, {}),
    Variant("v01", {"tasks.captions.sampling.temperature": "0.3"}, {}),
    Variant("v02", {"tasks.captions.sampling.temperature": "1.0"}, {}),
]
MEANS = {BASELINE: 0.2, "v00": 0.1, "v01": 0.6, "v02": 0.3}


def rung(name: str, arms: list[str]) -> Rung:
    spec = SweepSpec(recipe="r.yaml", axes={"x": [1]}, baseline="data", tasks=["caption"], seeds=3)
    cfg = gain_config(spec, "student", steps=10, seeds=3)
    return Rung(name, cfg, arms, Measurement([get_task("caption")], {"caption": []}, {"caption": []}))


def land(view: SweepView, r: Rung, arm: str, trained: int) -> None:
    """Measure `arm` on rung `r` as measure_arms would: (seeds, examples) scores around its mean."""
    noise = np.random.default_rng(len(arm)).normal(0, 0.02, (3, 8))
    r.measurement.scores[arm] = {"caption": {0: MEANS[arm] + noise}}
    view.arm_measured(r, arm, trained, None)


def generated(view: SweepView) -> None:
    view.variants_checked(VARIANTS)
    for i, v in enumerate(VARIANTS):
        view.variant_generated(
            VariantRun(v, Path("runs") / v.name, 10 - i, 12, 12 if i == 0 else 0, 0 if i == 0 else 12)
        )


def swept() -> SweepView:
    """A sweep in its last rung: v02 was cut on the proxy rung, v00 and v01 are measured in full."""
    view = SweepView(name="demo")
    generated(view)
    proxy = rung("proxy", ["v00", "v01", "v02"])
    view.rung_started(proxy, 0, 2, None)
    for i, arm in enumerate([BASELINE, "v00", "v01", "v02"]):
        land(view, proxy, arm, i + 1)
    view.variants_cut(proxy, ["v01", "v00"])
    full = rung("full", ["v01", "v00"])
    view.rung_started(full, 1, 2, None)
    for i, arm in enumerate([BASELINE, "v01", "v00"]):
        land(view, full, arm, 5 + i)
    return view


def test_the_current_best_and_its_interval_follow_the_arms_as_they_land():
    view = SweepView(name="demo")
    generated(view)
    assert view.generated() == 3 and view.rung_text() == "generating"
    r = rung("full", ["v00", "v01"])
    view.rung_started(r, 0, 1, None)
    land(view, r, BASELINE, 1)
    assert view.best is None and view.best_text() == "best: - (no arm measured yet)"
    land(view, r, "v00", 2)
    assert view.best == "v00" and view.best_gain is not None and view.best_gain.hi < 0
    assert view.runner_up is None
    land(view, r, "v01", 3)
    assert view.best == "v01" and view.runner_up == "v00"
    assert view.best_gain.lo > 0.3 and view.ahead is not None and view.ahead.lo > 0.4
    assert view.rung_text() == "rung full (1 of 1): 3/3 arms measured, 3 trainings run"


def test_a_rendered_frame_shows_variants_rung_best_and_who_was_cut():
    view = swept()
    console = Console(record=True, width=160, force_terminal=True)
    console.print(render_panel(view))
    text = console.export_text()
    assert "mmsynth sweep demo" in text
    assert "variants 3/3 generated" in text
    assert "rung full (2 of 2): 3/3 arms measured, 7 trainings run" in text
    assert re.search(
        r"best: v01 \(temperature=0\.3\) \+0\.\d{3} \[\+0\.\d{3}, \+0\.\d{3}\] on caption@0", text
    )
    assert re.search(r"ahead of v00 by \+0\.\d{3} \[\+0\.\d{3}", text)
    for column in ("variant", "values", "accepted", "sent / reused", "status", "gain on caption@0"):
        assert column in text
    rows = {line.split()[1]: line for line in text.splitlines() if re.match(r"^\W*v0\d ", line)}
    assert "cut at proxy" in rows["v02"] and "12 / 0" in rows["v00"] and "0 / 12" in rows["v02"]
    assert "measured" in rows["v01"] and "9/12" in rows["v01"]
    assert re.search(r"\+0\.\d{3} \[\+0\.\d{3}, \+0\.\d{3}\]", rows["v01"])  # its gain on this rung


def test_the_plain_line_says_the_same_without_escape_codes():
    view = swept()
    view.finish()
    line = plain_line(view)
    assert line.startswith(
        "[sweep] variants 3/3 generated | rung full (2 of 2): 3/3 arms measured, 7 trainings run | best: v01"
    )
    assert "on caption@0, ahead of v00 by +0." in line and line.endswith("elapsed 0:00")
    assert "\x1b" not in line


def test_not_a_terminal_prints_a_line_per_event_and_a_last_one(capsys, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    with show_sweep(SweepView(name="demo")) as view:
        generated(view)
    lines = capsys.readouterr().err.splitlines()
    # variants_checked, three variant_generated, and the last line after the block.
    assert len(lines) == 5 and all(line.startswith("[sweep] variants ") for line in lines)
    assert lines[0].startswith("[sweep] variants 0/3 generated | generating")
    assert lines[-1].startswith("[sweep] variants 3/3 generated | generating")
    assert view.on_change is None


def test_a_terminal_gets_the_panel_and_no_plain_line(capsys, monkeypatch):
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    with show_sweep(SweepView(name="demo")) as view:
        generated(view)
    err = capsys.readouterr().err
    assert "\x1b[" in err  # drawn in place with escape codes
    text = ANSI.sub("", err)
    assert "mmsynth sweep demo" in text and "variants 3/3 generated" in text
    assert "[sweep] variants" not in text


def test_disabled_shows_nothing(capsys):
    with show_sweep(SweepView(name="demo"), enabled=False) as view:
        generated(view)
    assert capsys.readouterr().err == ""
