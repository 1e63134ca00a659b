"""Did-you-mean hints for a name that is not one of the known choices."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> str:
    """`" Did you mean 'x'?"` (up to `n` matches joined by "or") for the choices close to `name`, else "".

    The leading space lets callers append it to a sentence: `f"unknown backend 'y'.{did_you_mean(...)}"`.
    `cutoff` is difflib's similarity ratio in [0, 1]; lower accepts looser matches.
    """
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=cutoff)
    if not close:
        return ""
    return " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
