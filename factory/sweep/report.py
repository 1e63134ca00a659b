"""Rank the variants by the gain their data buys, with paired intervals, and write the winner out.

The ranking metric is one `task@shots` (`rank_by`, default the first task at the first shot count).
"Best by +X [lo, hi]" is the paired bootstrap of the best variant's scores minus each other one's,
on the same evaluation examples and training seeds: an interval above zero means #1 is really ahead.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mmsynth.factory.sweep.measure import BASELINE, Rung, VariantRun


def rank_key(rung: Rung, rank_by: str | None) -> tuple[str, int]:
    """(task, shots) that ranks the variants."""
    m = rung.measurement
    if rank_by:
        task, _, shots = rank_by.partition("@")
        names = [t.name for t in m.tasks]
        if task not in names:
            raise ValueError(f"rank_by: no task {task!r} in the measurement (tasks: {', '.join(names)})")
        return task, int(shots or rung.config.shots[0])
    return m.tasks[0].name, rung.config.shots[0]


def ranked(rung: Rung, arms: list[str], rank_by: str | None = None) -> list[str]:
    """`arms` best first by their mean score on the ranking task; ties keep the sweep's order."""
    task, k = rank_key(rung, rank_by)
    scores = rung.measurement.scores
    return sorted(arms, key=lambda a: (-float(scores[a][task][k].mean()), arms.index(a)))


def build_report(
    rungs: list[Rung], runs: dict[str, VariantRun], rank_by: str | None, info: dict
) -> dict[str, Any]:
    """The sweep's report: every variant's gains, the ranking, best-versus-each, and who was cut where."""
    full = rungs[-1]
    cfg = full.config
    order = ranked(full, full.arms, rank_by)
    task, k = rank_key(full, rank_by)
    best = order[0]
    m = full.measurement
    variants = []
    for name in order:
        gains = m.compare(cfg, name, BASELINE)
        versus = [] if name == best else m.compare(cfg, best, name)
        variants.append(
            {**runs[name].summary(), "rung": full.name, "gains": gains, "best_minus_this": versus}
        )
    cut = []
    for i, rung in enumerate(rungs[:-1]):
        promoted = set(rungs[i + 1].arms)
        for name in ranked(rung, rung.arms, rank_by):
            if name in promoted:
                continue
            gains = rung.measurement.compare(rung.config, name, BASELINE)
            cut.append({**runs[name].summary(), "rung": rung.name, "cut_at": rung.name, "gains": gains})
    return {
        "version": 1,
        "rank_by": f"{task}@{k}",
        "best": best,
        "best_values": runs[best].variant.values,
        "level": cfg.level,
        "config": {
            "student": cfg.student,
            "seeds": cfg.seeds,
            "steps": cfg.train.steps,
            "shots": list(cfg.shots),
            "rungs": [
                {
                    "name": r.name,
                    "variants": len(r.arms),
                    "steps": r.config.train.steps,
                    "seeds": r.config.seeds,
                }
                for r in rungs
            ],
        },
        "pools": info,
        "variants": variants,
        "cut": cut,
        "unmeasured": [runs[n].summary() for n in info.get("unmeasured", [])],
        "trainings": {r.name: r.measurement.trained for r in rungs},
    }


def _gain_at(rows: list[dict], task: str, k: int) -> dict | None:
    return next((g for g in rows if g["task"] == task and g["shots"] == k), None)


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: ranking table, best-versus-each, what was cut."""
    task, _, k = report["rank_by"].partition("@")
    k = int(k)
    level = round(report["level"] * 100)
    lines = [
        "# Sweep report",
        "",
        f"Ranked by the gain over the baseline on **{task}** at {k} shots ({level}% paired bootstrap intervals over "
        f"{report['config']['seeds']} training seeds and the evaluation examples). Best: **{report['best']}** "
        f"({', '.join(f'{a}={v}' for a, v in report['best_values'].items())}).",
        "",
        "| # | variant | values | gain | best minus this | accepted | requests sent / reused | tokens | gen. s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, v in enumerate(report["variants"], 1):
        g = _gain_at(v["gains"], task, k)
        d = _gain_at(v["best_minus_this"], task, k)
        gain = f"{g['gain']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}]" if g else "-"
        vs = f"{d['gain']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d else "(best)"
        values = ", ".join(f"{a.rsplit('.', 1)[-1]}={x}" for a, x in v["values"].items())
        lines.append(
            f"| {i} | {v['variant']} | {values} | {gain} | {vs} | {v['accepted_share']:.0%} | "
            f"{v['requests_sent']} / {v['requests_reused']} | {v['tokens']} | {v['seconds']:.1f} |"
        )
    if len(report["variants"]) > 1:
        second = report["variants"][1]
        d = _gain_at(second["best_minus_this"], task, k)
        verdict = "really ahead" if d and d["lo"] > 0 else "not separated from it at this budget"
        lines += [
            "",
            f"Best by {d['gain']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] over #2 ({second['variant']}): {verdict}.",
        ]
    if report["cut"]:
        lines += [
            "",
            "## Cut by successive halving",
            "",
            "| variant | values | cut at rung | gain there |",
            "|---|---|---|---|",
        ]
        for v in report["cut"]:
            g = _gain_at(v["gains"], task, k)
            gain = f"{g['gain']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}]" if g else "-"
            values = ", ".join(f"{a.rsplit('.', 1)[-1]}={x}" for a, x in v["values"].items())
            lines.append(f"| {v['variant']} | {values} | {v['cut_at']} | {gain} |")
    rungs = ", ".join(
        f"{r['name']}: {r['variants']} variants x {r['seeds']} seeds x {r['steps']} steps"
        for r in report["config"]["rungs"]
    )
    lines += ["", f"Rungs: {rungs}. Trainings run in this session: {report['trainings']}.", ""]
    lines += [f"- {n}" for n in report["pools"].get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def plot_gain_vs_cost(report: dict[str, Any], path: Path) -> Path | None:
    """Gain against requests sent, one point per variant (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    task, _, k = report["rank_by"].partition("@")
    fig, ax = plt.subplots(figsize=(6, 4))
    for v in [*report["variants"], *report["cut"]]:
        g = _gain_at(v["gains"], task, int(k))
        if g is None:
            continue
        cost = v["requests_sent"] + v["requests_reused"]
        ax.errorbar(cost, g["gain"], yerr=[[g["gain"] - g["lo"]], [g["hi"] - g["gain"]]], fmt="o", capsize=3)
        ax.annotate(v["variant"], (cost, g["gain"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("requests (sent + reused)")
    ax.set_ylabel(f"gain on {task}@{k}")
    ax.set_title("Gain against cost")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_winner(
    report: dict[str, Any], variant_recipe: Path, out: Path, markdown: str, winner_run: Path
) -> Path:
    """The winning recipe as a runnable YAML, and the sweep report in its run's gain/ (so its card says why)."""
    best = out / "best-recipe.yaml"
    text = variant_recipe.read_text(encoding="utf-8")
    head = (
        f"# Chosen by `mmsynth sweep` ({out.name}): variant {report['best']} ranked first by the gain on "
        f"{report['rank_by']}; see {out / 'report.md'}\n"
    )
    best.write_text(head + text, encoding="utf-8")
    gain_dir = winner_run / "gain"
    gain_dir.mkdir(parents=True, exist_ok=True)
    (gain_dir / "report.md").write_text(
        "How this recipe was chosen: it ranked first in a sweep of recipe variants.\n\n" + markdown,
        encoding="utf-8",
    )
    png = out / "gain_vs_cost.png"
    if png.exists():
        shutil.copyfile(png, gain_dir / "gain.png")
    return best
