"""trio <-> asyncio: asyncssh runs on its own asyncio loop in one dedicated thread.

A trio task hands a coroutine to that loop with :meth:`Bridge.run` and sleeps until the
asyncio future is done; the future's done-callback wakes the task through the trio token.
Cancelling the trio task cancels the future. One crossing costs ~150 µs, so callers keep
crossings coarse (one per VFS call).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import outcome
import trio

log = logging.getLogger(__name__)

T = TypeVar("T")


class Bridge:
    """Owns the asyncio loop thread. Start it once; ``close`` stops and joins it."""

    def __init__(self, name: str = "sshvfs-asyncio") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._started = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the asyncio loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` to completion from a plain (non-loop) thread, blocking."""
        return self.submit(coro).result(timeout)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` (an asyncio coroutine) from a trio task."""
        future = self.submit(coro)
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()
        aborted = False

        def wake() -> None:  # runs in the trio thread
            if not aborted:
                trio.lowlevel.reschedule(task, outcome.Value(None))

        def on_done(_f: concurrent.futures.Future[T]) -> None:  # any thread
            try:
                token.run_sync_soon(wake)
            except trio.RunFinishedError:
                pass

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            nonlocal aborted
            aborted = True
            future.cancel()
            return trio.lowlevel.Abort.SUCCEEDED

        future.add_done_callback(on_done)
        await trio.lowlevel.wait_task_rescheduled(abort)
        return future.result()

    def close(self, timeout: float = 5.0) -> None:
        if not self._started or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("asyncio thread did not stop within %.1f s", timeout)
