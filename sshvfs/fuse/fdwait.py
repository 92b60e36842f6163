"""FdWait: pyfuse3's wait for /dev/fuse, without two epoll_ctl calls per request.

pyfuse3's asyncio shim registers the FUSE fd with the loop's selector before every request
and unregisters it after (``add_reader``/``remove_reader``: two epoll_ctl syscalls and a
selector key, handle and closure each time), ~8% of the daemon's CPU in an untar. Here the
fd stays registered while anyone may want it:

- a readiness report wakes the one waiting worker (pyfuse3 lets one worker at a time wait,
  under its read lock), after a zero-timeout ``poll`` confirms a request is really there:
  the report may be stale (the worker woken for it has read it since the selector looked),
  and a worker woken for nothing would block the whole loop in ``read(2)`` of a blocking fd;
- a report with a request waiting and nobody to take it (every worker busy) unregisters the
  fd, or the level-triggered selector would spin; the next waiter registers it again.
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


async def wait_readable(fd: Any) -> None:
    loop = asyncio.get_running_loop()
    watch = _watches.get(fd)
    if watch is None or watch.loop is not loop:
        watch = _watches[fd] = _Watch(loop, fd)
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
