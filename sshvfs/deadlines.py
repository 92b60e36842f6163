"""Deadlines: one per remote operation, for far less than ``asyncio.timeout`` costs.

Every SFTP request a kernel request makes runs under the mount's deadline (``timeout=``,
30 s by default). ``asyncio.timeout`` arms a timer for each (a TimerHandle, a heap push,
a cancel and the cancelled handle's later removal: 4-5 us a use, a tenth of the daemon's
CPU in an editor's save). Here an operation only notes when it is due; one sweep, run
every ``slack`` seconds while operations are in flight, cancels the task of each that is
overdue, and the operation turns that cancellation into ``TimeoutError``, as
``asyncio.timeout`` does (a cancellation from elsewhere stays one). Bound: an operation
fails at most ``slack`` (a quarter of the deadline, at most 1 s) after it was due.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

#: the most a deadline may be late (seconds)
MAX_SLACK = 1.0


class _Entry:
    __slots__ = ("due", "task", "expired", "cancelling")

    def __init__(self, due: float, task: asyncio.Task[object], cancelling: int) -> None:
        self.due = due
        self.task = task
        #: cancelled by the sweep, not yet turned into TimeoutError
        self.expired = False
        #: the task's cancel requests when the operation began (as asyncio.timeout)
        self.cancelling = cancelling


class Deadlines:
    """Operations of one loop, each failing with ``TimeoutError`` ``seconds`` after it began
    (up to ``slack`` later)."""

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"a deadline must be positive, not {seconds}")
        self.seconds = seconds
        self.slack = min(MAX_SLACK, seconds / 4)
        self._live: dict[int, _Entry] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, aw: Awaitable[T]) -> T:
        """``await aw``, or TimeoutError once it is overdue (``aw`` is cancelled)."""
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel, no deadline
            return await aw
        loop = task.get_loop()
        entry = _Entry(loop.time() + self.seconds, task, task.cancelling())
        key = id(entry)
        self._live[key] = entry
        if self._sweeper is None or self._loop is not loop:
            self._loop = loop
            self._sweeper = loop.call_later(self.slack, self._sweep, loop)
        try:
            return await aw
        except asyncio.CancelledError:
            if entry.expired:
                entry.expired = False
                if task.uncancel() <= entry.cancelling:
                    raise TimeoutError from None
            raise
        finally:
            del self._live[key]
            if entry.expired:  # cancelled, and ``aw`` swallowed it: take it back
                task.uncancel()

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return  # armed on a loop no longer used
        self._sweeper = None
        if not self._live:
            return
        now = loop.time()
        for entry in list(self._live.values()):
            if (
                entry.due <= now
                and not entry.expired
                and not entry.task.done()
                and entry.task.get_loop() is loop
            ):
                entry.expired = True
                entry.task.cancel()
        self._sweeper = loop.call_later(self.slack, self._sweep, loop)

    def close(self) -> None:
        """Stop sweeping (the loop is ending)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
