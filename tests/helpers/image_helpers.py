"""Images for the pixel-limit tests: a PNG whose file is small but whose pixel count is huge."""

from __future__ import annotations

import io
from functools import cache

from PIL import Image

BOMB_SIDE = 12000  # 144 megapixels: over the 40 MP limit, under Pillow's own bomb limit (179 MP)


@cache
def bomb_png() -> bytes:
    """A 12000x12000 one-bit black PNG: about 18 KB on disk, over 400 MB once decoded to RGB pixels."""
    buf = io.BytesIO()
    Image.new("1", (BOMB_SIDE, BOMB_SIDE)).save(buf, format="PNG")
    return buf.getvalue()
