"""CachedFile: an open file of a :class:`~sshvfs.vfs.cache.cached.CachingVFS`.

Its writes and setattrs mark the file's cached attributes stale, an ``fstat`` before any
write installs what it learnt, and a close after writes fetches the truth once, unless the
handle knows it already: a file created through it whose times were set after its last write
(what tar, cp -p and rsync do before close) holds exactly what the handle says.
"""

from __future__ import annotations

import stat as _stat
from typing import TYPE_CHECKING

from ..types import Attrs, VFSFile

if TYPE_CHECKING:
    from .cached import CachingVFS


class CachedFile:
    """An open file whose writes keep the caches honest."""

    def __init__(self, vfs: CachingVFS, inner: VFSFile) -> None:
        self._vfs = vfs
        self._inner = inner
        self._written = False
        #: the server's attributes as this handle's own changes leave them, while that is all
        #: that changed them (see :meth:`close`); None once unknown
        self._shadow: Attrs | None = None
        #: the shadow's mtime is one we set, after the last write (the server's clock set
        #: every other)
        self._times_set = False
        #: the cache's generation of the path after our last change
        self._gen: tuple[int, int] | None = None
        #: ... and when opened: what fstat learns is the path's only while it is unchanged
        #: (a rename over it or an unlink leaves this handle on another file)
        self._opened_gen = vfs._generation(inner.path)

    @property
    def path(self) -> bytes:
        return self._inner.path

    def _touch(self, shadow: Attrs | None = None) -> None:
        self._written = True
        self._shadow = shadow
        path = self._inner.path
        self._vfs._mark(path)
        self._gen = self._vfs._generation(path)

    def orphan(self) -> None:
        self._inner.orphan()

    def size_hint(self, size: int) -> None:
        self._inner.size_hint(size)

    async def read(self, offset: int, size: int) -> bytes:
        self._shadow = None  # a read may move the atime on the server
        return await self._inner.read(offset, size)

    async def write(self, offset: int, data: bytes) -> int:
        shadow = self._shadow
        if shadow is not None:
            shadow = shadow._replace(size=max(shadow.size, offset + len(data)))
        self._times_set = False
        self._touch(shadow)
        return await self._inner.write(offset, data)

    async def truncate(self, size: int) -> None:
        self._touch()
        await self._inner.truncate(size)

    async def fstat(self) -> Attrs:
        attrs = await self._inner.fstat()
        path = self._inner.path
        if not self._written and self._vfs._generation(path) == self._opened_gen:
            # e.g. right after a create: the truth, learnt for free
            self._vfs._learn(path, attrs)
            if attrs.nlink == 1 and _stat.S_ISREG(attrs.mode):
                self._shadow, self._gen = attrs, self._vfs._generation(path)
        return attrs

    async def setstat(self, mode: int | None = None, times: tuple[int, int] | None = None) -> None:
        shadow = self._shadow
        if shadow is not None and mode is not None:
            if mode & (_stat.S_ISUID | _stat.S_ISGID):
                shadow = None  # the server may drop these bits as it sees fit
            else:
                shadow = shadow._replace(mode=_stat.S_IFMT(shadow.mode) | mode)
        if shadow is not None and times is not None:
            seconds = self._vfs._seconds  # as the server stores them
            shadow = shadow._replace(atime_ns=seconds(times[0]), mtime_ns=seconds(times[1]))
            self._times_set = True
        self._touch(shadow)  # what the cache holds is no longer the server's truth
        await self._inner.setstat(mode, times)

    async def flush(self) -> None:
        await self._inner.flush()

    async def fsync(self) -> None:
        await self._inner.fsync()

    async def close(self) -> None:
        path = self._inner.path
        try:
            await self._inner.close()
        except BaseException:
            self._shadow = None
            raise
        finally:
            shadow, vfs = self._shadow, self._vfs
            if shadow is not None and self._times_set and vfs._generation(path) == self._gen:
                # every change since the create was ours and succeeded (or close would have
                # failed), the last of them set the times: the server holds the shadow
                vfs._mark(path)
                vfs._learn(path, shadow)
            elif self._written and vfs._known(path) is None:
                # every write drops the cached attributes; still known means they were
                # fetched after the last write
                await vfs._changed(path)
