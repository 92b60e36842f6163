"""ByteBudget: a bound on bytes in flight, shared by the handles of one mount.

It lives on the asyncio side (every method must be called from the asyncio loop thread).
Waiters are served first come, first served, so a handle's writes keep their order.
A single request larger than the whole budget is let through when nothing else is held,
so it can never wait forever.
"""

from __future__ import annotations

import asyncio
import collections
import logging

log = logging.getLogger(__name__)


class ByteBudget:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.used = 0
        #: the most ever held at once (tests and the benchmark read it)
        self.peak = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def available(self) -> int:
        return max(0, self.capacity - self.used)

    def _fits(self, n: int) -> bool:
        return self.used + n <= self.capacity or self.used == 0

    def _take(self, n: int) -> None:
        self.used += n
        if self.used > self.peak:
            self.peak = self.used

    def try_acquire(self, n: int) -> bool:
        """Take ``n`` bytes if they fit now and nobody is queued; never waits."""
        if self._waiters or not self._fits(n):
            return False
        self._take(n)
        return True

    def force(self, n: int) -> None:
        """Take ``n`` bytes even past the capacity (data the caller must have anyway)."""
        self._take(n)

    async def acquire(self, n: int) -> None:
        """Wait until ``n`` bytes fit, in arrival order."""
        if not self._waiters and self._fits(n):
            self._take(n)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = (n, future)
        self._waiters.append(item)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(n)  # granted as we were cancelled: give it back
            else:
                try:
                    self._waiters.remove(item)
                except ValueError:
                    pass  # already dropped by _wake
                self._wake()
            raise

    def release(self, n: int) -> None:
        self.used -= n
        if self.used < 0:  # a bookkeeping bug must not wedge every writer
            log.warning("byte budget released more than it held (%d)", self.used)
            self.used = 0
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, future = self._waiters[0]
            if future.cancelled():
                self._waiters.popleft()
                continue
            if not self._fits(n):
                return
            self._waiters.popleft()
            self._take(n)
            future.set_result(None)
