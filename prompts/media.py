"""Media references: images travel as encoded bytes named by their content hash.

This is also the one image decoder of the project: a dataset's image cell (bytes, `{bytes, path}`, a
path, a PIL image) becomes an ImageRef with `ImageRef.from_cell`, and bytes become pixels with
`to_pil`. Both refuse an image with more than `max_image_pixels()` pixels before decoding it: a
12000x12000 PNG can be a 20 KB file and still take over 400 MB as RGB pixels, several times that in the
copies a processor makes (issue #16). Pillow's own bomb limit (89 MP to warn, 179 MP to refuse) is higher.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_PIXELS_ENV = "MMSYNTH_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 40_000_000  # 40 megapixels: 8000x5000, a large photo; about 160 MB as RGBA


class ImageTooLarge(ValueError):
    """An image whose pixel count is over the limit; refused before its pixels are decoded."""


def max_image_pixels() -> int:
    """The pixel limit: $MMSYNTH_MAX_IMAGE_PIXELS (a positive integer) or 40 million."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{MAX_PIXELS_ENV}={os.environ[MAX_PIXELS_ENV]!r}: give a positive number of pixels")
    return int(raw)


@dataclass(frozen=True)
class ImageRef:
    """An encoded image (PNG, JPEG, ...) and its sha256.

    The hash, not the bytes, goes into cache keys and lineage; the bytes go to the model
    and into the dataset. `source` says where it came from (a path, a seed id) for error messages.
    """

    data: bytes = field(repr=False)
    sha256: str
    mime: str = "image/png"
    source: str = ""

    @classmethod
    def from_bytes(cls, data: bytes, mime: str | None = None, source: str = "") -> ImageRef:
        return cls(
            data=data, sha256=hashlib.sha256(data).hexdigest(), mime=mime or sniff_mime(data), source=source
        )

    @classmethod
    def from_path(cls, path: str | Path) -> ImageRef:
        p = Path(path)
        return cls.from_bytes(p.read_bytes(), source=str(p))

    @classmethod
    def from_cell(cls, value: Any, base_dir: str | Path | None = None, source: str = "") -> ImageRef | None:
        """The image in a dataset cell, None for an empty cell; ValueError naming `source` otherwise.

        A cell is an ImageRef, encoded bytes, a `datasets` Image cell `{bytes, path}`, a path (relative
        to `base_dir`) or a PIL image (encoded as PNG). The size is read from the header and checked
        against `max_image_pixels()`; the pixels are not decoded.
        """
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if value is None or (isinstance(value, (bytes, bytearray, str)) and not value):
            return None
        if isinstance(value, ImageRef):
            ref = value
        elif isinstance(value, (bytes, bytearray)):
            ref = cls.from_bytes(bytes(value), source=source)
        elif isinstance(value, (str, Path)):
            path = Path(value).expanduser()
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            try:
                data = path.read_bytes()
            except OSError as e:
                raise ValueError(f"cannot read image {source or value}: {e.strerror or e} ({path})") from None
            ref = cls.from_bytes(data, source=source or str(value))  # named as the cell names it
        elif hasattr(value, "save") and hasattr(value, "size"):  # a decoded PIL image
            ref = cls.from_pil(value, source=source)
        else:
            raise ValueError(f"{source or 'the cell'} is not an image ({type(value).__name__})")
        ref.open().close()  # the header only: a bad file or too many pixels fails here, cheaply
        return ref

    @classmethod
    def from_pil(cls, image, fmt: str = "PNG", source: str = "") -> ImageRef:
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        return cls.from_bytes(buf.getvalue(), mime=f"image/{fmt.lower()}", source=source)

    @property
    def label(self) -> str:
        """How messages name the image: its source, else the start of its hash."""
        return self.source or self.sha256[:12]

    def open(self):
        """The image opened lazily (header read, pixels not decoded); ValueError when it is not an image
        and ImageTooLarge when it has more than `max_image_pixels()` pixels."""
        from PIL import Image

        try:
            with warnings.catch_warnings():
                # Pillow warns from 89 MP; the limit checked below is lower, and says which image and why.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(self.data))
        except Image.DecompressionBombError as e:  # over twice Pillow's own limit: refused by Pillow
            raise ImageTooLarge(f"image {self.label} is too large: {_pil_message(e)}") from None
        except Exception as e:  # PIL raises several unrelated types for bad data
            raise ValueError(f"cannot decode image {self.label}: {_pil_message(e)}") from e
        width, height = img.size
        limit = max_image_pixels()
        if width * height > limit:
            img.close()
            raise ImageTooLarge(
                f"image {self.label} is {width}x{height} = {width * height:,} pixels, over the limit of "
                f"{limit:,}; shrink it, or raise the limit with {MAX_PIXELS_ENV}"
            )
        return img

    def check(self) -> str | None:
        """None when the image is whole and within the pixel limit (a cheap `verify()`, no decode), else why not."""
        try:
            with self.open() as img:
                img.verify()
        except ValueError as e:  # not an image, or too many pixels: `open` says which, by name
            return str(e)
        except Exception as e:  # verify() raises several unrelated types for a damaged file
            return f"cannot decode image {self.label}: {_pil_message(e)}"
        return None

    def to_pil(self):
        """Decode to an RGB PIL image; ValueError naming the image when the bytes are not an image or
        have too many pixels (ImageTooLarge)."""
        img = self.open()
        try:
            img.load()
        except Exception as e:  # PIL raises several unrelated types for bad data
            raise ValueError(f"cannot decode image {self.label}: {_pil_message(e)}") from e
        return img.convert("RGB")


# PIL's messages may name the BytesIO object with its address: dropped, reasons must be stable.
_PIL_OBJECT = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def _pil_message(e: Exception) -> str:
    return _PIL_OBJECT.sub("", str(e)).strip() or type(e).__name__


_MAGIC = [
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
    (b"BM", "image/bmp"),
]


def sniff_mime(data: bytes) -> str:
    """Best-effort MIME type from magic bytes; 'application/octet-stream' when unknown."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    return "application/octet-stream"
