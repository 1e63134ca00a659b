"""Seed sources: determinism, exact scene ground truth, error seeds instead of crashes, offsets."""

from __future__ import annotations

import io
import json
import random
import re
import typing

import numpy as np
import pytest
from PIL import Image

from mmsynth.factory.seeds import (
    SEED_SOURCES,
    HFDatasetConfig,
    ImageFolderConfig,
    JsonlConfig,
    ScenesConfig,
    Seed,
    SeedSourceConfig,
    count_seeds,
    iter_seeds,
    seed_fields,
)
from mmsynth.factory.seeds import scenes as scenes_module
from mmsynth.generators.scenes.truth import COLOURS, PLURAL, SHAPES, describe_object, position_name
from mmsynth.generators.scenes.world import BACKGROUNDS, RGB, object_box, random_scene, render_scene
from mmsynth.prompts.media import ImageRef


def png_bytes(colour=(255, 0, 0), size=(8, 8), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


# --- registry --------------------------------------------------------------------------------------


def test_registry_matches_the_recipe_union():
    union = typing.get_args(typing.get_args(SeedSourceConfig)[0])
    tags = [cls.model_fields["type"].default for cls in union]
    assert tags == list(SEED_SOURCES)
    for name, module in SEED_SOURCES.items():
        for fn in ("iter_seeds", "count_seeds", "peek_fields"):
            assert callable(getattr(module, fn)), f"{name}.{fn}"
        assert hasattr(module, "FIELDS")


# --- scenes ----------------------------------------------------------------------------------------


def test_scenes_are_deterministic():
    config = ScenesConfig(count=12, seed=3)
    a, b = list(iter_seeds(config)), list(iter_seeds(config))
    assert [s.index for s in a] == list(range(12))
    for x, y in zip(a, b, strict=True):
        assert x.id == y.id
        assert x.fields["image"].data == y.fields["image"].data
        assert x.fields["description"] == y.fields["description"]
        assert x.error is None
    # Different index: different scene (ids always; images for every pair here).
    assert len({s.id for s in a}) == 12
    assert len({s.fields["image"].sha256 for s in a}) == 12
    # Different seed: different scenes.
    other = list(iter_seeds(ScenesConfig(count=12, seed=4)))
    assert [s.fields["image"].sha256 for s in other] != [s.fields["image"].sha256 for s in a]


def test_scene_image_is_a_png_of_the_configured_size():
    seed = next(iter_seeds(ScenesConfig(count=1, image_size=96, seed=0)))
    image = seed.fields["image"]
    assert isinstance(image, ImageRef) and image.mime == "image/png"
    assert image.to_pil().size == (96, 96)
    assert set(seed.fields) == scenes_module.FIELDS == seed_fields(ScenesConfig())


def _answer(question: str, objects: list[dict]) -> str:
    """An independent reading of a scene question, from the objects alone."""
    if question == "How many objects are there?":
        return str(len(objects))
    if m := re.fullmatch(r"How many (\w+) objects are there\?", question):
        return str(sum(o["colour"] == m[1] for o in objects))
    if m := re.fullmatch(r"How many (\w+) are there\?", question):
        shape = {v: k for k, v in PLURAL.items()}[m[1]]
        return str(sum(o["shape"] == shape for o in objects))
    if m := re.fullmatch(r"What colour is the (\w+)\?", question):
        (only,) = [o for o in objects if o["shape"] == m[1]]
        return only["colour"]
    if m := re.fullmatch(r"Where is the (\w+) (\w+)\?", question):
        (only,) = [o for o in objects if o["colour"] == m[1] and o["shape"] == m[2]]
        return (
            {0: "top", 1: "middle", 2: "bottom"}[only["row"]]
            + " "
            + {0: "left", 1: "centre", 2: "right"}[only["col"]]
            if (only["row"], only["col"]) != (1, 1)
            else "centre"
        )
    raise AssertionError(f"unexpected question {question!r}")


def test_scene_ground_truth_is_self_consistent():
    config = ScenesConfig(count=150, max_objects=5, seed=11)
    sizes = set()
    for seed in iter_seeds(config):
        objects, description = seed.fields["objects"], seed.fields["description"]
        sizes.add(len(objects))
        assert 1 <= len(objects) <= 5
        cells = [(o["row"], o["col"]) for o in objects]
        assert len(set(cells)) == len(cells), "two objects share a cell"
        assert cells == sorted(cells)
        for o in objects:
            assert o["shape"] in SHAPES and o["colour"] in COLOURS and o["size"] in ("small", "large")
            assert o["position"] == position_name(o["row"], o["col"])
        # The caption names every object, in order, and nothing else.
        phrases = [describe_object(o) for o in objects]
        positions = [description.index(p) for p in phrases]
        assert positions == sorted(positions)
        assert description.count(" a ") + description.startswith("a ") == len(objects)
        # Counts match the objects, for every shape and colour.
        counts = seed.fields["counts"]
        for shape in SHAPES:
            assert counts[shape] == sum(o["shape"] == shape for o in objects)
        for colour in COLOURS:
            assert counts[colour] == sum(o["colour"] == colour for o in objects)
        # Every QA answer is what the objects say; questions are unambiguous.
        qa = seed.fields["qa"]
        assert {q["kind"] for q in qa} >= {"count"}
        for item in qa:
            assert item["answer"] == _answer(item["question"], objects), item
        assert len({q["question"] for q in qa}) == len(qa)
        json.dumps({k: v for k, v in seed.fields.items() if k != "image"})  # plain data
    assert sizes == {1, 2, 3, 4, 5}


def test_scene_qa_covers_colour_and_position_questions():
    kinds = set()
    for seed in iter_seeds(ScenesConfig(count=30, seed=0)):
        kinds |= {q["kind"] for q in seed.fields["qa"]}
    assert kinds == {"count", "colour", "position"}


def test_rendered_pixels_show_each_object_in_its_cell():
    for seed in iter_seeds(ScenesConfig(count=40, image_size=64, max_objects=4, seed=2)):
        image = seed.fields["image"].to_pil()
        background = BACKGROUNDS[seed.fields["background"]]
        occupied = {(o["row"], o["col"]) for o in seed.fields["objects"]}
        for o in seed.fields["objects"]:
            left, top, right, bottom = object_box(o, 64)
            # Visible at 64 px: even small objects span several pixels.
            assert right - left + 1 >= 8 and bottom - top + 1 >= 8
            cx, cy = (o["col"] * 64 + 32) // 3, (o["row"] * 64 + 32) // 3
            assert image.getpixel((cx, cy)) == RGB[o["colour"]], (seed.index, o)
            box = np.asarray(image)[top : bottom + 1, left : right + 1]
            share = (box == RGB[o["colour"]]).all(axis=-1).mean()
            assert share >= 0.4, (seed.index, o, share)  # a triangle fills about half its box
        for row in range(3):
            for col in range(3):
                if (row, col) not in occupied:
                    cx, cy = (col * 64 + 32) // 3, (row * 64 + 32) // 3
                    assert image.getpixel((cx, cy)) == background


def test_scene_options_restrict_shapes_and_colours():
    config = ScenesConfig(count=20, shapes=["square"], colours=["green", "orange"], max_objects=2, seed=1)
    objects = [o for s in iter_seeds(config) for o in s.fields["objects"]]
    assert {o["shape"] for o in objects} == {"square"}
    assert {o["colour"] for o in objects} == {"green", "orange"}
    assert max(len(s.fields["objects"]) for s in iter_seeds(config)) == 2
    with pytest.raises(ValueError, match="duplicate"):
        ScenesConfig(shapes=["square", "square"])
    with pytest.raises(ValueError):
        ScenesConfig(shapes=["hexagon"])


def test_scene_functions_are_plain_and_reusable():
    objects = random_scene(random.Random(0), shapes=["circle"], colours=["blue"], max_objects=1)
    assert len(objects) == 1 and objects[0]["shape"] == "circle" and objects[0]["colour"] == "blue"
    objects = [{"shape": "triangle", "colour": "red", "size": "large", "row": 1, "col": 1}]
    image = render_scene(objects, 90)
    assert image.size == (90, 90) and image.getpixel((45, 45)) == RGB["red"]
    assert image.getpixel((2, 2)) == BACKGROUNDS["white"]


# --- image_folder ----------------------------------------------------------------------------------


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "images"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / ".cache").mkdir()
    files = {
        "b.png": png_bytes((0, 255, 0)),
        "a.jpg": png_bytes((0, 0, 255), fmt="JPEG"),
        "sub/c.png": png_bytes((1, 2, 3)),
        "sub/deep/d.PNG": png_bytes((4, 5, 6)),
        "broken.png": b"\x89PNG this is not an image at all",
        "notes.txt": b"not an image",
        ".hidden.png": png_bytes(),
        ".cache/x.png": png_bytes(),
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    return root, files


def test_image_folder_order_fields_and_bytes(image_tree):
    root, files = image_tree
    seeds = list(iter_seeds(ImageFolderConfig(path=root)))
    assert [s.fields["path"] for s in seeds] == [
        "a.jpg",
        "b.png",
        "broken.png",
        "sub/c.png",
        "sub/deep/d.PNG",
    ]
    assert [s.index for s in seeds] == list(range(5))
    good = [s for s in seeds if s.error is None]
    assert len(good) == 4
    for s in good:
        assert s.fields["image"].data == files[s.fields["path"]]
        assert s.fields["filename"] == s.fields["path"].rsplit("/", 1)[-1]
    assert seeds[0].fields["image"].mime == "image/jpeg"
    assert count_seeds(ImageFolderConfig(path=root)) == 5
    assert seed_fields(ImageFolderConfig(path=root)) == {"image", "path", "filename"}


def test_image_folder_corrupt_image_is_an_error_seed(image_tree):
    root, _ = image_tree
    (broken,) = [s for s in iter_seeds(ImageFolderConfig(path=root)) if s.fields["path"] == "broken.png"]
    assert isinstance(broken, Seed)
    assert broken.error is not None and broken.error.startswith("cannot decode image broken.png: ")
    assert "0x" not in broken.error  # no memory addresses: reasons are stable across runs
    assert "image" not in broken.fields and broken.fields["filename"] == "broken.png"


def test_image_folder_non_recursive_and_extensions(image_tree, tmp_path):
    root, _ = image_tree
    flat = [s.fields["path"] for s in iter_seeds(ImageFolderConfig(path=root, recursive=False))]
    assert flat == ["a.jpg", "b.png", "broken.png"]
    pngs = [s.fields["path"] for s in iter_seeds(ImageFolderConfig(path=root, extensions=["PNG"]))]
    assert pngs == ["b.png", "broken.png", "sub/c.png", "sub/deep/d.PNG"]
    # A relative path resolves against base_dir.
    relative = ImageFolderConfig(path="images", limit=2)
    assert [s.fields["path"] for s in iter_seeds(relative, tmp_path)] == ["a.jpg", "b.png"]
    assert count_seeds(relative, tmp_path) == 2


# --- jsonl -----------------------------------------------------------------------------------------


@pytest.fixture
def jsonl_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    red = png_bytes((255, 0, 0))
    (tmp_path / "imgs" / "red.png").write_bytes(red)
    (tmp_path / "imgs" / "bad.png").write_bytes(b"garbage")
    lines = [
        json.dumps({"uid": "r1", "file": "imgs/red.png", "question": "What colour?"}),  # line 1, index 0
        "",  # line 2: blank, skipped
        '{"uid": "r2", "file": "imgs/red.png", "question": ',  # line 3, index 1: malformed
        json.dumps({"uid": "r3", "file": "imgs/missing.png", "question": "?"}),  # line 4, index 2
        json.dumps([1, 2]),  # line 5, index 3: not an object
        json.dumps({"uid": "r5", "file": "imgs/bad.png", "question": "?"}),  # line 6, index 4
        json.dumps({"uid": "r6", "file": str(tmp_path / "imgs" / "red.png"), "question": "abs"}),  # line 7
    ]
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n\n")
    return path, red


def test_jsonl_records_with_images(jsonl_file):
    path, red = jsonl_file
    seeds = list(iter_seeds(JsonlConfig(path=path, image_field="file")))
    assert [s.index for s in seeds] == [0, 1, 2, 3, 4, 5]
    first = seeds[0]
    assert first.error is None and first.fields["question"] == "What colour?"
    assert isinstance(first.fields["image"], ImageRef) and first.fields["image"].data == red
    assert first.fields["file"] == "imgs/red.png"
    assert seeds[5].error is None and seeds[5].fields["image"].data == red  # absolute image path


def test_jsonl_bad_lines_become_error_seeds_naming_the_line(jsonl_file):
    path, _ = jsonl_file
    seeds = list(iter_seeds(JsonlConfig(path=path, image_field="file")))
    assert seeds[1].error.startswith("seeds.jsonl:3: invalid JSON: ")
    assert seeds[2].error == "seeds.jsonl:4: image not found: imgs/missing.png"
    assert seeds[2].fields["uid"] == "r3"
    assert seeds[3].error == "seeds.jsonl:5: expected a JSON object, got list"
    assert seeds[4].error.startswith("seeds.jsonl:6: cannot decode image imgs/bad.png: ")


def test_jsonl_without_image_field_and_with_id_field(jsonl_file):
    path, _ = jsonl_file
    seeds = list(iter_seeds(JsonlConfig(path=path, id_field="uid")))
    assert seeds[0].id == "r1" and "image" not in seeds[0].fields
    assert seeds[2].error is None  # the missing image is not looked at without image_field
    assert seeds[1].error is not None and seeds[1].id != "r2"
    assert seed_fields(JsonlConfig(path=path)) == {"uid", "file", "question"}
    assert seed_fields(JsonlConfig(path=path, image_field="file")) == {"uid", "file", "question", "image"}
    assert count_seeds(JsonlConfig(path=path)) == 6
    assert count_seeds(JsonlConfig(path=path, limit=4)) == 4
    assert count_seeds(JsonlConfig(path=path, limit=0)) == 0
    assert len(list(iter_seeds(JsonlConfig(path=path, limit=4)))) == 4


def test_jsonl_ids_are_content_addressed(jsonl_file, tmp_path):
    path, _ = jsonl_file
    a = [s.id for s in iter_seeds(JsonlConfig(path=path, image_field="file"))]
    assert a == [s.id for s in iter_seeds(JsonlConfig(path=path, image_field="file"))]
    assert len(set(a)) == len(a)
    # Changing one record changes its id only.
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("What colour?", "Which colour?")
    path.write_text("\n".join(lines) + "\n")
    b = [s.id for s in iter_seeds(JsonlConfig(path=path, image_field="file"))]
    assert b[0] != a[0] and b[1:] == a[1:]


# --- hf_dataset ------------------------------------------------------------------------------------


@pytest.fixture
def saved_dataset(tmp_path):
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    images = [png_bytes((i * 40, 0, 0)) for i in range(5)]
    images[3] = png_bytes((0, 0, 200), fmt="JPEG")
    ds = Dataset.from_dict(
        {
            "img": [{"bytes": b, "path": None} for b in images],
            "caption": [f"c{i}" for i in range(5)],
            "k": list(range(5)),
        },
        features=Features({"img": ImageFeature(), "caption": Value("string"), "k": Value("int64")}),
    )
    path = tmp_path / "ds"
    ds.save_to_disk(str(path))
    return path, images


def test_hf_dataset_image_bytes_are_the_stored_bytes(saved_dataset):
    path, images = saved_dataset
    config = HFDatasetConfig(path=str(path), image_field="img")
    seeds = list(iter_seeds(config))
    assert [s.index for s in seeds] == list(range(5))
    for s, data in zip(seeds, images, strict=True):
        assert s.error is None
        assert isinstance(s.fields["img"], ImageRef) and s.fields["img"].data == data
        assert s.fields["image"] is s.fields["img"]
    assert seeds[3].fields["image"].mime == "image/jpeg"
    assert [s.fields["caption"] for s in seeds] == [f"c{i}" for i in range(5)]
    assert count_seeds(config) == 5 and count_seeds(config.model_copy(update={"limit": 2})) == 2
    assert seed_fields(config) == {"img", "caption", "k", "image"}
    assert [s.id for s in iter_seeds(config)] == [s.id for s in seeds] and len({s.id for s in seeds}) == 5
    assert next(iter_seeds(config.model_copy(update={"id_field": "caption"}))).id == "c0"


def test_hf_dataset_dict_split_and_errors(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict(
        {"train": Dataset.from_dict({"t": ["a", "b"]}), "test": Dataset.from_dict({"t": ["z"]})}
    ).save_to_disk(str(tmp_path / "dd"))
    test = list(iter_seeds(HFDatasetConfig(path=str(tmp_path / "dd"), split="test")))
    assert [s.fields for s in test] == [{"t": "z"}]
    with pytest.raises(ValueError, match="no split 'valid'"):
        list(iter_seeds(HFDatasetConfig(path=str(tmp_path / "dd"), split="valid")))
    with pytest.raises(ValueError, match="not an Image column"):
        list(iter_seeds(HFDatasetConfig(path=str(tmp_path / "dd"), image_field="t")))


def test_hf_dataset_from_a_local_data_folder(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "data.jsonl").write_text("".join(json.dumps({"q": f"q{i}"}) + "\n" for i in range(4)))
    config = HFDatasetConfig(path=str(folder))
    assert [s.fields["q"] for s in iter_seeds(config, start=1)] == ["q1", "q2", "q3"]
    assert count_seeds(config) == 4
    streamed = HFDatasetConfig(path=str(folder), streaming=True, limit=3)
    assert count_seeds(streamed) is None
    assert [(s.index, s.fields["q"]) for s in iter_seeds(streamed, start=1)] == [(1, "q1"), (2, "q2")]


# --- offsets, for every source ---------------------------------------------------------------------


@pytest.fixture
def every_source(image_tree, jsonl_file, saved_dataset):
    return {
        "scenes": ScenesConfig(count=7, seed=5),
        "image_folder": ImageFolderConfig(path=image_tree[0]),
        "jsonl": JsonlConfig(path=jsonl_file[0], image_field="file"),
        "hf_dataset": HFDatasetConfig(path=str(saved_dataset[0]), image_field="img"),
    }


@pytest.mark.parametrize("kind", list(SEED_SOURCES))
def test_start_offset_yields_the_same_seeds_as_skipping(every_source, kind):
    config = every_source[kind]
    everything = list(iter_seeds(config))
    assert len(everything) >= 5
    assert count_seeds(config) == len(everything)
    for start in (0, 1, 3, len(everything), len(everything) + 2):
        assert list(iter_seeds(config, start=start)) == everything[start:]
    limited = config.model_copy(update={"limit": 4})
    assert list(iter_seeds(limited)) == everything[:4]
    assert list(iter_seeds(limited, start=2)) == everything[2:4]
    assert count_seeds(limited) == 4
