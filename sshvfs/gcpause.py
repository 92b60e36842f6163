"""The cyclic garbage collector's pause while huge listings are built and served.

A listing of 100,000 entries allocates ~300,000 objects that all stay (entries, their
attributes, the daemon's nodes). None of them is ever part of a cycle, yet each allocation
burst makes the collector walk them: once as young objects and again as they age, ~0.6 µs
an entry, ~70 ms of a cold ``ls -l`` of 100,000 entries spent proving nothing.

:func:`hold` pauses it: inside a running event loop it stays paused until no listing has
held it for :data:`RESUME_AFTER` (the collection of what was built then runs when the
daemon is idle, off the reader's clock), yet never longer than :data:`MAX_PAUSE` at a
time, so a mount that lists without pause still collects its cyclic garbage. Outside a
loop (a listing parsed in a test, say) the pause ends with the ``with`` block. The collector
is never resumed if something else had turned it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator

#: seconds without a listing before the collector runs again
RESUME_AFTER = 0.5
#: the longest the collector stays paused at one stretch (seconds)
MAX_PAUSE = 5.0


class _Pause:
    def __init__(self) -> None:
        #: when this pause began (monotonic), None while the collector runs
        self.since: float | None = None
        self.timer: asyncio.TimerHandle | None = None

    def hold(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        if self.since is None:
            if not gc.isenabled():
                return  # turned off by someone else: theirs to turn on again
            gc.disable()
            self.since = now
        elif now - self.since >= MAX_PAUSE:
            self.resume()  # paused long enough: collect, then the next listing may pause
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer = loop.call_later(RESUME_AFTER, self.resume)

    def resume(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.since is not None:
            self.since = None
            gc.enable()


_pause = _Pause()


@contextlib.contextmanager
def hold() -> Iterator[None]:
    """Pause the cyclic collector while a listing's objects are built (see the module)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        _pause.hold(loop)
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def paused() -> bool:
    """Is the collector paused for listings right now?"""
    return _pause.since is not None
