"""WriteOrder: what a request that looks at files must wait for, mount-wide.

sshvfs answers a FUSE WRITE before the server has the data (write-behind), so the kernel
believes a write once its reply is out: it grows its idea of the file's size, and from then
on it takes any READ answered short as the end of the file (``fuse_short_read`` shrinks
``i_size``, guarded only against READs built before the write ended) and any attributes
as the truth. A request that reports content or sizes must therefore see every write
already answered, on any handle of the mount:

- **Same SFTP channel** (reads, fstat, stat, lstat, SFTP listings, truncates): the server
  handles one channel's requests in order, so it is enough that each earlier WRITE request
  was *sent* first. A WRITE's task sends its request in its first step, but a request
  started by a FUSE handler that runs before that step (a worker already queued on the loop
  when the write was handed over) would overtake it: it was the cause of the appender /
  reader corruption (a short READ answered from before an acknowledged write moved the
  kernel's end of file back, and the next O_APPEND write landed there).
  :meth:`sent_before` waits until every write issued before the call has been sent: in
  practice one turn of the loop, since those tasks are already queued.
- **Another channel** (the exec channel's ``find``): nothing orders it with the SFTP channel,
  so :meth:`done_before` waits until every earlier write is answered by the server.

Both wait only for writes issued before the call, never for later ones, so a steady writer
cannot starve a reader, and never for a write the kernel has not handed over yet (which
could be waiting for a page lock a READ in progress holds).
"""

from __future__ import annotations

import asyncio


class WriteOrder:
    """Tickets of writes answered ahead of the server; every method runs on the loop."""

    def __init__(self) -> None:
        self._next = 0
        self._unsent: set[int] = set()
        self._undone: set[int] = set()
        self._waiters: list[tuple[set[int], int, asyncio.Future[None]]] = []

    def issue(self) -> int:
        """A write request is about to be created; its ticket."""
        ticket = self._next
        self._next += 1
        self._unsent.add(ticket)
        self._undone.add(ticket)
        return ticket

    def sent(self, ticket: int) -> None:
        """The request of ``ticket`` is on the channel (call it right before sending it:
        nothing else runs between that and the send, which does not wait)."""
        self._unsent.discard(ticket)
        self._wake()

    def done(self, ticket: int) -> None:
        """The request of ``ticket`` is answered, failed, or will never be sent."""
        self._unsent.discard(ticket)
        self._undone.discard(ticket)
        self._wake()

    async def sent_before(self) -> None:
        """Wait until every write issued before this call has been sent."""
        await self._wait(self._unsent)

    async def done_before(self) -> None:
        """Wait until every write issued before this call has been answered."""
        await self._wait(self._undone)

    async def _wait(self, tickets: set[int]) -> None:
        if not tickets:
            return  # the common case: a set test, nothing else
        target = self._next
        if min(tickets) >= target:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((tickets, target, future))
        await future

    def _wake(self) -> None:
        if not self._waiters:
            return
        waiting = []
        for tickets, target, future in self._waiters:
            if future.done():
                continue  # its waiter was cancelled
            if not tickets or min(tickets) >= target:
                future.set_result(None)
            else:
                waiting.append((tickets, target, future))
        self._waiters = waiting
