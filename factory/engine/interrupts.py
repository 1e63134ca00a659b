"""Ctrl-C (and SIGTERM) during a run: the first stops it cleanly, the second quits at once.

One process-wide handler, installed for the whole run command (start-up included), replaces both
Python's default (a KeyboardInterrupt traceback wherever it lands) and asyncio's (which a second
signal turned into a hang: the loop had stopped, but worker threads kept `asyncio.run` waiting).

- First signal while the chunk loop runs: the loop's `on_first` callback asks it to drain (finish the
  requests in flight, cache them) and the run ends with Interrupted.
- First signal at any other moment (loading models, writing the card): KeyboardInterrupt, which the
  command turns into exit 130; nothing half-written is visible, since shards and markers are atomic.
- Second signal, whatever is running: print one line and `os._exit(130)`. That is exactly as safe as
  kill -9, which the run folder survives (finished chunks are a prefix, the cache is SQLite).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

EXIT_CODE = 130
QUIT_MESSAGE = (
    "\n[mmsynth] quitting at once: finished chunks and cached answers are kept, requests in flight are "
    "lost. Run the same command to resume.\n"
)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    count = 0
    on_first: Callable[[], None] | None = None


_state = _State()


def write_stderr(text: str) -> None:
    """Write to stderr unbuffered; safe inside a signal handler."""
    # os.write, not print: the handler can run in the middle of another print (a reentrant call).
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


def _handler(signum: int, frame: Any) -> None:
    _state.count += 1
    if _state.count >= 2:
        write_stderr(QUIT_MESSAGE)
        os._exit(EXIT_CODE)
    if _state.on_first is not None:
        _state.on_first()
        return
    raise KeyboardInterrupt


def exit_after_interrupt(code: int = EXIT_CODE) -> None:
    """End the process now once a stop signal was handled and its message printed; a no-op otherwise.

    Python's own exit would finalize first (module teardown, library atexit hooks), and a further
    Ctrl-C in that window finds the default handler back in place and kills the process by the signal.
    Everything the run keeps is on disk by now, so there is nothing left to finalize.
    """
    if not interrupted():
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def interrupted() -> bool:
    """True once a stop signal arrived."""
    return _state.count > 0


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Install the handler for the block (main thread only; elsewhere signals are not ours to take).

    Nested uses are no-ops. Once a signal arrived the handler stays installed after the block, so a
    further Ctrl-C while the process winds down still quits at once instead of printing a traceback.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(SIGNALS[0]) is _handler:
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    _state.count = 0
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        if not interrupted():
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@contextlib.contextmanager
def draining(on_first: Callable[[], None]) -> Iterator[None]:
    """While the block runs, a first signal calls `on_first` (from the signal handler: keep it tiny)."""
    _state.on_first = on_first
    try:
        if interrupted():  # the signal came just before the loop started
            on_first()
        yield
    finally:
        _state.on_first = None
