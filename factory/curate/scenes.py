"""A labelled dataset of rendered scenes, with exact captions and QA: the proving ground's real data.

`mmsynth scenes DIR --train 0:64 --test 20000:48` writes DIR/train.parquet and DIR/test.parquet, which
`mmsynth gain --baseline DIR` and sweeps read like any real dataset: caption rows (`image`, `caption`)
and VQA rows (`image`, `question`, `answers`). Scene indices are the `scenes` seed source's, so a range
can be kept disjoint from the scenes a recipe generates from (and from the teacher's training range).
"""

from __future__ import annotations

from pathlib import Path

from mmsynth.generators.scenes.world import make_scene


def parse_range(text: str) -> tuple[int, int]:
    """'START:COUNT' -> (start, count); ValueError with the expected form."""
    start, sep, count = text.partition(":")
    try:
        if not sep:
            raise ValueError
        a, n = int(start), int(count)
    except ValueError:
        raise ValueError(f"expected START:COUNT (e.g. 20000:48), got {text!r}") from None
    if a < 0 or n < 1:
        raise ValueError(f"START must be >= 0 and COUNT >= 1, got {text!r}")
    return a, n


def scene_rows(seed: int, start: int, count: int, max_objects: int, qa: bool) -> list[dict]:
    """One caption row per scene, plus one VQA row per exact question when `qa`."""
    rows = []
    for i in range(start, start + count):
        s = make_scene(seed, i, max_objects=max_objects)
        image = {"bytes": s["image"].data, "path": None}
        rows.append(
            {
                "id": f"scene-{i}",
                "image": image,
                "caption": s["description"],
                "question": None,
                "answers": None,
            }
        )
        if qa:
            for j, item in enumerate(s["qa"]):
                rows.append(
                    {
                        "id": f"scene-{i}/q{j}",
                        "image": image,
                        "caption": None,
                        "question": item["question"],
                        "answers": [item["answer"]],
                    }
                )
    return rows


def write_scene_dataset(
    folder: str | Path,
    train: tuple[int, int],
    test: tuple[int, int],
    seed: int = 0,
    max_objects: int = 3,
    qa: bool = True,
) -> Path:
    """Write train.parquet and test.parquet of rendered scenes into `folder`; the ranges must not overlap."""
    import datasets

    (a, n), (b, m) = train, test
    if a < b + m and b < a + n:
        raise ValueError(f"train scenes {a}:{n} and test scenes {b}:{m} overlap; choose disjoint ranges")
    feats = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answers": datasets.Sequence(datasets.Value("string")),
        }
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, (start, count) in (("train", train), ("test", test)):
        rows = scene_rows(seed, start, count, max_objects, qa)
        ds = datasets.Dataset.from_list(rows, features=feats)
        ds.to_parquet(str(folder / f"{split}.parquet"))
    return folder
