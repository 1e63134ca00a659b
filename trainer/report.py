"""The gain report: report.json (everything), report.md (the table people read), gain.png (score vs shots).

Paths are fixed, `<run_dir>/gain/{report.json,report.md,gain.png}`: the publish step reads exactly these.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

from mmsynth.prompts.files import atomic_open, write_atomic

REPORT_DIR = "gain"
FILES = ("report.json", "report.md", "gain.png")


def report_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / REPORT_DIR


def write_report(out_dir: str | Path, report: dict[str, Any]) -> dict[str, Path]:
    """Write the three files (atomically each) into `out_dir`; returns their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in FILES}
    write_atomic(paths["report.json"], json.dumps(report, indent=2, sort_keys=False))
    write_atomic(paths["report.md"], markdown(report))
    with atomic_open(paths["gain.png"]) as f:
        plot(report, f)
    return paths


def _fmt(x: float) -> str:
    return f"{x:+.3f}" if x != 0 else "0.000"


def markdown(report: dict[str, Any]) -> str:
    """The Markdown table: one row per (task, shots, treatment), the gain and its interval, a verdict."""
    cfg = report["config"]
    level = round(100 * report.get("level", 0.95))
    lines = [
        "# Synthetic-data gain",
        "",
        f"Student `{cfg['student']}`, regime `{cfg['regime']}`, {cfg['seeds']} seeds per arm, "
        f"{cfg['steps']} training steps per run, shots {', '.join(map(str, cfg['shots']))} "
        f"({cfg['trials']} exemplar trials for k > 0).",
        f"Gain = treatment score - baseline score on the same evaluation examples; {level}% bootstrap interval "
        "paired over training seeds and evaluation examples.",
        "",
        f"| task | metric | shots | treatment | baseline | treatment score | gain | {level}% CI | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in report["gains"]:
        verdict = "gain" if g["lo"] > 0 else "loss" if g["hi"] < 0 else "no clear effect"
        lines.append(
            f"| {g['task']} | {g['metric']} | {g['shots']} | {g['arm']} | {g['baseline']:.3f} | "
            f"{g['treatment']:.3f} | {_fmt(g['gain'])} | [{_fmt(g['lo'])}, {_fmt(g['hi'])}] | {verdict} |"
        )
    lines += ["", "## Pools", "", "| arm | size | composition |", "|---|---|---|"]
    for name, arm in report["arms"].items():
        comp = ", ".join(f"{k} {v}" for k, v in arm["composition"].items())
        lines.append(f"| {name} | {arm['size']} | {comp} |")
    dec = report.get("decontamination")
    lines += ["", "## Decontamination", ""]
    if not dec or not dec.get("checked"):
        lines.append("Not checked: the synthetic data was **not** compared with the evaluation set.")
    else:
        lines.append(
            f"{dec['n']}-gram overlap of synthetic examples with the evaluation set: "
            f"{dec['contaminated']} of {dec['synthetic']} contaminated; action: **{dec['action']}**."
        )
    notes = report.get("notes") or []
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: str | Path | BinaryIO) -> None:
    """Score vs shots per arm, one panel per task; error bars are the standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(report["tasks"])
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.2 * max(1, len(tasks)), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        for name, arm in report["arms"].items():
            per_shot = arm["scores"].get(task, {})
            shots = sorted(int(k) for k in per_shot)
            means = [per_shot[str(k)]["mean"] for k in shots]
            sds = [float(np.std(per_shot[str(k)]["per_seed"])) for k in shots]
            ax.errorbar(shots, means, yerr=sds, marker="o", capsize=3, label=name)
        ax.set_title(f"{task} ({report['tasks'][task]['metric']})")
        ax.set_xlabel("shots")
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
