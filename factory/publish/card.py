"""The published dataset card: Hub metadata and a body written from the run's lineage and statistics.

Everything in it comes from the run folder (recipe, manifest lineage, stats.json, templates, the trainer's
gain report) and from the shards being published, so the card cannot drift from the data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import datasets
from datasets.info import DatasetInfosDict

from mmsynth.factory.dataset.card import card_text, picture_lines
from mmsynth.factory.dataset.pictures import SAMPLES, SCORES, Picture

# Template `task` (front matter) -> Hub task category.
TASK_CATEGORIES = {
    "caption": "image-to-text",
    "vqa": "visual-question-answering",
    "interleaved_plan": "image-text-to-text",
    "interleaved": "image-text-to-text",
    "document": "image-text-to-text",
    "image": "text-to-image",
    "t2i_prompt": "text-generation",
    "judge": "text-classification",
    "text": "text-generation",
}
SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]
MARKER = "<!-- card written by mmsynth-publish -->"
# The tiny models that are trained, not random (generators/tiny/builders.py): what the card says of each.
TRAINED_TINY = {
    "tiny:scene-vlm": "a tiny teacher that mmsynth trains offline on rendered shape scenes: good but "
    "imperfect (its mistakes are its own), and its captions and answers are short templated sentences "
    "about coloured shapes. This dataset demonstrates the pipeline on checkable data; it is not training "
    "data for a real model.",
}


@dataclass(frozen=True)
class CardInputs:
    recipe: dict[str, Any]  # recipe.yaml as published (secrets redacted)
    recipe_text: str
    lineage: dict[str, Any]  # manifest.json's lineage: templates {ref: hash}, models {name: {...}}
    stats: dict[str, Any]
    splits: list  # publish.SplitShards
    features: dict[str, datasets.Features]
    skipped: dict[str, str]
    examples: dict[str, list[dict[str, Any]]]
    gain_report: str | None = None
    gain_plot: str | None = None
    include_rejects: bool = False
    repo_id: str | None = None
    template_meta: dict[str, dict[str, Any]] | None = None  # ref -> front matter of the run's template copy
    pictures: tuple[Picture, ...] = ()  # the sample grid and score histograms, published under images/


def size_category(n: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if n < limit), "n>1B")


def card_metadata(c: CardInputs) -> dict[str, Any]:
    """The YAML header: license, categories, tags, one config per subset and `dataset_info` per config."""
    subsets = list(dict.fromkeys(s.subset for s in c.splits))
    configs = [
        {
            "config_name": sub,
            "data_files": [
                {"split": s.split, "path": f"data/{sub}/{s.split}-*.parquet"}
                for s in c.splits
                if s.subset == sub
            ],
        }
        for sub in subsets
    ]
    infos = DatasetInfosDict()
    for sub in subsets:
        parts = [s for s in c.splits if s.subset == sub]
        splits = datasets.SplitDict()
        for s in parts:
            splits.add(datasets.SplitInfo(name=s.split, num_bytes=s.num_bytes, num_examples=s.num_examples))
        # Sizes are part of the hash `datasets` keys its cache on, so a changed folder is never served stale.
        infos[sub] = datasets.DatasetInfo(
            features=c.features[sub],
            splits=splits,
            download_size=sum(s.download_size for s in parts),
            dataset_size=sum(s.num_bytes for s in parts),
        )
    card_data = {}
    infos.to_dataset_card_data(card_data)
    meta: dict[str, Any] = {}
    if c.recipe.get("license"):
        meta["license"] = c.recipe["license"]
    meta["pretty_name"] = c.recipe.get("name", "mmsynth dataset")
    cats = sorted({cat for sub in subsets if (cat := _category(c, sub))})
    if cats:
        meta["task_categories"] = cats
    published = sum(s.num_examples for s in c.splits)
    meta["size_categories"] = [size_category(published)]
    meta["tags"] = ["synthetic", "mmsynth", "multimodal"]
    meta["configs"] = configs
    meta["dataset_info"] = card_data["dataset_info"]
    return meta


def _category(c: CardInputs, subset: str) -> str | None:
    task = _task(c.recipe, subset)
    if task is None:  # an assembled document subset
        return (
            "image-text-to-text"
            if any(d.get("name") == subset for d in c.recipe.get("documents") or [])
            else None
        )
    front = (c.template_meta or {}).get(_template_ref(c, task.get("template", "")), {})
    return TASK_CATEGORIES.get(front.get("task") or task.get("template", "").split(".")[0])


def _task(recipe: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((t for t in recipe.get("tasks") or [] if t.get("name") == name), None)


def _template_ref(c: CardInputs, template: str) -> str:
    """A recipe's template reference (`caption.short` or `caption.short@1`) -> the lineage's `id@version`."""
    refs = c.lineage.get("templates", {})
    if template in refs:
        return template
    return next((r for r in refs if r.split("@")[0] == template), template)


def render_card(c: CardInputs) -> str:
    """The README.md text: YAML front matter, then (after a blank line) the body; see `card_text`."""
    meta = card_metadata(c)
    return card_text(meta, "\n" + "\n".join(_body(c, meta)) + "\n")


def _fence(text: str, lang: str = "") -> list[str]:
    """A fenced block that its content cannot close (its fence is longer than any backtick run inside)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{lang}", text.rstrip("\n"), fence]


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _body(c: CardInputs, meta: dict[str, Any]) -> list[str]:
    r, stats = c.recipe, c.stats
    name = r.get("name", "dataset")
    subsets = [cfg["config_name"] for cfg in meta["configs"]]
    repo = c.repo_id or "OWNER/NAME"
    rec = stats.get("records", {})
    out = [f"# {name}", ""]
    if r.get("description"):
        out += [str(r["description"]).strip(), ""]
    out += [
        "Synthetic multimodal data made by mmsynth from the recipe "
        "`recipe.yaml` in this repository: seeds were rendered into prompts by versioned templates, answered by "
        "the models listed below, and every output was checked by validators. "
        f"The run made {rec.get('total', 0)} records: {rec.get('accepted', 0)} accepted and "
        f"{rec.get('rejected', 0)} rejected. "
        + (
            "Rejected records are published too, in the `rejected` split of each subset, with their reasons."
            if c.include_rejects
            else "Only accepted records are published (split `train`)."
        ),
        "",
        "## Subsets",
        "",
        "| subset (config) | split | records | Parquet files | size |",
        "|---|---|---|---|---|",
        *[
            f"| {s.subset} | {s.split} | {s.num_examples} | {len(s.files)} | {_mb(s.download_size)} |"
            for s in c.splits
        ],
        "",
    ]
    for sub, why in c.skipped.items():
        out.append(f"- `{sub}` is not published: {why}.")
    if c.skipped:
        out.append("")
    out += [
        "```python",
        "import datasets",
        "",
        *[f'{sub} = datasets.load_dataset("{repo}", name="{sub}")' for sub in subsets],
        "```",
        "",
        "Each subset holds one task's records. Images are embedded in the Parquet files (column `image`, and "
        "`images` for interleaved documents). Every row carries its lineage: `template_id`, "
        "`template_version`, `template_hash`, `model`, `model_revision`, `backend`, `sampling` (JSON), "
        "`sample_seed`, `finish_reason`, token counts, and `verdicts` (every validator's decision and reason).",
        "",
    ]
    out += _how_made(c)
    out += _quality(c)
    if c.gain_report or c.gain_plot:
        out += ["## Does it help a model? (trainer gain report)", ""]
        if c.gain_plot:
            out += [f"![gain]({c.gain_plot})", ""]
        if c.gain_report:
            # Its headings sit under this section.
            out += [re.sub(r"^(#+)", r"##\1", c.gain_report.strip(), flags=re.M), ""]
        out += ["The full report is in `gain/` (`report.md`, `report.json`).", ""]
    out += _examples(c)
    out += _limitations(c)
    out += [
        "## How to reproduce",
        "",
        "```bash",
        "pip install mmsynth",
        f"hf download {repo} recipe.yaml --repo-type dataset --local-dir .",
        "mmsynth run recipe.yaml --out run",
        f"mmsynth publish run --repo YOU/{name} --dry-run out   # the same repository layout, locally",
        "```",
        "",
        "The run is deterministic given the same models, revisions and seeds: every sampling seed derives "
        f"from the recipe seed ({r.get('seed', 0)}). Templates are versioned and hashed; the copies used are in "
        "`templates/`, and `stats.json` holds the run's full statistics. Credentials in the recipe (API keys "
        "of served models) are replaced by `<redacted>`: fill in your own.",
        "",
        "<details><summary>recipe.yaml</summary>",
        "",
        *_fence(c.recipe_text, "yaml"),
        "",
        "</details>",
        "",
        MARKER,
    ]
    return out


def _how_made(c: CardInputs) -> list[str]:
    r = c.recipe
    seeds = r.get("seeds") or {}
    seed_desc = ", ".join(f"{k}: {v}" for k, v in seeds.items() if not isinstance(v, (dict, list)))
    out = [
        "## How it was made",
        "",
        f"**Seeds:** {seed_desc or 'see recipe.yaml'}. Run seed {r.get('seed', 0)}.",
        "",
        "**Templates**",
        "",
        "| template | version | sha256 | what it asks for |",
        "|---|---|---|---|",
    ]
    for ref, h in sorted(c.lineage.get("templates", {}).items()):
        tid, _, version = ref.partition("@")
        desc = (c.template_meta or {}).get(ref, {}).get("description", "")
        out.append(f"| `{tid}` | {version or '?'} | `{h}` | {_cell(desc)} |")
    out += ["", "**Models**", "", "| name | model | revision | backend |", "|---|---|---|---|"]
    for mname, m in sorted(c.lineage.get("models", {}).items()):
        out.append(f"| {mname} | `{m.get('model')}` | `{m.get('revision')}` | {m.get('backend')} |")
    out += [
        "",
        "**Tasks and sampling**",
        "",
        "| subset | template | model | outputs per seed | sampling | inputs |",
        "|---|---|---|---|---|---|",
    ]
    for t in r.get("tasks") or []:
        sampling = json.dumps(t.get("sampling") or {}, sort_keys=True) or "{}"
        extra = dict(t.get("inputs") or {})
        if t.get("from"):
            extra["from"] = t["from"]
        out.append(
            f"| {t.get('name')} | `{t.get('template')}` | {t.get('model')} | {t.get('n', 1)} | "
            f"`{_cell(sampling)}` | {_cell(json.dumps(extra)) if extra else ''} |"
        )
    out.append("")
    for d in r.get("documents") or []:
        out.append(
            f"- `{d.get('name')}`: interleaved documents assembled from `{d.get('plan')}` and `{d.get('images')}`."
        )
    if r.get("documents"):
        out.append("")
    return out


def _quality(c: CardInputs) -> list[str]:
    s = c.stats
    out = [
        "## How good it is",
        "",
        "Records per subset (the whole run, before the choice of splits to publish):",
        "",
        "| subset | accepted | rejected | accepted share |",
        "|---|---|---|---|",
    ]
    for t, n in s.get("tasks", {}).items():
        total = n.get("accepted", 0) + n.get("rejected", 0)
        share = f"{n.get('accepted', 0) / total:.1%}" if total else "-"
        out.append(f"| {t} | {n.get('accepted', 0)} | {n.get('rejected', 0)} | {share} |")
    out += [
        "",
        "Validators, in the order they ran (each sees only what the ones before it kept):",
        "",
        "| validator | seen | kept | rejected | pass rate |",
        "|---|---|---|---|---|",
    ]
    # stats.json is written with sorted keys; the recipe keeps the order the validators ran in.
    ran = [v.get("type") for v in c.recipe.get("validators") or [] if isinstance(v, dict)]
    vals = s.get("validators", {})
    for v in [vals[n] for n in ran if n in vals] + [v for n, v in vals.items() if n not in ran]:
        rate = v.get("pass_rate")
        out.append(
            f"| {v.get('name')} | {v.get('seen', 0)} | {v.get('kept', 0)} | {v.get('rejected', 0)} | "
            f"{'-' if rate is None else f'{rate:.1%}'} |"
        )
    scores = [p for p in c.pictures if p.path == SCORES]
    if scores:
        out += ["", "Scores per validator (kept and rejected records stacked):", ""]
        out += picture_lines(scores)[:-1]
    reasons = sorted(s.get("reject_reasons", {}).items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    if reasons:
        out += ["", "Top reject reasons:", "", "| reason | records |", "|---|---|"]
        out += [f"| {_cell(k)} | {n} |" for k, n in reasons]
    req = s.get("requests", {})
    tok = s.get("tokens", {})
    out += [
        "",
        f"Requests: {req.get('total', 0)} ({req.get('failed', 0)} failed); tokens: {tok.get('prompt', 0)} prompt, "
        f"{tok.get('completion', 0)} completion.",
        "",
    ]
    return out


def _examples(c: CardInputs) -> list[str]:
    out = ["## Examples", ""]
    grid = [p for p in c.pictures if p.path == SAMPLES]
    if grid:
        out += picture_lines(grid)
    shown = False
    for sub, rows in c.examples.items():
        for row in rows[:2]:
            shown = True
            out += [f"**{sub}** (`{row.get('id')}`, {row.get('template_id')}, {row.get('model')})", ""]
            out += ["Prompt:", "", *_fence(_clip(row.get("prompt") or "")), "", "Output:", ""]
            out += [*_fence(_clip(row.get("output") or "")), ""]
    if not shown:
        out += ["No accepted records to show.", ""]
    return out


def _clip(text: str, n: int = 600) -> str:
    return text if len(text) <= n else text[:n] + " [...]"


def _limitations(c: CardInputs) -> list[str]:
    grounding = [
        v
        for v in c.recipe.get("validators") or []
        if isinstance(v, dict) and v.get("type") == "scene_grounding"
    ]
    checked = "form (length, charset, truncation, JSON schema, duplicates, and any judge in the recipe)"
    if grounding:
        what = "the answers" + (" and the objects a caption names" if grounding[0].get("captions") else "")
        checked += (
            f", and `scene_grounding` checked {what} against the scene's exact truth; what no validator "
            "checks (a caption's other words, which questions were asked) can still be wrong"
        )
    else:
        checked += ", not truth: answers can be wrong and captions can miss or invent details"
    out = [
        "## Known limitations",
        "",
        f"- Every output was written by a model. Validators check {checked}.",
        "- The data inherits the biases and licences of its seed data and of the models that wrote it; check "
        "them before training on it.",
    ]
    tiny = {str(m.get("model", "")) for m in c.lineage.get("models", {}).values()}
    random_ = sorted(n for n in tiny if n.startswith("tiny:") and n not in TRAINED_TINY)
    if random_:
        out.append(
            f"- Made with random-weight smoke-test models ({', '.join(random_)}): the text is gibberish. "
            "This dataset demonstrates the pipeline; it is not training data."
        )
    for n in sorted(tiny & set(TRAINED_TINY)):
        out.append(f"- Made with `{n}`, {TRAINED_TINY[n]}")
    rec = c.stats.get("records", {})
    if rec.get("total") and rec.get("accepted", 0) / rec["total"] < 0.5:
        out.append(
            f"- Most records were rejected ({rec.get('rejected', 0)} of {rec['total']}); see the reasons above."
        )
    if (c.recipe.get("seeds") or {}).get("type") == "scenes":
        out.append("- Images are rendered scenes of simple coloured shapes, not photographs.")
    if not c.recipe.get("license"):
        out.append(
            "- The recipe declares no licence (`license:`); ask the publisher before reusing the data."
        )
    out.append("")
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"
