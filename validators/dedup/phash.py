"""64-bit perceptual hash (DCT pHash) of an image, and the Hamming distance between two hashes.

Resized, recompressed or slightly recoloured copies of an image get hashes a few bits apart; unrelated
images differ in about half of the 64 bits. numpy only: the 32x32 DCT is one matrix product each way.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HASH_BITS = 64
_SIZE = 32  # the image is reduced to 32x32 grey before the DCT
_LOW = 8  # the top-left 8x8 DCT coefficients (lowest frequencies) make the 64 bits


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: `M @ x` is the DCT of the vector x (scipy's dct(x, norm='ortho'))."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT = _dct_matrix(_SIZE)
_WEIGHTS = 1 << np.arange(HASH_BITS - 1, -1, -1, dtype=np.uint64)  # bit 63 first: row-major order


def phash(img: Image.Image) -> int:
    """The 64-bit pHash of `img`: bit set where a low-frequency DCT coefficient is above their median.

    Bits are the 8x8 block in row-major order, the first (DC) coefficient in the highest bit.
    """
    grey = img.convert("L").resize((_SIZE, _SIZE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = (_DCT @ pixels @ _DCT.T)[:_LOW, :_LOW].ravel()
    bits = (low > np.median(low)).astype(np.uint64)
    return int((bits * _WEIGHTS).sum(dtype=np.uint64))


def hamming(a: int, b: int) -> int:
    """Number of bits in which two hashes differ."""
    return (a ^ b).bit_count()
