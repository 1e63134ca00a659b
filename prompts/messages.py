"""Rendered prompts: the chat messages a template produced, with their lineage."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mmsynth.prompts.media import ImageRef


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    image: ImageRef


Part = TextPart | ImagePart


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        """The text of the message with images left out."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def images(self) -> tuple[ImageRef, ...]:
        return tuple(p.image for p in self.parts if isinstance(p, ImagePart))


@dataclass(frozen=True)
class RenderedPrompt:
    """What a template made of one set of inputs: messages plus the template's identity.

    `output_schema` is the JSON schema the answer must satisfy (structured tasks), or None.
    """

    messages: tuple[Message, ...]
    template_id: str
    template_version: int
    template_hash: str
    output_schema: dict[str, Any] | None = None
    sampling_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> tuple[ImageRef, ...]:
        return tuple(img for m in self.messages for img in m.images)

    def canonical(self) -> dict[str, Any]:
        """A JSON-able description in which images appear by content hash: what cache keys hash."""
        return {
            "template": [self.template_id, self.template_version, self.template_hash],
            "messages": [
                {
                    "role": m.role,
                    "parts": [
                        {"text": p.text} if isinstance(p, TextPart) else {"image": p.image.sha256}
                        for p in m.parts
                    ],
                }
                for m in self.messages
            ],
            "output_schema": self.output_schema,
        }

    def digest(self) -> str:
        return stable_hash(self.canonical())


# The canonical JSON of cache keys and record ids. One encoder for every call (json.dumps with
# options builds a new one each time; twice per request). Changing an option changes every key.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys, no whitespace)."""
    return hashlib.sha256(_CANONICAL.encode(obj).encode()).hexdigest()
