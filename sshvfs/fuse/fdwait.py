"""FdWait: pyfuse3's wait for /dev/fuse, without epoll_ctl calls or extra loop turns per request.

pyfuse3's workers loop: take the read lock, wait until /dev/fuse is readable, release the
lock, read one request, handle it. Its asyncio shim registers the fd with the loop's
selector before every wait and unregisters it after (``add_reader``/``remove_reader``: two
epoll_ctl syscalls and a selector key, handle and closure each time), ~8% of the daemon's CPU
in an untar, and its ``asyncio.Lock`` wakes the next worker through a future and a loop turn.
Here (installed after ``pyfuse3.asyncio.enable()``):

- **a request already there is taken in the next loop turn**: a wait first polls the fd
  (zero timeout), so a worker back from a request that others queued meanwhile (FORGETs, a
  second process) needs no readiness report. Never in the same turn: what the last request
  queued (the first steps of its SFTP request tasks, which send them) must run first;
- **the fd stays registered** while anyone may want it. A readiness report wakes the one
  waiting worker after a zero-timeout ``poll`` confirms a request is really there: the report
  may be stale (the worker woken for it has read it since the selector looked), and a worker
  woken for nothing would block the whole loop in ``read(2)`` of a blocking fd;
- a report with a request waiting and nobody waiting for it is let pass while a worker is
  queued for the read lock (it waits for the fd in a loop turn or two); only when none is
  coming is the fd unregistered, or the level-triggered selector would spin while every
  worker is busy. The next waiter registers it again;
- **the read lock hands over**: releasing it passes it straight to the next worker in line.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import select
from types import TracebackType
from typing import Any

import pyfuse3.asyncio as shim

log = logging.getLogger(__name__)


class ReadLock:
    """pyfuse3's read lock (``trio.Lock()`` in its source): FIFO, handed over on release,
    and it says how many workers are queued for it."""

    def __init__(self) -> None:
        self._held = False
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def __aenter__(self) -> None:
        if not self._held:
            self._held = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(future)
        try:
            await future  # resolved by the release that hands the lock to us
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # handed to us as we were cancelled: pass it on
            elif future in self._queue:
                self._queue.remove(future)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        while self._queue:
            future = self._queue.popleft()
            if not future.done():
                future.set_result(None)  # still held: it is theirs now
                return
        self._held = False


class _Watch:
    """One fd: its waiters, and whether the loop's selector is watching it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.watching = False
        self.poll = select.poll()
        self.poll.register(fd, select.POLLIN)

    def want(self) -> None:
        if not self.watching:
            self.loop.add_reader(self.fd, self.readable)
            self.watching = True

    def readable(self) -> None:
        if not self.poll.poll(0):
            return  # stale: what the selector saw was read since
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        if any(lock.queued for lock in _locks):
            return  # a worker is on its way to wait for it
        self.loop.remove_reader(self.fd)  # a request and nobody free: stop until someone is
        self.watching = False

    def close(self, exc: BaseException) -> None:
        if self.watching:
            self.loop.remove_reader(self.fd)
            self.watching = False
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_exception(exc)


_watches: dict[int, _Watch] = {}
#: the read locks pyfuse3 made (one per session)
_locks: list[ReadLock] = []


def _new_lock() -> ReadLock:
    lock = ReadLock()
    _locks[:] = [lock]  # one FUSE session per process: a new one replaces the last
    return lock


async def wait_readable(fd: Any) -> None:
    loop = asyncio.get_running_loop()
    watch = _watches.get(fd)
    if watch is None or watch.loop is not loop:
        watch = _watches[fd] = _Watch(loop, fd)
    if not watch.waiters and watch.poll.poll(0):
        # a request is there already: no future, no readiness report. Still one loop turn:
        # what the last request queued (the first steps of its SFTP request tasks, which
        # send them) must run before the next request is handled, or a READ could leave
        # ahead of the WRITE before it
        await asyncio.sleep(0)
        if watch.poll.poll(0):
            return
    future: asyncio.Future[None] = loop.create_future()
    watch.waiters.append(future)
    watch.want()
    try:
        await future
    except asyncio.CancelledError:
        if future in watch.waiters:
            watch.waiters.remove(future)
        raise


def notify_closing(fd: Any) -> None:
    watch = _watches.pop(fd, None)
    if watch is not None:
        watch.close(shim.ClosedResourceError())


def install() -> None:
    """Serve pyfuse3's asyncio mode (after ``pyfuse3.asyncio.enable()``) with these."""
    shim.wait_readable = wait_readable
    shim.notify_closing = notify_closing
    shim.Lock = _new_lock  # type: ignore[assignment]  # pyfuse3 calls trio.Lock()
