from __future__ import annotations

import io
import logging
import random

import numpy as np
from PIL import Image, ImageDraw

from mmsynth.prompts.media import ImageRef
from mmsynth.validators import Candidate, build_validator, remember_accepted
from mmsynth.validators.dedup.images import ImageDedupConfig, ImageDedupValidator, PHashIndex
from mmsynth.validators.dedup.phash import hamming


def scene(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (192, 144), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = int(rng.integers(0, 150)), int(rng.integers(0, 100))
        w, h = int(rng.integers(20, 80)), int(rng.integers(20, 80))
        draw.ellipse([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def ref(img: Image.Image, fmt: str = "PNG") -> ImageRef:
    return ImageRef.from_pil(img, fmt=fmt)


def jpeg_copy(img: Image.Image) -> ImageRef:
    # Another file (other bytes, other sha256) showing the same picture, smaller and recompressed.
    return ref(img.resize((120, 90)), fmt="JPEG")


def cand(id: str, *images: ImageRef, task: str = "gen") -> Candidate:
    return Candidate(id=id, task=task, text="", finish_reason="stop", images=images)


def test_near_duplicate_of_remembered_rejected_with_id_and_distance():
    dedup = ImageDedupValidator()
    first = cand("a", ref(scene(1)))
    assert dedup.check([first])[0].keep
    dedup.remember(first)
    copy = jpeg_copy(scene(1))
    assert copy.sha256 != first.images[0].sha256
    [v] = dedup.check([cand("b", copy)])
    assert not v.keep
    d = hamming(dedup.hash_image(first.images[0]), dedup.hash_image(copy))
    assert v.reason == f"near-duplicate image of: a (hamming {d})"
    assert v.score == d and d <= 6


def test_different_images_kept():
    dedup = ImageDedupValidator()
    for i in range(5):
        dedup.remember(cand(f"r{i}", ref(scene(i))))
    verdicts = dedup.check([cand(f"n{i}", ref(scene(i))) for i in range(5, 10)])
    assert all(v.keep for v in verdicts)


def test_in_batch_duplicates_without_changing_memory():
    dedup = ImageDedupValidator()
    batch = [cand("a", ref(scene(1))), cand("b", ref(scene(2))), cand("c", jpeg_copy(scene(1)))]
    verdicts = dedup.check(batch)
    assert [v.keep for v in verdicts] == [True, True, False]
    assert verdicts[2].reason.startswith("near-duplicate image of: a (hamming ")
    assert len(dedup) == 0


def test_rejected_candidate_does_not_shadow_later_ones_in_the_batch():
    dedup = ImageDedupValidator()
    dedup.remember(cand("a", ref(scene(1))))
    # "b" is rejected (its second image copies "a"), so its first image does not count as seen.
    verdicts = dedup.check([cand("b", ref(scene(3)), jpeg_copy(scene(1))), cand("c", ref(scene(3)))])
    assert [v.keep for v in verdicts] == [False, True]


def test_threshold_is_the_hamming_distance():
    img = ref(scene(4))
    copy = jpeg_copy(scene(4))
    d = hamming(ImageDedupValidator().hash_image(img), ImageDedupValidator().hash_image(copy))
    # A copy further away: cropped a little, so the content shifts.
    shifted = ref(scene(4).crop((4, 4, 192, 144)).resize((192, 144)))
    far = hamming(ImageDedupValidator().hash_image(img), ImageDedupValidator().hash_image(shifted))
    assert d < far <= 15
    strict = ImageDedupValidator(ImageDedupConfig(max_distance=far - 1))
    strict.remember(cand("a", img))
    assert strict.check([cand("b", shifted)])[0].keep
    loose = ImageDedupValidator(ImageDedupConfig(max_distance=far))
    loose.remember(cand("a", img))
    assert loose.check([cand("b", shifted)])[0].reason == f"near-duplicate image of: a (hamming {far})"


def test_same_file_and_task_scope_options():
    img = ref(scene(5))
    default = ImageDedupValidator()
    default.remember(cand("a", img))
    assert not default.check([cand("b", img)])[0].keep  # the same file twice is a duplicate by default
    assert default.check([cand("c", img, task="other")])[0].keep  # memory is per task

    same_ok = ImageDedupValidator(ImageDedupConfig(allow_same_file=True))
    same_ok.remember(cand("a", img))
    verdicts = same_ok.check([cand("b", img), cand("c", img), cand("d", jpeg_copy(scene(5)))])
    assert [v.keep for v in verdicts] == [True, True, False]

    global_memory = ImageDedupValidator(ImageDedupConfig(across_tasks=True))
    global_memory.remember(cand("a", img))
    assert not global_memory.check([cand("c", img, task="other")])[0].keep


def test_undecodable_image_rejected_and_no_images_kept():
    dedup = ImageDedupValidator()
    bad = ImageRef.from_bytes(b"not an image", source="x.png")
    verdicts = dedup.check([cand("a", bad), cand("b")])
    assert verdicts[0].reason.startswith("undecodable image: image 0 (x.png): ")
    assert verdicts[1].keep


def test_replayed_image_without_bytes_is_counted_not_fatal(caplog):
    dedup = ImageDedupValidator()
    replayed = ImageRef(data=b"", sha256="ab" * 32, source="replay")
    with caplog.at_level(logging.WARNING, logger="mmsynth.validators.dedup.images"):
        dedup.remember(cand("a", replayed))
    assert dedup.unhashed == 1 and len(dedup) == 0
    assert "cannot hash image" in caplog.text


def test_resume_state_equals_uninterrupted_run():
    pics = [1, 2, 1, 3, 2, 4, 3, 5]  # repeats are re-encoded copies
    seen: set[int] = set()
    stream = []
    for i, p in enumerate(pics):
        stream.append(cand(f"r{i}", jpeg_copy(scene(p)) if p in seen else ref(scene(p))))
        seen.add(p)
    live = ImageDedupValidator()
    accepted = []
    for batch in (stream[:3], stream[3:5], stream[5:]):
        verdicts = live.check(batch)
        remember_accepted([live], batch, [[v] for v in verdicts])
        accepted += [c for c, v in zip(batch, verdicts, strict=True) if v.keep]
    assert [c.id for c in accepted] == ["r0", "r1", "r3", "r5", "r7"]

    resumed = build_validator({"type": "image_dedup"})
    remember_accepted([resumed], accepted)
    probe = [cand("p0", jpeg_copy(scene(4))), cand("p1", ref(scene(6))), cand("p2", jpeg_copy(scene(6)))]
    assert resumed.check(probe) == live.check(probe)
    assert [v.keep for v in live.check(probe)] == [False, True, False]


def test_index_matches_brute_force():
    rng = random.Random(0)
    hashes = [rng.getrandbits(64) for _ in range(3000)]
    # Plant near copies at every distance 0..9, so the radius edges are exercised, of early entries (in
    # the sorted tables) and of the last ones (still in the tail).
    for d in [*range(10), *range(10)]:
        h = hashes[d if len(hashes) < 3010 else 2999 - d]
        for bit in rng.sample(range(64), d):
            h ^= 1 << bit
        hashes.append(h)
    for max_distance in (3, 6, 9):
        # A short tail, so most entries are in the sorted block tables and some are still in the tail.
        index = PHashIndex(max_distance, tail=64)
        for i, h in enumerate(hashes[:3000]):
            index.add(h, i, f"id{i}")
        assert 0 < len(index) - index._sorted < len(index) // 10
        for q in hashes[3000:] + [rng.getrandbits(64) for _ in range(20)]:
            within = [
                (hamming(q, h), i) for i, h in enumerate(hashes[:3000]) if hamming(q, h) <= max_distance
            ]
            expected = None if not within else (f"id{min(within)[1]}", min(within)[0])
            assert index.nearest(q) == expected, (max_distance, q)


def test_index_skip_file_passes_over_equal_files():
    index = PHashIndex(6)
    index.add(0b1111, 7, "same")
    index.add(0b1110, 8, "other")
    assert index.nearest(0b1111) == ("same", 0)
    assert index.nearest(0b1111, skip_file=7) == ("other", 1)
    assert index.record_id(1) == "other"


def test_jpeg_bytes_differ_from_png_but_hash_alike():
    # Sanity for the fixtures above: the copies are different files.
    img = scene(9)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert ImageRef.from_bytes(buf.getvalue()).sha256 != jpeg_copy(img).sha256
