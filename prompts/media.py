"""Media references: images travel as encoded bytes named by their content hash."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path


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
    def from_pil(cls, image, fmt: str = "PNG", source: str = "") -> ImageRef:
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        return cls.from_bytes(buf.getvalue(), mime=f"image/{fmt.lower()}", source=source)

    def to_pil(self):
        """Decode to an RGB PIL image; raises PIL's error (with `source` added) when the bytes are not an image."""
        from PIL import Image

        try:
            img = Image.open(io.BytesIO(self.data))
            img.load()
        except Exception as e:  # PIL raises several unrelated types for bad data
            raise ValueError(f"cannot decode image {self.source or self.sha256[:12]}: {e}") from e
        return img.convert("RGB")


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
