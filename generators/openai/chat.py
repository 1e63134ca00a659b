"""GenerationRequest -> chat completions body, and the server's answer -> Generation."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from mmsynth.generators.types import Generation, GenerationRequest, Output
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import ImagePart, TextPart


async def chat_body(
    req: GenerationRequest, model: str, image_url: Callable[[ImageRef], Awaitable[str]]
) -> dict[str, Any]:
    """The POST /chat/completions body; ValueError (from `image_url`) for an image that does not decode."""
    sp = req.sampling
    messages = []
    for m in req.prompt.messages:
        if not m.images:
            messages.append({"role": m.role, "content": m.text})
            continue
        parts = []
        for p in m.parts:
            if isinstance(p, TextPart):
                if p.text:
                    parts.append({"type": "text", "text": p.text})
            elif isinstance(p, ImagePart):
                parts.append({"type": "image_url", "image_url": {"url": await image_url(p.image)}})
        messages.append({"role": m.role, "content": parts})
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "n": sp.n,
        "temperature": sp.temperature,
        "top_p": sp.top_p,
        "max_tokens": sp.max_tokens,
    }
    if sp.seed is not None:
        body["seed"] = sp.seed
    if sp.stop:
        body["stop"] = list(sp.stop)
    schema = req.output_schema
    if schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": schema_name(req), "schema": schema, "strict": True},
        }
    return body


def to_generation(data: dict[str, Any], replica_url: str, attempts: int) -> Generation:
    """Outputs in `index` order with their finish reasons, usage, and where the answer came from."""
    choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
    outputs = tuple(Output(content(c), c.get("finish_reason") or "stop") for c in choices)
    usage = data.get("usage") or {}
    extra = {"server_model": data.get("model"), "replica": replica_url, "attempts": attempts}
    return Generation(
        outputs=outputs,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        extra=extra,
    )


def content(choice: dict[str, Any]) -> str:
    msg = choice.get("message") or {}
    text = msg.get("content")
    if isinstance(text, list):  # some servers answer in parts
        return "".join(p.get("text", "") for p in text if isinstance(p, dict))
    return text or ""


def schema_name(req: GenerationRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", req.prompt.template_id or "output")[:64]
    return name or "output"
