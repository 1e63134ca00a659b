"""The card's pictures (pictures.py): a sample grid and score histograms drawn from a run's shards,
valid PNGs of bounded size, the same bytes for the same run, and linked from the run folder's README.

Fast: the run folder is written with the factory's own Record type and shard writer (tests/helpers).
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard
from PIL import Image, ImageColor
from viewer_runs import write_run

from mmsynth.factory.dataset.card import dataset_configs, write_card
from mmsynth.factory.dataset.pictures import (
    CELL_H,
    CELL_W,
    GRID_COLUMNS,
    MAX_ACCEPTED,
    REJECTED,
    SAMPLES,
    SCORES,
    card_pictures,
    pick_samples,
    sample_grid,
    score_counts,
    top_reason,
    write_pictures,
)
from mmsynth.factory.engine.stats import ChunkStats, merge_chunks
from mmsynth.validators.types import Verdict

TASKS = ["captions", "qa", "documents"]


@dataclass
class Row:
    task: str
    accepted: bool
    reject_reason: str | None
    verdicts: list[Verdict]


def stats_of(run: Path) -> dict:
    """stats.json as the runner would write it for the folder's shards."""
    rows = []
    for f in sorted((run / "data").glob("*/*.parquet")):
        for r in pq.read_table(f, columns=["task", "accepted", "reject_reason", "verdicts"]).to_pylist():
            verdicts = [Verdict(v["validator"], v["keep"], v["reason"], v["score"]) for v in r["verdicts"]]
            rows.append(Row(r["task"], r["accepted"], r["reject_reason"], verdicts))
    chunk = ChunkStats()
    chunk.count(rows, ["heuristics", "judge", "json_schema"])
    return merge_chunks([json.loads(json.dumps(chunk.to_dict()))], 0.0)


@pytest.fixture
def run(tmp_path) -> Path:
    return write_run(tmp_path / "run")


def png(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    Image.open(io.BytesIO(data)).verify()  # a whole, valid PNG
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return img.convert("RGB")


def test_the_grid_shows_accepted_records_of_every_task_then_one_rejected(run):
    rows = pick_samples(run, TASKS)
    assert len(rows) == MAX_ACCEPTED + 1
    assert [r["reject_reason"] is None for r in rows] == [True] * MAX_ACCEPTED + [False]
    assert {r["task"] for r in rows[:MAX_ACCEPTED]} == set(TASKS)  # taken in turn from each task
    assert rows[-1]["reject_reason"]  # the rejected one comes with its reason
    samples, scores = card_pictures(run, TASKS, stats_of(run))
    assert (samples.path, scores.path) == (SAMPLES, SCORES)
    assert samples.alt.startswith(
        f"Samples: {MAX_ACCEPTED} accepted records and a rejected one (judge: low score)"
    )
    grid = png(samples.data)
    assert grid.size == (GRID_COLUMNS * CELL_W, 2 * CELL_H)  # bounded: two rows of four cells at most
    assert len(samples.data) < 1_000_000 and len(scores.data) < 200_000
    # The seventh cell (second row, third column) is the rejected record: its frame is drawn in red.
    x, y = 2 * CELL_W + 3, CELL_H + CELL_H // 2
    assert grid.getpixel((x, y)) == ImageColor.getrgb(REJECTED)


def test_the_rejected_record_shown_is_of_the_runs_most_common_reject(run):
    # captions' first rejected shard holds three `judge: low score` rows, then one `heuristics: too short`.
    assert pick_samples(run, TASKS)[-1]["reject_reason"] == "judge: low score"  # no group: the first
    short = pick_samples(run, TASKS, reason="heuristics: too short")[-1]
    assert (short["task"], short["reject_reason"]) == ("captions", "heuristics: too short: 2 < 8 chars")
    assert short["output"] == "no" and short["image"]["bytes"]  # the whole row, not only its reason
    bad_json = pick_samples(run, TASKS, reason="json_schema: output is not valid JSON")[-1]
    assert bad_json["task"] == "qa" and bad_json["reject_reason"].startswith("json_schema:")
    # A group no record has: the first rejected record, as without one.
    assert pick_samples(run, TASKS, reason="nothing: like this")[-1]["reject_reason"] == "judge: low score"
    stats = stats_of(run)
    assert stats["reject_reasons"]["json_schema: output is not valid JSON"] == 3
    assert (
        top_reason(stats)
        == "judge: low score"
        == max(stats["reject_reasons"], key=stats["reject_reasons"].get)
    )
    assert top_reason({}) is None
    # card_pictures draws the top group's record: the same grid as picking it by hand.
    stats["reject_reasons"] = {**stats["reject_reasons"], "heuristics: too short": 9}
    by_hand = pick_samples(run, TASKS, reason="heuristics: too short")
    assert card_pictures(run, TASKS, stats)[0].data == sample_grid(by_hand)
    assert card_pictures(run, TASKS, stats)[0].data != card_pictures(run, TASKS, stats_of(run))[0].data


def test_without_rejected_records_the_grid_shows_accepted_ones_only(run):
    rows = pick_samples(run, TASKS, include_rejected=False)
    assert all(r["reject_reason"] is None for r in rows)
    (samples, _) = card_pictures(run, TASKS, stats_of(run), include_rejected=False)
    assert "rejected" not in samples.alt
    assert samples.data != card_pictures(run, TASKS, stats_of(run))[0].data


def test_the_same_run_gives_the_same_bytes(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "copy")  # other paths and mtimes, same shards
    a = card_pictures(run, TASKS, stats_of(run))
    b = card_pictures(copy, TASKS, stats_of(copy))
    assert [(p.path, p.data) for p in a] == [(p.path, p.data) for p in b]


def test_histograms_count_every_score_kept_and_rejected_apart(run):
    stats = stats_of(run)
    counts = score_counts(run, TASKS, stats)
    assert list(counts) == ["judge"]  # the only validator that scores
    judge = counts["judge"]
    assert sum(judge["kept"]) + sum(judge["rejected"]) == stats["validators"]["judge"]["score"]["count"]
    assert sum(judge["kept"]) == stats["validators"]["judge"]["kept"]
    assert judge["edges"][0] == stats["validators"]["judge"]["score"]["min"]
    png(card_pictures(run, TASKS, stats)[1].data)


def test_the_readme_links_the_pictures_written_beside_it(run):
    stats = stats_of(run)
    pictures = write_pictures(run, TASKS, stats)
    assert [p.path for p in pictures] == [SAMPLES, SCORES]
    for p in pictures:
        assert (run / p.path).read_bytes() == p.data
    write_card(run, "demo", TASKS, stats, {"recipe": "demo"}, pictures)
    card = DatasetCard((run / "README.md").read_text())
    assert card.data.to_dict()["configs"] == dataset_configs(run, TASKS)  # the header is unchanged
    for p in pictures:
        assert f"![{p.alt}]({p.path})" in card.text


def test_nothing_to_show_draws_nothing_and_removes_old_pictures(run, tmp_path):
    write_pictures(run, TASKS, stats_of(run))
    unscored = {"validators": {"heuristics": {"score": None}}}
    assert [p.path for p in write_pictures(run, TASKS, unscored)] == [SAMPLES]
    assert not (run / SCORES).exists()  # a picture of an earlier run of the folder does not linger
    empty = tmp_path / "empty"
    (empty / "data").mkdir(parents=True)
    assert write_pictures(empty, TASKS, {}) == []
