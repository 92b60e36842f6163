"""CachedFile: an open file of a :class:`~sshvfs.vfs.cache.cached.CachingVFS`.

Its writes and setattrs mark the file's cached attributes stale, an ``fstat`` before any
write installs what it learnt, and a close after writes fetches the truth once, unless the
caches know it already. A handle that created or truncated its file keeps the one record of
what its changes made of it (:mod:`sshvfs.vfs.cache.owned`): the stat answers while it is
open, and the truth at close when its times were set after its last write (what tar,
cp -p and rsync do before close).
"""

from __future__ import annotations

import stat as _stat
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from ..types import Attrs, VFSFile
from .owned import Owned

if TYPE_CHECKING:
    from .cached import CachingVFS

T = TypeVar("T")

#: the mode bits a server may drop as it sees fit: never predicted
_SET_ID = _stat.S_ISUID | _stat.S_ISGID


class CachedFile:
    """An open file whose writes keep the caches honest."""

    def __init__(self, vfs: CachingVFS, inner: VFSFile, changes: bool = False) -> None:
        self._vfs = vfs
        self._inner = inner
        self._written = False
        #: opened with O_CREAT or O_TRUNC: what it holds is this handle's doing
        self._changes = changes
        #: the cache's generation of the path when opened: what fstat learns is the
        #: path's only while it is unchanged (a rename over it or an unlink leaves this
        #: handle on another file)
        self._opened_gen = vfs._generation(inner.path)

    @property
    def path(self) -> bytes:
        return self._inner.path

    @property
    def closing_attrs(self) -> Attrs | None:
        """The file's attributes as the backend's handle closed it, if it says."""
        closing: Attrs | None = getattr(self._inner, "closing_attrs", None)
        return closing

    def _touch(self, update: Callable[[Owned], bool] | None = None) -> None:
        """A change of ours: the caches drop the path; its tracked record (if this handle
        keeps it) survives moved by ``update``, or ends (no ``update``, or it says False)."""
        self._written = True
        path = self._inner.path
        vfs = self._vfs
        owned = vfs.owned.pop(path)
        vfs._mark(path)
        if owned is not None and owned.file is self and update is not None and update(owned):
            vfs.owned.put(path, owned)

    async def _sent(self, change: Awaitable[T]) -> T:
        """Send a change the tracked record was already moved for: if it fails, what the
        server holds is unknown, and the record ends."""
        try:
            return await change
        except BaseException:
            self._vfs.owned.pop(self._inner.path)
            raise

    def orphan(self) -> None:
        self._inner.orphan()

    def size_hint(self, size: int) -> None:
        self._inner.size_hint(size)

    async def read(self, offset: int, size: int) -> bytes:
        self._vfs.owned.pop(self._inner.path)  # a read may move the atime on the server
        return await self._inner.read(offset, size)

    async def write(self, offset: int, data: bytes) -> int:
        end = offset + len(data)
        now = time.time_ns()
        step = self._vfs.time_resolution_ns

        def wrote(owned: Owned) -> bool:
            # the kernel must never be shown a size below what it wrote (an O_APPEND
            # writer's offset is its own idea of the size): the size moves before the send
            owned.attrs = owned.attrs._replace(
                size=max(owned.attrs.size, end), mtime_ns=now - now % step
            )
            owned.mtime_exact = False  # the server's clock sets the real one
            return True

        self._touch(wrote)
        return await self._sent(self._inner.write(offset, data))

    async def truncate(self, size: int) -> None:
        self._touch()  # the mtime moves on the server: asked for later
        await self._inner.truncate(size)

    async def fstat(self) -> Attrs:
        attrs = await self._inner.fstat()
        path = self._inner.path
        vfs = self._vfs
        if not self._written and vfs._generation(path) == self._opened_gen:
            # e.g. right after a create: the truth, learnt for free
            vfs._learn(path, attrs)
            if self._changes and attrs.nlink == 1 and _stat.S_ISREG(attrs.mode):
                vfs.owned.start(path, self, attrs)
        return attrs

    async def setstat(self, mode: int | None = None, times: tuple[int, int] | None = None) -> None:
        seconds = self._vfs._seconds  # times as the server stores them

        def changed(owned: Owned) -> bool:
            attrs = owned.attrs
            if mode is not None:
                if mode & _SET_ID:
                    return False  # the server may drop these bits as it sees fit
                attrs = attrs._replace(mode=_stat.S_IFMT(attrs.mode) | mode)
            if times is not None:
                attrs = attrs._replace(atime_ns=seconds(times[0]), mtime_ns=seconds(times[1]))
                owned.mtime_exact = True
            owned.attrs = attrs
            return True

        self._touch(changed)  # what the caches hold is no longer the server's truth
        await self._sent(self._inner.setstat(mode, times))

    async def flush(self) -> None:
        await self._inner.flush()

    async def fsync(self) -> None:
        await self._inner.fsync()

    async def close(self) -> None:
        path, vfs = self._inner.path, self._vfs
        owned = vfs.owned.get(path)
        mine = owned if owned is not None and owned.file is self else None
        if mine is not None:
            vfs.owned.pop(path)  # no longer this handle's alone to know
        unchanged = vfs._generation(path)
        try:
            await self._inner.close()
        except BaseException:
            mine = None
            raise
        finally:
            if mine is not None and mine.mtime_exact and vfs._generation(path) == unchanged:
                # every change since the first fstat was this handle's and succeeded (or
                # close would have failed), and its times are exact: the server holds this
                vfs._mark(path)
                vfs._learn(path, mine.attrs)
            elif self._written and vfs._generation(path) == unchanged and vfs._known(path) is None:
                # every write drops the cached attributes; still known means they were
                # fetched after the last write. (Not from what the handle said as it
                # closed: by then its path may name another file, or none.) Asked for a
                # moment later: an editor's save renames its temporary file at once
                vfs.learn_soon(path)
