from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmsynth.validators.dedup.phash import _dct_matrix, hamming, phash


def scene(seed: int, size: tuple[int, int] = (256, 192)) -> Image.Image:
    """Random ellipses on a random background: distinct seeds give unrelated pictures."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = int(rng.integers(0, size[0] - 40)), int(rng.integers(0, size[1] - 40))
        w, h = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        draw.ellipse([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def _naive_dct2(x: np.ndarray) -> np.ndarray:
    # Straight from the orthonormal DCT-II definition, to check the matrix form.
    n = x.shape[0]
    out = np.zeros_like(x)
    for u in range(n):
        for v in range(n):
            cu = np.sqrt(1 / n) if u == 0 else np.sqrt(2 / n)
            cv = np.sqrt(1 / n) if v == 0 else np.sqrt(2 / n)
            i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
            basis = np.cos(np.pi * (2 * i + 1) * u / (2 * n)) * np.cos(np.pi * (2 * j + 1) * v / (2 * n))
            out[u, v] = cu * cv * (x * basis).sum()
    return out


def test_dct_matrix_is_the_orthonormal_dct():
    m = _dct_matrix(8)
    assert np.allclose(m @ m.T, np.eye(8))
    x = np.random.default_rng(0).normal(size=(8, 8))
    assert np.allclose(m @ x @ m.T, _naive_dct2(x))


def test_hash_is_64_bit_and_deterministic():
    h = phash(scene(1))
    assert 0 <= h < 2**64
    assert phash(scene(1)) == h
    # About half the bits are set: the threshold is the median of the 64 coefficients.
    assert 24 <= h.bit_count() <= 40


def test_resized_and_recompressed_copies_are_close():
    img = scene(1)
    h = phash(img)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=30)
    assert hamming(h, phash(img.resize((128, 96)))) <= 2
    assert hamming(h, phash(Image.open(buf))) <= 2
    assert hamming(h, phash(img.convert("L"))) <= 2


def test_unrelated_images_are_far():
    hashes = [phash(scene(s)) for s in range(8)]
    distances = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(distances) > 12


@pytest.mark.parametrize(("a", "b", "d"), [(0, 0, 0), (0, 1, 1), (0b1011, 0b0110, 3), (0, 2**64 - 1, 64)])
def test_hamming(a, b, d):
    assert hamming(a, b) == d
