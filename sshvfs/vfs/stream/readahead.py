"""ReadAhead: one open file's reads, with a prefetch pipeline on sequential access.

Lives on the mount's loop: :meth:`ReadAhead.read` is awaited inside the handler of a FUSE
read, so a read served from prefetched data costs no extra round trip.

- **Sequential detection.** A read that starts where the previous one ended (or inside the
  data already asked for) is sequential. The first such read starts a *run*; every further
  hit grows the prefetch window (doubling, up to ``max_window`` bytes past the end of the
  read). Anything else is a miss: it is fetched exactly as asked, in parallel pieces of at
  most ``block`` bytes, and never prefetches. Two misses in a row end the run.
- **Segments.** A run is a contiguous queue of segments of ``block`` bytes (the server's
  largest READ), each one task. Needed segments are always issued; prefetch segments only
  while the mount's :class:`ByteBudget` has room, so memory stays bounded per mount.
  Segments behind the reader are dropped as it moves on.
- **No short reads before EOF.** A segment keeps asking until it has ``block`` bytes or the
  server says EOF, so a short answer means end of file. The one exception spares a round
  trip per small file: a short answer that reaches the size the file had when it was opened
  (``eof_hint``, regular files only) is taken as its end, as sshfs does. Data at and
  after an end of file is never kept: the next read there asks the server again (the
  file may have grown).
- **Coherence.** :meth:`invalidate` drops everything prefetched (a write or truncate through
  any handle of the same file calls it).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .budget import ByteBudget

log = logging.getLogger(__name__)

#: ``fetch(offset, size)``: at most ``size`` bytes at ``offset``, ``b""`` at end of file
Fetch = Callable[[int, int], Awaitable[bytes]]


@dataclass
class ReadStats:
    hits: int = 0
    misses: int = 0
    #: segments issued ahead of any read that asked for them
    prefetched: int = 0
    #: READ requests sent, counting follow-ups after short answers
    requests: int = 0


class _Segment:
    __slots__ = ("start", "size", "task", "charged", "dropped", "released")

    def __init__(self, start: int, size: int, task: asyncio.Task[bytes], charged: int) -> None:
        self.start = start
        self.size = size
        self.task = task
        self.charged = charged
        self.dropped = False
        self.released = False

    @property
    def end(self) -> int:
        return self.start + self.size


class ReadAhead:
    """Reads of one handle; every method runs on the asyncio loop."""

    def __init__(
        self,
        fetch: Fetch,
        block: int,
        max_window: int,
        budget: ByteBudget | None = None,
        first_window: int | None = None,
        on_batch: Callable[[], None] | None = None,
        eof_hint: int | None = None,
    ) -> None:
        if block <= 0:
            raise ValueError("block must be positive")
        self._fetch = fetch
        self.block = block
        self.max_window = max(0, max_window)
        self.first_window = min(self.max_window, first_window or 2 * block)
        self._budget = budget
        #: called after a batch of requests is issued (e.g. to send them as one TCP push)
        self._on_batch = on_batch
        #: a short answer ending at or past this is end of file (no READ to confirm it)
        self.eof_hint = eof_hint if eof_hint else None
        self._segments: collections.deque[_Segment] = collections.deque()
        self._run = False
        #: end of the last segment issued (where the next one starts)
        self._next = 0
        #: bytes to keep asked for past the end of the current read
        self._window = 0
        #: where the previous read ended
        self._last_end = 0
        self._misses = 0
        #: where a read last met end of file; no prefetch is issued past it
        self._eof: int | None = None
        self._closed = False
        self.stats = ReadStats()

    # -- the one public verb ---------------------------------------------------------------

    async def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset``; fewer only at end of file."""
        if size <= 0 or self._closed:
            return b""
        if self._is_hit(offset):
            self.stats.hits += 1
            self._misses = 0
            self._window = (
                self.first_window if self._window == 0 else min(self._window * 2, self.max_window)
            )
        elif offset == self._last_end:
            self._drop_all()  # a new run starts here; the first read prefetches nothing
            self._run = True
            self._next = offset
            self._window = 0
            self._misses = 0
        else:
            self.stats.misses += 1
            self._misses += 1
            if self._misses >= 2 and self._run:
                self._drop_all()
                self._run = False
                self._window = 0
            data = await self._direct(offset, size)
            self._last_end = offset + len(data)
            return data
        end = offset + size
        self._trim(offset)
        issued = self._issue(end, needed=True)
        if self._window:
            issued += self._issue(end + self._window, needed=False)
        if issued and self._on_batch is not None:
            self._on_batch()
        data = await self._collect(offset, end)
        self._last_end = offset + len(data)
        return data

    def start(self, size: int) -> None:
        """Ask for the first ``size`` bytes now, before any read: a small file opened for
        reading is read next, and its READ is then on its way a turn of the kernel and
        the caller earlier. The read that follows is a hit of this run."""
        if self._closed or self._run or self._segments or size <= 0:
            return
        self._run = True
        self._next = self._last_end = 0
        self._window = 0
        self.stats.prefetched += self._issue(size, needed=True)
        if self._on_batch is not None:
            self._on_batch()

    def invalidate(self) -> None:
        """Forget everything prefetched: the file changed."""
        self._drop_all()
        self._next = self._last_end
        self._eof = None

    def close(self) -> None:
        """Drop every segment; reads in flight still finish."""
        self._closed = True
        self._drop_all()

    @property
    def buffered(self) -> int:
        """Bytes asked for and not yet dropped (in flight or waiting for the reader)."""
        return sum(s.size for s in self._segments)

    # -- internals -------------------------------------------------------------------------

    def _is_hit(self, offset: int) -> bool:
        if not self._run:
            return False
        first = self._segments[0].start if self._segments else self._next
        return first <= offset <= self._next

    async def _fill(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes unless the file ends first (a short answer is not EOF)."""
        self.stats.requests += 1
        data = await self._fetch(offset, size)
        if len(data) >= size or not data:
            return data
        hint = self.eof_hint if self.eof_hint is not None else offset + size
        parts = [data]
        got = len(data)
        while got < size and offset + got < hint:
            self.stats.requests += 1
            more = await self._fetch(offset + got, size - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def _issue(self, until: int, needed: bool) -> int:
        """Issue segments up to ``until``; how many."""
        budget = self._budget
        issued = 0
        while self._next < until:
            if not needed:
                if self._eof is not None and self._next >= self._eof:
                    break
                if self.eof_hint is not None and self._next >= self.eof_hint:
                    break  # past the size the file had at open: no speculative READ
                if budget is not None and not budget.try_acquire(self.block):
                    break
                self.stats.prefetched += 1
            elif budget is not None:
                budget.force(self.block)
            start = self._next
            task = asyncio.ensure_future(self._fill(start, self.block))
            segment = _Segment(start, self.block, task, self.block if budget else 0)
            task.add_done_callback(functools.partial(self._settled, segment))
            self._segments.append(segment)
            self._next += self.block
            issued += 1
        return issued

    def _settled(self, segment: _Segment, _task: asyncio.Task[bytes]) -> None:
        if not segment.task.cancelled():
            segment.task.exception()  # retrieved: a dropped segment's error is nobody's
        if segment.dropped:
            self._release(segment)

    def _release(self, segment: _Segment) -> None:
        if not segment.released:
            segment.released = True
            if self._budget is not None and segment.charged:
                self._budget.release(segment.charged)

    def _drop(self, segment: _Segment) -> None:
        segment.dropped = True
        if segment.task.done():
            self._release(segment)
        # a running segment is not cancelled: its reply is on the way and others may be
        # waiting on it; its budget comes back when it lands

    def _drop_all(self) -> None:
        while self._segments:
            self._drop(self._segments.popleft())

    def _trim(self, offset: int) -> None:
        """Drop segments wholly before ``offset``."""
        while self._segments and self._segments[0].end <= offset:
            self._drop(self._segments.popleft())

    def _hit_eof(self, segment: _Segment, data_end: int) -> None:
        """The file ends inside ``segment``: drop it and everything after it."""
        while self._segments and self._segments[-1].start >= segment.start:
            self._drop(self._segments.pop())
        self._next = data_end
        self._eof = data_end

    async def _collect(self, offset: int, end: int) -> bytes:
        parts: list[memoryview] = []
        pos = offset
        for segment in list(self._segments):
            if segment.end <= pos:
                continue
            if segment.start > pos:
                break  # a gap: dropped under us by invalidate(); fetch the rest directly
            task = segment.task
            try:
                # shield: a cancelled reader must not cancel a segment others may share
                data = task.result() if task.done() else await asyncio.shield(task)
            except OSError:
                self._drop_all()
                self._next = self._last_end
                raise
            stop = min(len(data), end - segment.start)
            if stop > pos - segment.start:
                parts.append(memoryview(data)[pos - segment.start : stop])
                pos = segment.start + stop
            if len(data) < segment.size:
                data_end = segment.start + len(data)
                if end > data_end:  # end of file before the end of this read
                    if segment in self._segments:
                        self._hit_eof(segment, data_end)
                    return b"".join(parts)
            elif self._eof is not None and segment.end > self._eof:
                self._eof = None  # the file grew
            if pos >= end:
                return b"".join(parts)
        if pos < end:
            parts.append(memoryview(await self._direct(pos, end - pos)))
        return b"".join(parts)

    async def _direct(self, offset: int, size: int) -> bytes:
        """Exactly what was asked, in parallel pieces of at most one block; no prefetch."""
        if size <= self.block:
            return await self._fill(offset, size)
        starts = range(offset, offset + size, self.block)
        tasks = [
            asyncio.ensure_future(self._fill(s, min(self.block, offset + size - s))) for s in starts
        ]
        if self._on_batch is not None:
            self._on_batch()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        parts: list[bytes] = []
        for start, result in zip(starts, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            parts.append(result)
            if len(result) < min(self.block, offset + size - start):
                break  # end of file
        return b"".join(parts)
