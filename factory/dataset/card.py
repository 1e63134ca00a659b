"""The run folder's README.md: `configs` that `datasets.load_dataset(RUN_DIR)` reads, and a short card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mmsynth.factory.dataset.shards import SPLITS


def dataset_configs(run_dir: Path, tasks: list[str]) -> list[dict[str, Any]]:
    """One config per task plus `default` (all tasks); a split appears only where it has files."""

    def files(task: str, split: str) -> bool:
        return any((run_dir / "data" / task).glob(f"{split}-*.parquet"))

    configs: list[dict[str, Any]] = []
    default = [
        {"split": s, "path": f"data/*/{s}-*.parquet"} for s in SPLITS if any(files(t, s) for t in tasks)
    ]
    if default:
        configs.append({"config_name": "default", "default": True, "data_files": default})
    for t in tasks:
        data_files = [{"split": s, "path": f"data/{t}/{s}-*.parquet"} for s in SPLITS if files(t, s)]
        if data_files:
            configs.append({"config_name": t, "data_files": data_files})
    return configs


def write_card(
    run_dir: Path, recipe_name: str, tasks: list[str], stats: dict[str, Any], lineage: dict[str, Any]
) -> None:
    meta = {
        "configs": dataset_configs(run_dir, tasks),
        "tags": ["synthetic", "mmsynth"],
    }
    rec = stats["records"]
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        f"# {recipe_name}",
        "",
        f"Synthetic data made by mmsynth from the recipe in `recipe.yaml`: {rec['accepted']} accepted and "
        f"{rec['rejected']} rejected records. Rejected records are kept in the `rejected` split with their reasons.",
        "",
        "| task | accepted | rejected |",
        "|---|---|---|",
        *[f"| {t} | {c['accepted']} | {c['rejected']} |" for t, c in stats["tasks"].items()],
        "",
        "## Lineage",
        "```json",
        json.dumps(lineage, indent=2, sort_keys=True),
        "```",
        "",
        "Every record carries its own lineage columns: template id, version and hash; model and revision; "
        "backend; sampling parameters and seed; finish reason and token counts; every validator verdict.",
        "",
        'Load it with `datasets.load_dataset("<this folder>")`, or one task with `name="<task>"`.',
        "",
    ]
    (run_dir / "README.md").write_text("\n".join(lines))
