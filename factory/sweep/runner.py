"""Run a sweep into a folder; a rerun of the same command resumes it and gives the same report.

SWEEP/variants/vNN.yaml     each variant's runnable recipe
SWEEP/cache/                one response cache for every variant (a validator-only change sends nothing)
SWEEP/runs/vNN/             each variant's run folder (resumable like any run)
SWEEP/arms/                 each (pool, seed)'s scores: nothing is trained twice
SWEEP/report.json, report.md, gain_vs_cost.png, best-recipe.yaml
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from mmsynth.factory.sweep.live import SweepView, show_sweep
from mmsynth.factory.sweep.measure import generate, measure, write_json
from mmsynth.factory.sweep.report import (
    build_report,
    plot_gain_vs_cost,
    ranked,
    render_markdown,
    write_winner,
)
from mmsynth.factory.sweep.spec import SweepSpec, baseline_path, load_sweep
from mmsynth.factory.sweep.variants import Variant, ablations, expand, write_variants
from mmsynth.generators.model_paths import resolve_model_path


def run_sweep(
    spec_path: str | Path, out: str | Path, log: Callable[[str], None] = print, live: bool = False
) -> dict[str, Any]:
    """Run the sweep file at `spec_path` into `out`. Every variant is checked before any work starts.

    `live` shows the sweep's live view on stderr (a panel on a terminal, status lines otherwise)."""
    spec, recipe_path, root = load_sweep(spec_path)
    return _run(spec, Path(spec_path), root, recipe_path, expand(spec), Path(out), log, live)


def run_ablation(
    recipe: str | Path,
    out: str | Path,
    log: Callable[[str], None] = print,
    live: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """Leave each validator of `recipe` out in turn; `fields` are the SweepSpec's (baseline, student, ...)."""
    recipe_path = Path(recipe).resolve()
    spec = SweepSpec(recipe=str(recipe_path), axes={"validators": ["(ablation)"]}, **fields)
    variants = ablations(yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {})
    return _run(spec, recipe_path, None, recipe_path, variants, Path(out), log, live)


def _run(
    spec: SweepSpec,
    spec_path: Path,
    root: Any,
    recipe_path: Path,
    variants: list[Variant],
    out: Path,
    log: Callable[[str], None],
    live: bool,
) -> dict[str, Any]:
    recipes = write_variants(
        spec_path, root, recipe_path, variants, out / "variants", (out / "cache").resolve()
    )
    log(f"[sweep] {len(variants)} variants checked: {', '.join(f'{v.name} ({v.label()})' for v in variants)}")
    with show_sweep(SweepView(name=out.name), enabled=live) as view:
        view.variants_checked(variants)
        runs = generate(recipes, variants, out / "runs", log, view)
        student = resolve_model_path(spec.student)
        baseline = baseline_path(spec, out)
        rungs, info = measure(
            spec,
            baseline,
            student,
            runs,
            out / "arms",
            lambda r, arms: ranked(r, arms, spec.rank_by),
            log,
            view,
        )
    report = build_report(rungs, runs, spec.rank_by, info)
    markdown = render_markdown(report)
    write_json(out / "report.json", report)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    plot_gain_vs_cost(report, out / "gain_vs_cost.png")
    best = write_winner(report, recipes[report["best"]], out, markdown, runs[report["best"]].run_dir)
    log(
        f"[sweep] best: {report['best']} ({', '.join(f'{k}={v}' for k, v in report['best_values'].items())}); recipe: {best}"
    )
    return report


def read_report(out: str | Path) -> dict[str, Any]:
    return json.loads((Path(out) / "report.json").read_text())
