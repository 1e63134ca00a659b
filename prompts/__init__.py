"""Prompt templates: versioned Jinja2 files rendered into chat messages (the leaf layer)."""

from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import ImagePart, Message, RenderedPrompt, TextPart

__all__ = ["ImagePart", "ImageRef", "Message", "RenderedPrompt", "TextPart"]
