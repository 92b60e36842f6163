"""FollowSymlinksVFS: sshfs's ``follow_symlinks``, as a layer around any VFS.

Every symlink is shown as what it points to (a followed ``stat`` instead of ``lstat``, in
lookups and listings alike); a dangling or looping link stays a link. Opening, listing and
reading through a followed link need nothing more: the server follows links in a path.
Everything else passes through unchanged.
"""

from __future__ import annotations

import asyncio
import logging

from .types import (
    VFS,
    Attrs,
    Entry,
    FileType,
    StatFs,
    VFSFile,
    join,
    listing_progress,
    tree_progress,
)

log = logging.getLogger(__name__)

#: stats in flight while following the links of one listing
CONCURRENCY = 16


class FollowSymlinksVFS:
    def __init__(self, inner: VFS) -> None:
        self.inner = inner

    @property
    def time_resolution_ns(self) -> int:
        step: int = getattr(self.inner, "time_resolution_ns", 1)
        return step

    async def _follow(self, path: bytes, attrs: Attrs) -> Attrs:
        if attrs.type is not FileType.SYMLINK:
            return attrs
        try:
            return await self.inner.stat(path)
        except OSError:  # dangling, looping or forbidden: show the link itself
            return attrs

    async def _follow_all(self, directory: bytes, entries: list[Entry]) -> list[Entry]:
        links = [i for i, e in enumerate(entries) if e.attrs.type is FileType.SYMLINK]
        if not links:
            return entries
        out = list(entries)
        limiter = asyncio.Semaphore(CONCURRENCY)

        async def one(index: int) -> None:
            async with limiter:
                entry = out[index]
                followed = await self._follow(join(directory, entry.name), entry.attrs)
                out[index] = Entry(entry.name, followed)

        async with asyncio.TaskGroup() as group:
            for index in links:
                group.create_task(one(index))
        return out

    async def lstat(self, path: bytes) -> Attrs:
        return await self._follow(path, await self.inner.lstat(path))

    async def stat(self, path: bytes) -> Attrs:
        return await self.inner.stat(path)

    async def readdir(self, path: bytes) -> list[Entry]:
        hidden = listing_progress.set(None)  # what comes up from below is not followed yet
        try:
            entries = await self.inner.readdir(path)
        finally:
            listing_progress.reset(hidden)
        return await self._follow_all(path, entries)

    async def tree(self, path: bytes, max_entries: int) -> dict[bytes, list[Entry]] | None:
        hidden = tree_progress.set(None)  # what comes up from below is not followed yet
        try:
            listings = await self.inner.tree(path, max_entries)
        finally:
            tree_progress.reset(hidden)
        if listings is None:
            return None
        return {d: await self._follow_all(d, entries) for d, entries in listings.items()}

    async def readlink(self, path: bytes) -> bytes:
        return await self.inner.readlink(path)

    async def open(self, path: bytes, flags: int, mode: int = 0o644) -> VFSFile:
        return await self.inner.open(path, flags, mode)

    async def mkdir(self, path: bytes, mode: int = 0o755) -> None:
        await self.inner.mkdir(path, mode)

    async def rmdir(self, path: bytes) -> None:
        await self.inner.rmdir(path)

    async def unlink(self, path: bytes) -> None:
        await self.inner.unlink(path)

    async def rename(self, old: bytes, new: bytes) -> None:
        await self.inner.rename(old, new)

    async def symlink(self, target: bytes, path: bytes) -> None:
        await self.inner.symlink(target, path)

    async def link(self, existing: bytes, new: bytes) -> None:
        await self.inner.link(existing, new)

    async def chmod(self, path: bytes, mode: int) -> None:
        await self.inner.chmod(path, mode)

    async def chown(self, path: bytes, uid: int, gid: int) -> None:
        await self.inner.chown(path, uid, gid)

    async def truncate(self, path: bytes, size: int) -> None:
        await self.inner.truncate(path, size)

    async def utimens(self, path: bytes, atime_ns: int | None, mtime_ns: int | None) -> None:
        await self.inner.utimens(path, atime_ns, mtime_ns)

    async def statfs(self, path: bytes) -> StatFs:
        return await self.inner.statfs(path)

    async def close(self) -> None:
        await self.inner.close()


if __debug__:  # static conformance: FollowSymlinksVFS is a VFS

    def _conforms(v: FollowSymlinksVFS) -> VFS:
        return v
