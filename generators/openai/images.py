"""Images as data URLs under the resize policy, with a small cache (the tasks of one seed share its image)."""

from __future__ import annotations

import asyncio
import base64
import io
from collections import OrderedDict

from mmsynth.prompts.media import ImageRef

_CACHE_SIZE = 256  # encoded data URLs kept


def encode_image(img: ImageRef, max_side: int | None, fmt: str | None) -> str:
    """A data URL for `img` under the resize policy; ValueError (naming the image) when it cannot be decoded.

    max_side: downscale (keeping the aspect ratio) so the longer side is at most this; None keeps the
    size. fmt: "png" or "jpeg" re-encodes; None keeps the original bytes when the size is kept, and
    writes PNG when the image was resized.
    """
    if max_side is None and fmt is None:
        data, mime = img.data, img.mime
    else:
        pil = img.to_pil()
        w, h = pil.size
        resized = max(w, h) > (max_side or max(w, h))
        if resized:
            scale = max_side / max(w, h)
            from PIL import Image

            pil = pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
        if not resized and fmt is None:
            data, mime = img.data, img.mime
        else:
            out = fmt or "png"
            buf = io.BytesIO()
            if out == "jpeg":
                pil.save(buf, format="JPEG", quality=90)
            else:
                pil.save(buf, format="PNG")
            data, mime = buf.getvalue(), f"image/{out}"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class ImageURLs:
    """Data URLs by image content hash, encoded in a worker thread, the last 256 kept."""

    def __init__(self, max_side: int | None, fmt: str | None) -> None:
        self.max_side = max_side
        self.fmt = fmt
        self._urls: OrderedDict[str, str] = OrderedDict()

    async def url(self, img: ImageRef) -> str:
        url = self._urls.get(img.sha256)
        if url is not None:
            self._urls.move_to_end(img.sha256)
            return url
        url = await asyncio.to_thread(encode_image, img, self.max_side, self.fmt)
        self._urls[img.sha256] = url
        while len(self._urls) > _CACHE_SIZE:
            self._urls.popitem(last=False)
        return url
