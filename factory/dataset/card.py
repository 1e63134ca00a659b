"""Dataset cards: the one writer of README.md front matter (`card_text`), and the run folder's card:
`configs` that `datasets.load_dataset(RUN_DIR)` reads, and a short body. The published card
(factory/publish/card.py) is written by `card_text` too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import DatasetCard

from mmsynth.factory.dataset.pictures import Picture
from mmsynth.factory.dataset.shards import SPLITS
from mmsynth.prompts.files import write_atomic


def card_text(meta: dict[str, Any], body: str) -> str:
    """README.md text: `meta` as YAML front matter (keys in the given order), then `body` as is.

    It goes through huggingface_hub's `DatasetCard`, so the header is what the Hub and `datasets` parse;
    ValueError when the metadata does not come back as given (e.g. a key the card data rewrites).
    """
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    card = DatasetCard(f"---\n{head}---\n{body}")
    given = {k: v for k, v in meta.items() if v is not None}  # the card drops empty keys
    if card.data.to_dict() != given:
        raise ValueError("the card's metadata did not parse back as written")
    return str(card)


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


def picture_lines(pictures: list[Picture]) -> list[str]:
    """Markdown that shows the pictures (relative links: the Hub resolves them to the repository's files)."""
    lines: list[str] = []
    for p in pictures:
        lines += [f"![{p.alt}]({p.path})", ""]
    return lines


def write_card(
    run_dir: Path,
    recipe_name: str,
    tasks: list[str],
    stats: dict[str, Any],
    lineage: dict[str, Any],
    pictures: list[Picture] | None = None,
) -> None:
    """Write RUN/README.md: the configs of the run's shards, its counts, its pictures (already written
    under RUN/, see pictures.py) and its lineage."""
    meta = {
        "configs": dataset_configs(run_dir, tasks),
        "tags": ["synthetic", "mmsynth"],
    }
    rec = stats["records"]
    lines = [
        f"# {recipe_name}",
        "",
        f"Synthetic data made by mmsynth from the recipe in `recipe.yaml`: {rec['accepted']} accepted and "
        f"{rec['rejected']} rejected records. Rejected records are kept in the `rejected` split with their reasons.",
        "",
        "| task | accepted | rejected |",
        "|---|---|---|",
        *[f"| {t} | {c['accepted']} | {c['rejected']} |" for t, c in stats["tasks"].items()],
        "",
        *(["## Samples and scores", "", *picture_lines(pictures)] if pictures else []),
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
    write_atomic(run_dir / "README.md", card_text(meta, "\n".join(lines)))
