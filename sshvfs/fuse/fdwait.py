"""FdWait: pyfuse3's wait for /dev/fuse, without epoll_ctl calls or lock hand-offs per request.

pyfuse3's workers loop: take the read lock, wait until /dev/fuse is readable, release the
lock, read one request, handle it. Its asyncio shim registers the fd with the loop's
selector before every wait and unregisters it after (``add_reader``/``remove_reader``: two
epoll_ctl syscalls and a selector key, handle and closure each time), and the lock passes
from worker to worker through futures and loop turns: with two workers taking turns, every
request paid for both (~15% of the daemon's CPU on a cold ``find``). Here (installed after
``pyfuse3.asyncio.enable()``):

- **no read lock**: every idle worker waits here, and each readiness report wakes exactly
  one, after a zero-timeout ``poll`` confirms a request is really there, and only when no
  worker woken earlier is still to take its request (:attr:`_Watch.woken`): a report may be
  stale (what the selector saw was read since, or is about to be), and a worker woken for
  nothing would block the whole loop in ``read(2)`` of a blocking fd;
- **a request already there is taken in the next loop turn**: a wait first polls the fd, so
  a worker back from a request that others queued meanwhile (FORGETs, a second process)
  needs no readiness report. Never in the same turn: what the last request queued (the
  first steps of its SFTP request tasks, which send them) must run first, or a READ could
  overtake the WRITE before it;
- **the fd stays registered** while anyone may want it; a report with a request waiting and
  every worker busy unregisters it (the level-triggered selector would spin), and the next
  waiter registers it again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import select
from typing import Any

import pyfuse3.asyncio as shim

log = logging.getLogger(__name__)


class _Watch:
    """One fd: its waiters, and whether the loop's selector is watching it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.watching = False
        #: waiters woken for a request that have not taken it yet
        self.woken = 0
        self.poll = select.poll()
        self.poll.register(fd, select.POLLIN)

    def want(self) -> None:
        if not self.watching:
            self.loop.add_reader(self.fd, self.readable)
            self.watching = True

    def readable(self) -> None:
        if self.woken or not self.poll.poll(0):
            return  # stale: what the selector saw was read since, or is about to be
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(None)
                self.woken += 1
                return
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


class _NoLock:
    """pyfuse3's read lock (``trio.Lock()`` in its source), made a no-op: :func:`wait_readable`
    wakes one waiter per request by itself, so workers need not queue for the fd."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def wait_readable(fd: Any) -> None:
    loop = asyncio.get_running_loop()
    watch = _watches.get(fd)
    if watch is None or watch.loop is not loop:
        watch = _watches[fd] = _Watch(loop, fd)
    if not watch.waiters and not watch.woken and watch.poll.poll(0):
        # a request is there already: no future, no readiness report. Still one loop turn:
        # what the last request queued (the first steps of its SFTP request tasks, which
        # send them) must run before the next request is handled, or a READ could leave
        # ahead of the WRITE before it
        await asyncio.sleep(0)
        if not watch.woken and watch.poll.poll(0):
            return
    future: asyncio.Future[None] = loop.create_future()
    watch.waiters.append(future)
    watch.want()
    try:
        await future
    except asyncio.CancelledError:
        if future in watch.waiters:
            watch.waiters.remove(future)
        elif future.done() and not future.cancelled():
            watch.woken -= 1
        raise
    watch.woken -= 1


def notify_closing(fd: Any) -> None:
    watch = _watches.pop(fd, None)
    if watch is not None:
        watch.close(shim.ClosedResourceError())


def install() -> None:
    """Serve pyfuse3's asyncio mode (after ``pyfuse3.asyncio.enable()``) with these."""
    shim.wait_readable = wait_readable
    shim.notify_closing = notify_closing
    shim.Lock = _NoLock  # type: ignore[assignment]  # pyfuse3 calls trio.Lock()
