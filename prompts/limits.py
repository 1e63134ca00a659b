"""What a template render may use: the size, time and range limits, read from the environment, and the
per-thread budget of the render running now (its deadline). The sandbox (sandbox.py) checks against
these in every operator, call and output chunk; docs/reliability.md lists the limits.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import SecurityError

ENV_MAX_CHARS = "MMSYNTH_TEMPLATE_MAX_CHARS"
ENV_TIMEOUT = "MMSYNTH_TEMPLATE_TIMEOUT"
ENV_MAX_RANGE = "MMSYNTH_TEMPLATE_MAX_RANGE"
# Integers a template computes: far above any real prompt's arithmetic, far below a slow bignum.
MAX_INT_BITS = 4096


class TemplateLimitError(SecurityError):
    """A template went over one of the sandbox's limits."""


@dataclass(frozen=True)
class Limits:
    max_chars: int = 1_000_000  # characters of output, and of any string or list built on the way
    timeout: float = 10.0  # seconds per render
    max_range: int = 100_000  # items of one range()


def _env_number(name: str, default: float, kind: type) -> Any:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"environment variable {name}={raw!r} must be a positive {kind.__name__}")
    return value


def limits() -> Limits:
    """The limits now in force: those of the render running on this thread (read when it began), else
    the defaults changed by the environment variables above. Read once per render: the checks below ask
    for them several times per block, and three environment look-ups each time cost a tenth of a render."""
    lim = _budget.limits
    return lim if lim is not None else _read_limits()


def _read_limits() -> Limits:
    d = Limits()
    return Limits(
        max_chars=_env_number(ENV_MAX_CHARS, d.max_chars, int),
        timeout=_env_number(ENV_TIMEOUT, d.timeout, float),
        max_range=_env_number(ENV_MAX_RANGE, d.max_range, int),
    )


class _Budget(threading.local):
    deadline: float | None = None
    timeout: float = 0.0
    limits: Limits | None = None
    fixed: Limits | None = None  # set by `fixed_limits`


_budget = _Budget()


@contextmanager
def render_budget() -> Iterator[Limits]:
    """A deadline for the render in this block (this thread only); yields the limits in force."""
    lim = _budget.fixed or _read_limits()
    outer = _budget.deadline, _budget.timeout, _budget.limits
    _budget.deadline, _budget.timeout = time.monotonic() + lim.timeout, lim.timeout
    _budget.limits = lim
    try:
        yield lim
    finally:
        _budget.deadline, _budget.timeout, _budget.limits = outer


@contextmanager
def fixed_limits() -> Iterator[Limits]:
    """Renders in this block (this thread) use the limits read once at its start, for a caller that
    renders many prompts in a row (the engine, a chunk at a time): three environment look-ups per
    render cost a sixth of a short one. Each render still gets its own deadline."""
    outer = _budget.fixed
    _budget.fixed = _read_limits()
    try:
        yield _budget.fixed
    finally:
        _budget.fixed = outer


def check_deadline() -> None:
    if _budget.deadline is not None and time.monotonic() > _budget.deadline:
        raise TemplateLimitError(
            f"the template took more than {_budget.timeout:g} s to render (set {ENV_TIMEOUT} to allow more)"
        )


def too_big(what: str, size: int, cap: int) -> TemplateLimitError:
    return TemplateLimitError(
        f"{what} would be {size:,} characters or items, over the limit of {cap:,} (set {ENV_MAX_CHARS} to allow more)"
    )


def check_size(what: str, size: int) -> None:
    cap = limits().max_chars
    if size > cap:
        raise too_big(what, size, cap)


def check_int(what: str, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limits().max_chars:
        raise too_big(what, abs(value), limits().max_chars)


def collect_output(chunks: Iterable[str]) -> str:
    """Join a block's output as it streams, within the size limit and the deadline."""
    cap, out, size = limits().max_chars, [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > cap:
            raise too_big("the rendered text", size, cap)
        check_deadline()
        out.append(chunk)
    return "".join(out)
