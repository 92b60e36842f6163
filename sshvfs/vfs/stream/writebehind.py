"""WriteBehind: one open file's writes, acknowledged by the server after we answer the kernel.

Lives on the asyncio side. :meth:`WriteBehind.write` returns as soon as the data is *sent*
(its WRITE requests are on the channel), not when the server acknowledges it:

- **Order.** A write's requests are issued as tasks created in order on the asyncio loop,
  and a task's first step (which sends its request without awaiting anything) runs in
  creation order, so requests leave in the order the writes arrived. The server handles one
  channel's requests in order, so any later request on the same SFTP session (a read, an
  fstat, a truncate, a stat) sees every earlier write, provided its own task is created
  after the write's request tasks: a write handed over without waiting must use
  :meth:`start` (a plain callback), never a coroutine, or a request queued behind it could
  leave first. :meth:`barrier` waits until every write that arrived before it was sent.
- **Bounds.** Bytes sent and not yet acknowledged are bounded per handle (``limit``) and per
  mount (a shared :class:`ByteBudget`); a write past either bound waits, in arrival order.
- **Errors.** The first failure is kept for good (sticky): it is raised by every later
  :meth:`write` and :meth:`drain` (flush, fsync, close), so it is never dropped.
- **Other requests** that change the file (a SETSTAT of its mode or times) may ride the same
  pipeline with :meth:`request`: sent after every earlier write, waited for by
  :meth:`drain`, their failure kept like a write's.
- **Accounting.** :attr:`settled` counts every byte handed to :meth:`write` that is
  finished with (acknowledged, failed, or refused). It only grows and only the writer
  updates it, so the caller can compare it with what it handed over, without a lock (also
  from another thread), to know whether anything is still outstanding.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from collections.abc import Awaitable, Callable

from ...tasks import retrieve
from .budget import ByteBudget

log = logging.getLogger(__name__)

#: ``send(offset, data)``: one WRITE request; raises OSError on failure
Send = Callable[[int, memoryview], Awaitable[object]]
#: ``on_settled(nbytes, ok)``: bytes done with, acknowledged (ok) or not
Settled = Callable[[int, bool], None]


class WriteBehind:
    """Writes of one handle; every method runs on the asyncio loop."""

    def __init__(
        self,
        send: Send,
        block: int,
        limit: int,
        budget: ByteBudget | None = None,
        on_settled: Settled | None = None,
    ) -> None:
        if block <= 0:
            raise ValueError("block must be positive")
        self._send = send
        self.block = block
        self._own = ByteBudget(max(limit, block))
        self._budget = budget
        self._on_settled = on_settled
        self._pending = 0
        self._idle: asyncio.Future[None] | None = None
        self._lock: asyncio.Lock | None = None
        self.error: OSError | None = None
        #: bytes acknowledged by the server
        self.acked = 0
        #: bytes finished with: acknowledged, failed, or refused (see the module doc)
        self.settled = 0

    @property
    def in_flight(self) -> int:
        """Bytes sent and not yet acknowledged."""
        return self._own.used

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def write(self, offset: int, data: bytes) -> int:
        """Send ``data`` at ``offset``; raise the first error of any earlier write."""
        size = len(data)
        sent = False
        try:
            if self.error is not None:
                raise self.error
            if not size:
                return 0
            async with self._get_lock():  # a write's requests go out together, in order
                await self._own.acquire(size)
                if self._budget is not None:
                    try:
                        await self._budget.acquire(size)
                    except BaseException:
                        self._own.release(size)
                        raise
                if self.error is not None:  # failed while we waited
                    self._give_back(size)
                    raise self.error
                self._issue(offset, data)
                sent = True
            return size
        finally:
            if not sent and size:
                self._settle(size, False)  # refused: these bytes will never be sent

    def start(self, offset: int, data: bytes) -> None:
        """Send ``data`` now, from a plain loop callback, without waiting for room: for a
        caller that knows there is room (see the module doc). Its requests are created
        before any callback queued after this one runs, so nothing sent later overtakes
        them. An error (earlier or later) is kept for the next :meth:`write` or
        :meth:`drain`."""
        size = len(data)
        if not size:
            return
        if self.error is not None:
            self._settle(size, False)
            return
        if self._lock is not None and self._lock.locked():
            # a waiting write holds the order: queue behind it (callers avoid this case)
            future = asyncio.ensure_future(self.write(offset, data))
            future.add_done_callback(retrieve)  # kept in WriteBehind.error
            return
        self._own.force(size)
        if self._budget is not None:
            self._budget.force(size)
        self._issue(offset, data)

    def _issue(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        for pos in range(0, len(data), self.block):
            chunk = view[pos : pos + self.block]
            task = asyncio.ensure_future(self._send(offset + pos, chunk))
            self._pending += 1
            task.add_done_callback(functools.partial(self._done, len(chunk)))

    async def barrier(self) -> None:
        """Wait until every write that arrived before this call has been sent."""
        if self._lock is not None and self._lock.locked():
            async with self._lock:  # asyncio locks are first come, first served
                pass

    async def request(self, send: Callable[[], Awaitable[object]]) -> None:
        """Send one more request after every write that arrived before this call, and return
        once it is sent: :meth:`drain` waits for its answer and a failure is kept as
        :attr:`error`, exactly as for a write (it carries no bytes)."""
        if self.error is not None:
            raise self.error
        await self.barrier()
        task = asyncio.ensure_future(send())
        self._pending += 1
        task.add_done_callback(functools.partial(self._done, 0))

    @property
    def busy(self) -> bool:
        """Anything sent and not yet answered (writes or other requests)."""
        return self._pending > 0

    def _give_back(self, n: int) -> None:
        self._own.release(n)
        if self._budget is not None:
            self._budget.release(n)

    def _settle(self, n: int, ok: bool) -> None:
        if ok:
            self.acked += n
        self.settled += n
        if self._on_settled is not None:
            self._on_settled(n, ok)

    def _done(self, n: int, task: asyncio.Task[object]) -> None:
        self._pending -= 1
        self._give_back(n)
        exc: BaseException | None
        if task.cancelled():
            exc = OSError(errno.EIO, "write cancelled")
        else:
            exc = task.exception()
        if exc is not None and self.error is None:
            if not isinstance(exc, OSError):
                log.error("write failed unexpectedly", exc_info=exc)
                exc = OSError(errno.EIO, f"write failed: {exc}")
            self.error = exc  # set before settling: see the module doc
            log.debug("write-behind error kept for the next call: %s", exc)
        self._settle(n, exc is None)
        if self._pending == 0 and self._idle is not None:
            if not self._idle.done():
                self._idle.set_result(None)
            self._idle = None

    async def wait_idle(self) -> None:
        """Wait until every write sent so far is acknowledged (errors are not raised)."""
        await self.barrier()
        while self._pending:
            if self._idle is None:
                self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle)

    async def drain(self) -> None:
        """Wait for every write so far; raise the first error any write met."""
        await self.wait_idle()
        if self.error is not None:
            raise self.error
