"""CachedFile: an open file of a :class:`~sshvfs.vfs.cached.CachingVFS`.

Its writes and setattrs mark the file's cached attributes stale, an ``fstat`` before any
write installs what it learnt, and a close after writes fetches the truth once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .types import Attrs, VFSFile

if TYPE_CHECKING:
    from .cached import CachingVFS


class CachedFile:
    """An open file whose writes keep the caches honest."""

    def __init__(self, vfs: CachingVFS, inner: VFSFile) -> None:
        self._vfs = vfs
        self._inner = inner
        self._written = False

    @property
    def path(self) -> bytes:
        return self._inner.path

    def _touch(self) -> None:
        self._written = True
        self._vfs._mark(self._inner.path)

    async def read(self, offset: int, size: int) -> bytes:
        return await self._inner.read(offset, size)

    async def write(self, offset: int, data: bytes) -> int:
        self._touch()
        return await self._inner.write(offset, data)

    async def truncate(self, size: int) -> None:
        self._touch()
        await self._inner.truncate(size)

    async def fstat(self) -> Attrs:
        attrs = await self._inner.fstat()
        if not self._written:  # e.g. right after a create: the truth, learnt for free
            self._vfs._learn(self._inner.path, attrs)
        return attrs

    async def setstat(self, mode: int | None = None, times: tuple[int, int] | None = None) -> None:
        self._touch()  # what the cache holds is no longer the server's truth
        await self._inner.setstat(mode, times)

    async def flush(self) -> None:
        await self._inner.flush()

    async def fsync(self) -> None:
        await self._inner.fsync()

    async def close(self) -> None:
        try:
            await self._inner.close()
        finally:
            # every write drops the cached attributes; still known means they were fetched
            # after the last write (e.g. by the fchown/futimens an untar does before close)
            if self._written and self._vfs._known(self._inner.path) is None:
                await self._vfs._changed(self._inner.path)
