"""Directory streams: the listing snapshots READDIR hands out, and the kernel's copy of them.

A directory is read one of two ways:

- **handles** (``-o cache=no``, or a kernel/pyfuse3 that cannot do the other): OPENDIR returns
  a handle, the handle owns one snapshot, RELEASEDIR drops it. Every ``ls`` costs OPENDIR,
  two READDIRs and RELEASEDIR, and the kernel keeps nothing.
- **kernel-cached** (the default with caching on): OPENDIR answers ENOSYS once; from then on
  the kernel opens directories by itself (no OPENDIR/RELEASEDIR ever again) with
  FOPEN_CACHE_DIR, and keeps what READDIR returned in the directory's page cache. A warm
  ``find`` then never leaves the kernel. The kernel drops that copy when the directory is
  changed through the mount, when its mtime changes, and when we invalidate the inode: we do
  that ourselves once the copy is as old as our own listing TTL (:meth:`DirStreams.due`), and on
  every ``.sshvfs/invalidate``. Without a handle, READDIR is told the directory's inode (a
  small pyfuse3 patch, see ``scripts/pyfuse3``), and the snapshot a reader is walking rides in
  the upper 32 bits of every offset cookie, so two readers of one directory never mix theirs.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..tasks import Spawn, spawn_detached
from ..vfs.types import Entry, listing_progress
from .inodes import Node

log = logging.getLogger(__name__)

#: abandoned snapshots kept at most (a reader that stops early never says so)
MAX_STREAMS = 1024
_INDEX_BITS = 32
_INDEX_MASK = (1 << _INDEX_BITS) - 1
#: serials stay below 2**31 so that every cookie fits a signed 64-bit off_t
_SERIAL_LIMIT = 1 << 31


@dataclass
class DirHandle:
    """One reader's view of a directory: the snapshot it walks (fetched in its first READDIR)
    and the directory's change count when it was taken.

    The snapshot is handed out while it still arrives: a huge listing comes in batches
    (see :data:`~sshvfs.vfs.types.listing_progress`), and the kernel (and ``ls``) work on
    the first ones while the rest is fetched and parsed."""

    ino: int
    entries: list[Entry | None] | None = None
    gen: int = 0
    serial: int = 0
    #: set once the last entry was handed out; the next READDIR (EOF) ends the stream
    done: bool = field(default=False)
    #: names in ``entries`` while the listing still arrives; None once it is complete
    arriving: set[bytes] | None = None
    #: why the listing ended early (raised once the entries before it are handed out)
    error: OSError | None = None
    #: index -> node made ahead of the READDIR that hands it out, holding one lookup
    #: until then (see DirServer._prepare)
    ready: dict[int, Node] = field(default_factory=dict)
    #: ended or evicted: nothing more is prepared for it
    dropped: bool = False
    #: how many times entries were prepared for this stream
    prepared_round: int = 0
    _more: asyncio.Event | None = None

    async def fill(
        self, fetch: Callable[[], Awaitable[list[Entry]]], spawn: Spawn = spawn_detached
    ) -> None:
        """Start fetching the snapshot (a task of ``spawn``'s); return once its first
        entries (or all) are there. An error before any entry is raised here."""
        self.entries, self.arriving, self.error = [], set(), None
        self.done = False
        self._more = asyncio.Event()
        spawn(self._fill(fetch), "directory listing")
        while self.arriving is not None and not self.entries:
            await self.wait()
        if self.error is not None and not self.entries:
            raise self.error

    def use(self, entries: list[Entry]) -> None:
        """Take a listing that is all there already (distinct names)."""
        self.entries, self.arriving, self.error = list(entries), None, None
        self.done = False

    async def wait(self) -> None:
        """Until more entries arrived or the listing is complete."""
        assert self._more is not None
        await self._more.wait()

    def _add(self, batch: list[Entry]) -> None:
        names, entries = self.arriving, self.entries
        if names is None or entries is None:
            return
        for entry in batch:
            if entry.name not in names:  # a retry or a fallback lists them again
                names.add(entry.name)
                entries.append(entry)
        self._wake()

    async def _fill(self, fetch: Callable[[], Awaitable[list[Entry]]]) -> None:
        listing_progress.set(self._add)  # this task's own context
        try:
            self._add(await fetch())  # what no batch brought (all of it, from most listers)
        except OSError as exc:
            self.error = exc
        except Exception:
            log.exception("listing a directory failed")
            self.error = OSError(errno.EIO, os.strerror(errno.EIO))
        finally:
            self.arriving = None
            self._wake()

    def _wake(self) -> None:
        event, self._more = self._more, asyncio.Event()
        if event is not None:
            event.set()


def cookie(serial: int, index: int) -> int:
    """The READDIR offset of the entry after ``index`` in snapshot ``serial``."""
    return (serial << _INDEX_BITS) | (index + 1)


def split_cookie(offset: int) -> tuple[int, int]:
    """(serial, index of the next entry) for a READDIR offset."""
    return offset >> _INDEX_BITS, offset & _INDEX_MASK


class DirStreams:
    """Handle-less directory streams and the age of each listing the kernel holds."""

    def __init__(
        self,
        kernel_ttl: float,
        clock: Callable[[], float] | None = None,
        on_drop: Callable[[DirHandle], None] | None = None,
    ) -> None:
        self.kernel_ttl = kernel_ttl
        self._clock = clock or time.monotonic
        #: called with every stream that ends or is evicted
        self._on_drop = on_drop
        self._streams: OrderedDict[int, DirHandle] = OrderedDict()
        self._serial = 0
        #: directory inode -> when the kernel started caching its listing (oldest first)
        self._held: OrderedDict[int, float] = OrderedDict()

    def start(self, ino: int) -> DirHandle:
        """A reader starts at offset 0: a fresh snapshot, and the kernel's copy is new."""
        self._serial = self._serial % (_SERIAL_LIMIT - 1) + 1
        handle = DirHandle(ino, serial=self._serial)
        self._streams[handle.serial] = handle
        while len(self._streams) > MAX_STREAMS:
            self._dropped(self._streams.popitem(last=False)[1])
        self._held.pop(ino, None)
        self._held[ino] = self._clock()
        return handle

    def resume(self, ino: int, offset: int) -> tuple[DirHandle, int]:
        """The stream an offset continues, and the index to continue at. A stream evicted
        meanwhile starts over from a new snapshot at the same index (best effort)."""
        serial, index = split_cookie(offset)
        handle = self._streams.get(serial)
        if handle is None or handle.ino != ino:
            handle = self.start(ino)
        return handle, index

    def end(self, handle: DirHandle) -> None:
        if self._streams.pop(handle.serial, None) is not None:
            self._dropped(handle)

    def _dropped(self, handle: DirHandle) -> None:
        if self._on_drop is not None:
            self._on_drop(handle)

    def forget(self, ino: int) -> None:
        self._held.pop(ino, None)

    def due(self) -> list[int]:
        """Directories whose kernel-held listing has reached the TTL (and are now dropped
        from the books: the caller invalidates them)."""
        limit = self._clock() - self.kernel_ttl
        out = []
        while self._held:
            ino, since = next(iter(self._held.items()))
            if since > limit:
                break
            self._held.popitem(last=False)
            out.append(ino)
        return out

    def next_due(self) -> float | None:
        """Seconds until the oldest kernel-held listing is due (None: none held)."""
        if not self._held:
            return None
        since = next(iter(self._held.values()))
        return max(0.0, since + self.kernel_ttl - self._clock())

    def __len__(self) -> int:
        return len(self._streams)
