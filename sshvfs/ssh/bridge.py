"""The asyncio loop of a mount, in one dedicated thread.

asyncssh, the VFS layers and the FUSE handlers (pyfuse3 in asyncio mode) all run on this one
loop: a VFS call from a FUSE handler is a plain ``await``, with no thread hop. :meth:`call`
runs a coroutine on it from a plain thread (start-up, shutdown, serving the mount);
:meth:`run` awaits one from any loop (directly when already on this one; tests use their own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

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

    def on_loop(self) -> bool:
        """Whether the calling coroutine runs on this loop (call it from a coroutine)."""
        return asyncio.get_running_loop() is self._loop

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on this loop: directly when already on it, else across threads."""
        if self.on_loop():
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def close(self, timeout: float = 5.0) -> None:
        if not self._started or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("asyncio thread did not stop within %.1f s", timeout)
