"""The sweep file: which recipe, which axes to vary, and how the variants' data is measured.

sweep:
  recipe: proving-ground.yaml          # relative to this file
  axes:
    tasks.captions.sampling.temperature: [0.3, 1.5]
    validators: {strict: [...], none: []}     # a mapping: named values
  baseline: data/real                  # real data (a folder or file `mmsynth gain` reads)
  student: tiny:vlm
  seeds: 3
  halving: {proxy_steps: 100, proxy_seeds: 1, keep: 0.5}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmsynth.factory.errors import Problem, RecipeError, display_path, problem_at
from mmsynth.factory.recipe.load import _parse_yaml
from mmsynth.factory.recipe.messages import problem_from_pydantic


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HalvingSpec(_Config):
    """Successive halving: every variant is measured cheaply first; the best share gets the full measurement."""

    proxy_steps: int = Field(default=100, ge=1, description="Training steps of the cheap first rung.")
    proxy_seeds: int = Field(default=1, ge=1, description="Training seeds of the cheap first rung.")
    keep: float = Field(
        default=0.5, gt=0, le=1, description="Share of the variants promoted to the full rung."
    )
    min_keep: int = Field(
        default=2, ge=1, description="Fewest variants promoted (so the top two can be compared)."
    )


class ScenesBaseline(_Config):
    """Real data rendered on the fly: labelled scenes with exact captions and QA (`mmsynth scenes`)."""

    train: str = Field(default="0:16", description="Scene range START:COUNT of the real train split.")
    test: str = Field(default="20000:48", description="Scene range START:COUNT of the evaluation split.")
    seed: int = Field(default=0, description="Scene seed (a recipe's `seeds.seed`).")
    max_objects: int = Field(default=3, ge=1, le=9, description="Most objects per scene.")
    qa: bool = Field(default=True, description="Also write VQA rows (the scene's exact questions).")


class SweepSpec(_Config):
    """What a sweep varies and how it measures the variants (fields documented in docs/sweep.md)."""

    recipe: str = Field(description="The base recipe, relative to the sweep file.")
    axes: dict[str, list[Any] | dict[str, Any]] = Field(
        min_length=1, description="Recipe path -> values (a list), or -> named values (a mapping)."
    )
    search: Literal["grid", "random"] = Field(default="grid", description="Every combination, or a sample.")
    samples: int | None = Field(default=None, ge=1, description="How many variants `search: random` draws.")
    seed: int = Field(default=0, description="Seeds the random search, pool sampling and exemplar draws.")
    baseline: str | dict[str, ScenesBaseline] = Field(
        description="Real data: a folder or file `mmsynth gain --baseline` reads, or `{scenes: {...}}`."
    )
    student: str = Field(default="tiny:vlm", description="The student model (folder, Hub id or tiny:...).")
    tasks: list[str] = Field(default_factory=list, description="Trainer tasks (default: all the data has).")
    synthetic_tasks: list[str] = Field(default_factory=list, description="Run tasks used as training data.")
    shots: list[int] = Field(default_factory=lambda: [0], min_length=1, description="In-context shot counts.")
    seeds: int = Field(default=3, ge=1, description="Training seeds per variant on the full rung.")
    steps: int = Field(default=200, ge=1, description="Training steps per run on the full rung.")
    batch_size: int = Field(default=8, ge=1, description="Training batch size.")
    lr: float = Field(default=3e-3, gt=0, description="Learning rate.")
    lora: bool = Field(default=False, description="Train LoRA adapters instead of every weight.")
    eval_size: int = Field(default=48, ge=1, description="Evaluation examples per task.")
    pool_size: int | None = Field(
        default=None, ge=1, description="Baseline pool size (default: all real train)."
    )
    mode: Literal["replace", "add"] = Field(
        default="replace",
        description="replace: the baseline's size with `fraction` swapped for synthetic data; add: the "
        "baseline plus the same number of synthetic examples for every variant.",
    )
    fraction: float = Field(
        default=0.5, gt=0, le=1, description="mode replace: share of the baseline pool replaced."
    )
    synthetic: int | None = Field(
        default=None, ge=1, description="mode add: at most this many synthetic examples per pool."
    )
    rank_by: str | None = Field(
        default=None, description="`task@shots` that ranks the variants (default: the first)."
    )
    halving: HalvingSpec | None = Field(
        default=None, description="Successive halving; null measures every variant fully."
    )
    device: str = Field(default="auto", description="Training device.")


def load_sweep(path: str | Path) -> tuple[SweepSpec, Path, Any]:
    """(spec, the base recipe's absolute path, the YAML node tree); RecipeError lists every problem."""
    path = Path(path)
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RecipeError(Problem(shown, None, None, "", f"cannot read the sweep file: {e}")) from None
    root, data = _parse_yaml(text, shown)
    if not isinstance(data, dict) or "sweep" not in data or len(data) != 1:
        raise RecipeError(
            problem_at(path, root, (), "a sweep file has one top-level key, `sweep:`", "See docs/sweep.md.")
        )
    try:
        spec = SweepSpec.model_validate(data["sweep"])
    except ValidationError as e:
        raise RecipeError(
            [
                problem_from_pydantic(err, path, root, model=SweepSpec, prefix=("sweep",))
                for err in e.errors(include_url=False)
            ]
        ) from None
    base = Path(os.path.abspath(path)).parent
    recipe = base / spec.recipe
    problems = []
    if not recipe.is_file():
        problems.append(problem_at(path, root, ("sweep", "recipe"), f"no recipe file {recipe}"))
    if spec.search == "random" and spec.samples is None:
        problems.append(problem_at(path, root, ("sweep", "search"), "`search: random` needs `samples:`"))
    for name, values in spec.axes.items():
        if not values:
            problems.append(
                problem_at(path, root, ("sweep", "axes", name), "an axis needs at least one value")
            )
    if isinstance(spec.baseline, dict) and set(spec.baseline) != {"scenes"}:
        problems.append(
            problem_at(path, root, ("sweep", "baseline"), "a baseline mapping has one key, `scenes:`")
        )
    if problems:
        raise RecipeError(problems)
    if isinstance(spec.baseline, str) and not Path(spec.baseline).is_absolute():
        spec.baseline = str(base / spec.baseline)
    return spec, recipe, root


def baseline_path(spec: SweepSpec, out: Path) -> str:
    """The real data's path; a `scenes:` baseline is written into the sweep folder first (idempotent)."""
    if isinstance(spec.baseline, str):
        return spec.baseline
    from mmsynth.factory.curate.scenes import parse_range, write_scene_dataset

    b = spec.baseline["scenes"]
    folder = out / "baseline"
    if not (folder / "test.parquet").exists():
        write_scene_dataset(folder, parse_range(b.train), parse_range(b.test), b.seed, b.max_objects, b.qa)
    return str(folder)
