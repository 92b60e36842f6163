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
  waiter registers it again;
- **back-to-back requests are polled for, not slept for**: a walk (``find``, ``ls -R``) sends
  its next request 20-150 µs after our reply; sleeping in the selector until then costs a
  context switch, a wake-up, a readiness report and a task step each time (a third of the
  daemon's CPU on a cold ``find``). So a worker back from a request that followed the one
  before it within :data:`SPIN` polls the fd (and the loop's selector) for up to that long
  first: only once the loop has run what is queued, only while no other worker is serving a
  request (one waiting for the server leaves the CPU to the server's side: on two cores a
  poller slowed a streamed ``ls -l`` by 15%), ending as soon as any other fd of the loop
  has I/O (SSH traffic is never delayed by it), and not again until requests come back to
  back again. Measured on a cold ``find`` of 420 directories whose listings the daemon
  holds: 0.16 -> 0.126 s. A caught request is taken at once: nothing is queued.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import select
import time
from typing import Any

import pyfuse3.asyncio as shim

log = logging.getLogger(__name__)

#: seconds a worker back from a request polls for the next one before it sleeps
SPIN = 200e-6


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
        #: the last request came within SPIN of the reply before it: poll for the next one
        self.quick = False
        #: when a worker last came back from a request
        self.back = 0.0
        #: workers handling a request (one may be waiting for the server)
        self.busy: set[asyncio.Task[Any] | None] = set()
        #: the loop's callbacks ready to run and its selector's fd: a loop without them
        #: (not a selector loop) never spins
        self._ready: collections.abc.Sized | None = getattr(loop, "_ready", None)
        selector = getattr(loop, "_selector", None)
        self._spin_poll: select.poll | None = None
        if self._ready is not None and selector is not None:
            self._spin_poll = select.poll()
            self._spin_poll.register(fd, select.POLLIN)
            self._spin_poll.register(selector.fileno(), select.POLLIN)

    def want(self) -> None:
        if not self.watching:
            self.loop.add_reader(self.fd, self.readable)
            self.watching = True

    def readable(self) -> None:
        if self.woken or not self.poll.poll(0):
            return  # stale: what the selector saw was read since, or is about to be
        self.quick = time.perf_counter() - self.back < SPIN
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(None)
                self.woken += 1
                return
        self.loop.remove_reader(self.fd)  # a request and nobody free: stop until someone is
        self.watching = False

    def serving(self) -> bool:
        """Is any worker handling a request? (A worker may end instead of coming back.)"""
        if self.busy:
            self.busy = {task for task in self.busy if task is not None and not task.done()}
        return bool(self.busy)

    async def spin(self) -> bool:
        """True once a request is there for this worker to read (none woken for it, nothing
        queued in the loop), polling up to SPIN for it; False at once when requests have not
        been coming back to back or any other fd of the loop has I/O to handle."""
        if not self.quick or self._spin_poll is None or self.serving():
            return False  # a request waiting for the server: its CPU is better left to it
        if self._ready:
            await asyncio.sleep(0)  # what the last request queued runs first
            if self._ready or self.woken or self.serving():
                return False
        poll, fd = self._spin_poll.poll, self.fd
        end = time.perf_counter() + SPIN
        while True:
            ready = poll(0)
            if ready:
                return not self.woken and any(ready_fd == fd for ready_fd, _ in ready)
            if time.perf_counter() >= end:
                self.quick = False
                return False

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
    me = asyncio.current_task()
    watch.busy.discard(me)
    watch.back = time.perf_counter()
    if not watch.woken and watch.poll.poll(0):
        # a request is there already: no future, no readiness report; claimed, so that no
        # report wakes another worker for it. Still one loop turn: what the last request
        # queued (the first steps of its SFTP request tasks, which send them) must run
        # before the next request is handled, or a READ could leave ahead of the WRITE
        # before it
        watch.woken += 1
        try:
            await asyncio.sleep(0)
        finally:
            watch.woken -= 1
        if watch.poll.poll(0):
            watch.busy.add(me)
            return
    elif not watch.woken and await watch.spin():
        watch.busy.add(me)
        return  # polled for, with nothing left queued in the loop
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
    watch.busy.add(me)


def notify_closing(fd: Any) -> None:
    watch = _watches.pop(fd, None)
    if watch is not None:
        watch.close(shim.ClosedResourceError())


def install() -> None:
    """Serve pyfuse3's asyncio mode (after ``pyfuse3.asyncio.enable()``) with these."""
    shim.wait_readable = wait_readable
    shim.notify_closing = notify_closing
    shim.Lock = _NoLock  # type: ignore[assignment]  # pyfuse3 calls trio.Lock()
