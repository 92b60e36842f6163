"""Tasks: the background tasks of one mount, with one owner and one end.

Whatever a request starts and does not wait for (a tree or content prefetch, a lookup's
listing, a directory stream's fill, a remote CLOSE after RELEASE, the watcher, the exec
lister's warm-up) is spawned here, by a ``spawn(coro, name)`` the mount hands down. When
the mount ends, :meth:`Tasks.close` cancels what is still running and waits for it, so
nothing outlives the mount's connection or runs into the loop's shutdown.

Not an ``asyncio.TaskGroup``: a group cancels every task when one fails, and a failed
prefetch must cost only itself (the request it would have helped goes to the server).
A task that fails is logged here, once, with its name; its starter may still await it
and see the error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Spawn(Protocol):
    """What owners are handed: start ``coro`` in the background under ``name``."""

    def __call__(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]: ...


class Tasks:
    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._running)

    def names(self) -> list[str]:
        """The names of the tasks still running."""
        return sorted(t.get_name() for t in self._running)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run ``coro`` in the background; after :meth:`close`, it is cancelled at once."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._running.add(task)
        task.add_done_callback(self._done)
        if self._closed:
            task.cancel()
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, OSError):  # what a VFS call raises: its starter's business
            log.debug("background task %s: %s", task.get_name(), exc)
        elif exc is not None:
            log.error("background task %s failed", task.get_name(), exc_info=exc)

    async def close(self, timeout: float = 10.0) -> None:
        """Cancel every task still running and wait (at most ``timeout`` s) for them."""
        self._closed = True
        running = list(self._running)
        for task in running:
            task.cancel()
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=timeout)
        if pending:
            log.warning(
                "background tasks still running after %.0f s: %s",
                timeout,
                ", ".join(sorted(t.get_name() for t in pending)),
            )


#: the tasks of components made outside a mount (tests, tools): they end with the loop
_DETACHED = Tasks()


def spawn_detached(coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """The ``spawn`` of a component no mount handed one."""
    return _DETACHED.spawn(coro, name)


def retrieve(future: asyncio.Future[Any]) -> None:
    """A done callback that marks a future's error as seen (no "never retrieved" warning)
    when whoever cares has it already, or nobody waits for it any more."""
    if not future.cancelled():
        future.exception()
