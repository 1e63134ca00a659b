"""The pixel limit (issue #16): a small file with a huge pixel count is refused by name before it is
decoded; as a seed it becomes a rejected record, never a crash or a 2 GB decode."""

from __future__ import annotations

import io
import json
import re
import textwrap

import pyarrow.parquet as pq
import pytest
from image_helpers import BOMB_SIDE, bomb_png
from PIL import Image

from mmsynth.factory.cli.main import main
from mmsynth.factory.seeds import ImageFolderConfig, JsonlConfig, iter_seeds
from mmsynth.prompts.media import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, ImageRef, ImageTooLarge

OVER = f"{BOMB_SIDE}x{BOMB_SIDE} = {BOMB_SIDE * BOMB_SIDE:,} pixels, over the limit of {DEFAULT_MAX_PIXELS:,}"


def png(size=(16, 16), colour="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a_small.png").write_bytes(png())
    (tmp_path / "imgs" / "b_huge.png").write_bytes(bomb_png())
    return tmp_path / "imgs"


def test_the_bomb_is_a_small_file():
    assert len(bomb_png()) < 100_000  # what makes it dangerous: no file-size limit catches it


def test_decoding_refuses_by_name_before_the_pixels(monkeypatch):
    ref = ImageRef.from_bytes(bomb_png(), source="huge.png")
    with pytest.raises(ImageTooLarge, match=re.escape(f"image huge.png is {OVER}; shrink it")):
        ref.to_pil()
    assert ref.check() == f"image huge.png is {OVER}; shrink it, or raise the limit with {MAX_PIXELS_ENV}"
    with pytest.raises(ImageTooLarge, match=r"image huge\.png is 12000x12000"):
        ImageRef.from_cell({"bytes": bomb_png(), "path": None}, source="huge.png")
    small = ImageRef.from_bytes(png(), source="small.png")
    assert small.check() is None and small.to_pil().size == (16, 16)


def test_the_limit_comes_from_the_environment(monkeypatch):
    small = ImageRef.from_bytes(png((16, 16)), source="small.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "255")
    with pytest.raises(ImageTooLarge, match="16x16 = 256 pixels, over the limit of 255"):
        small.to_pil()
    monkeypatch.setenv(MAX_PIXELS_ENV, "256")
    assert small.to_pil().size == (16, 16)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=f"{MAX_PIXELS_ENV}='lots': give a positive number of pixels"):
        small.to_pil()


def test_image_folder_and_jsonl_seeds_carry_the_reason(folder):
    small, huge = iter_seeds(ImageFolderConfig(path=folder))
    assert small.error is None and isinstance(small.fields["image"], ImageRef)
    assert huge.error == f"image b_huge.png is {OVER}; shrink it, or raise the limit with {MAX_PIXELS_ENV}"
    lines = folder.parent / "seeds.jsonl"
    lines.write_text(
        json.dumps({"img": "imgs/a_small.png"}) + "\n" + json.dumps({"img": "imgs/b_huge.png"}) + "\n"
    )
    ok, bad = iter_seeds(JsonlConfig(path=lines, image_field="img"))
    assert ok.error is None
    assert (
        bad.error
        == f"seeds.jsonl:2: image imgs/b_huge.png is {OVER}; shrink it, or raise the limit with {MAX_PIXELS_ENV}"
    )


def test_a_huge_seed_image_is_a_rejected_record_of_the_run(folder, tmp_path, tiny_vlm):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            f"""\
            name: pixel-limit
            seeds: {{type: image_folder, path: imgs}}
            models:
              vlm: {{backend: transformers, model: "{tiny_vlm}", device: cpu}}
            tasks:
              - {{name: captions, template: caption.short, model: vlm, sampling: {{max_tokens: 4}}}}
            """
        )
    )
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 0
    (rejected,) = pq.read_table(out / "data" / "captions" / "rejected-00000.parquet").to_pylist()
    assert (
        rejected["reject_reason"]
        == f"seed: image b_huge.png is {OVER}; shrink it, or raise the limit with {MAX_PIXELS_ENV}"
    )
    (kept,) = pq.read_table(out / "data" / "captions" / "train-00000.parquet").to_pylist()
    assert json.loads(kept["seed"])["filename"] == "a_small.png"
