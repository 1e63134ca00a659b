"""What can go wrong talking to a server, by kind, and the server's own words for it."""

from __future__ import annotations

import contextlib
import email.utils
import json
import re
import time

from mmsynth.generators.openai.transport import Reply
from mmsynth.prompts.errors import MmsynthError

OVERLOAD = frozenset({429, 503, 504})  # the server says "slower": retried, and the limiter halves
TRANSIENT = OVERLOAD | {500, 502}
AUTH = frozenset({401, 403})
RETRY_AFTER_MAX_S = 300.0


class ServerError(MmsynthError, RuntimeError):
    """The server as a whole is failing (unreachable, wrong model, retries exhausted, key refused)."""


class Transient(Exception):
    """A failure worth retrying; `retry_after` is the server's Retry-After in seconds, if it sent one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Rejected(Exception):
    """The server refused this one request (4xx other than 401/403/429): its answer is a failure."""


def server_message(reply: Reply) -> str:
    """The server's error message: OpenAI/vLLM `{"error": {"message"}}`, TGI `{"error": "..."}`,
    FastAPI `{"detail"}`, else the start of the body."""
    try:
        data = reply.json()
    except ValueError:
        return reply.text.strip()[:500] or reply.reason
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for k in ("error", "message", "detail"):
            if data.get(k):
                v = data[k]
                return v if isinstance(v, str) else json.dumps(v)[:500]
    return json.dumps(data)[:500]


def retry_after(reply: Reply) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), None when absent or unreadable."""
    value = reply.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


def scrub(text: str, api_key: str | None) -> str:
    """`text` with the API key and any URL credentials removed: every message the backend makes goes through here."""
    if api_key:
        text = text.replace(api_key, "***")
    return re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)
