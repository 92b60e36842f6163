"""SetAttrs: the setattr family of :class:`~sshvfs.vfs.cache.cached.CachingVFS` (chmod,
chown, truncate, utimens). A change to a file the mount is writing rides that handle's
pipeline (:mod:`.owned`); a change that succeeds on attributes the caches knew is learned
without asking again (what was set is what the server stores); anything else asks the
server once, right behind the change when the backend can (its ``*_known`` setattrs: in the
same round trip), else after it. A file written through the mount is asked for once it
is closed, shortly after, unless its name changed meanwhile (:meth:`SetAttrs.learn_soon`).
"""

from __future__ import annotations

import asyncio
import stat as _stat
from typing import TYPE_CHECKING

from ..types import VFS, Attrs

if TYPE_CHECKING:
    from ...tasks import Spawn
    from .owned import OwnedFiles

#: mode bits a server may drop as it sees fit
_SET_ID = _stat.S_ISUID | _stat.S_ISGID
#: seconds after a written file's close before its attributes are asked for: an editor's
#: save renames its temporary file within a millisecond of closing it, and then no one
#: can use what that name was
LEARN_DELAY = 0.05


class SetAttrs:
    """Mixed into CachingVFS, whose caches it reads and updates."""

    if TYPE_CHECKING:  # what CachingVFS provides
        inner: VFS
        owned: OwnedFiles
        _linked: set[bytes]
        made_by: int | None
        _spawn: Spawn

        def _cached_attrs(self, path: bytes) -> Attrs | None | object: ...
        def _generation(self, key: bytes) -> tuple[int, int]: ...
        def _mark(self, path: bytes) -> None: ...
        def _learn(self, path: bytes, attrs: Attrs) -> Attrs: ...
        async def lstat(self, path: bytes) -> Attrs: ...

    async def _changed(self, path: bytes) -> None:
        """After a setattr: fetch the truth once so every cache holds it."""
        self._mark(path)
        await self._refetch(path, self._generation(path))

    def learn_soon(self, path: bytes) -> None:
        """A file written through the mount was closed: its attributes (dropped by the
        writes) are asked for in LEARN_DELAY, so that the next stat is answered here,
        unless the name changes through the mount meanwhile (renamed, removed, written
        again: its generation moves) or they are known by then."""
        gen = self._generation(path)
        asyncio.get_running_loop().call_later(LEARN_DELAY, self._learn_if_same, path, gen)

    def _learn_if_same(self, path: bytes, gen: tuple[int, int]) -> None:
        if self._generation(path) == gen and self._known(path) is None:
            self._spawn(self._refetch(path, gen), "attributes after a close")

    async def _refetch(self, path: bytes, gen: tuple[int, int]) -> None:
        """Ask the server for ``path``'s attributes; learn them unless the path changed
        (renamed, removed, changed again) since ``gen``."""
        try:
            attrs = await self.inner.lstat(path)
        except OSError:
            return
        if gen == self._generation(path):
            self._learn(path, attrs)

    def _known(self, path: bytes) -> Attrs | None:
        cached = self._cached_attrs(path)
        return cached if isinstance(cached, Attrs) else None

    async def _set(
        self, path: bytes, name: str, args: tuple[int, ...], changes: dict[str, int] | None
    ) -> None:
        """Run the backend's setattr ``name`` (chmod, chown, utimens) on ``path`` with
        ``args``. When it succeeds and we knew the attributes, we now know the new ones
        too: ``changes`` to them (what we set is what the server stores), no round trip to
        ask again. Otherwise (``changes`` None: the server decides) the attributes come in
        the same round trip when the backend can say (its ``name_known``), else are asked
        for once after."""
        before = self._known(path)
        gen = self._generation(path)
        sure = before is not None and changes is not None and path not in self._linked
        asking = None if sure else getattr(self.inner, name + "_known", None)
        said = None
        try:
            if asking is not None:
                said = await asking(path, *args)
            else:
                await getattr(self.inner, name)(path, *args)
        except BaseException:
            await self._changed(path)
            raise
        if gen != self._generation(path) or not (sure or said is not None):
            await self._changed(path)
            return
        self._mark(path)
        if said is not None:
            self._learn(path, said)
        elif before is not None and changes is not None:
            self._learn(path, before._replace(**changes))

    @property
    def time_resolution_ns(self) -> int:
        """How finely the backend stores times (SFTP v3: whole seconds)."""
        step: int = getattr(self.inner, "time_resolution_ns", 1)
        return step

    def _seconds(self, ns: int) -> int:
        """A time as the backend stores it."""
        return ns - ns % self.time_resolution_ns

    async def chmod(self, path: bytes, mode: int) -> None:
        owned = self.owned.get(path)
        if owned is not None:
            if owned.attrs.mode & 0o7777 == mode & 0o7777:
                return  # already so: nothing to send
            if not mode & _SET_ID:
                # rides the handle's pipeline: in order after its writes, a refusal raised
                # by the next write, flush or close
                await owned.file.setstat(mode & 0o7777, None)
                return
            self.owned.pop(path)  # the server may drop set-id bits as it sees fit: ask
        before = self._known(path)
        changes = None  # a link's mode is whatever the server makes of it: ask
        if before is not None and not _stat.S_ISLNK(before.mode):
            changes = {"mode": _stat.S_IFMT(before.mode) | (mode & 0o7777)}
        await self._set(path, "chmod", (mode,), changes)

    async def chown(self, path: bytes, uid: int, gid: int) -> None:
        owned = self.owned.get(path)
        if owned is not None:
            a = owned.attrs
            wanted = (a.uid if uid < 0 else uid, a.gid if gid < 0 else gid)
            if wanted == (a.uid, a.gid) and not a.mode & _SET_ID:
                return  # already so (tar, cp -a): nothing to send
            self.owned.pop(path)  # a real chown can fail, and may clear set-id bits
        before = self._known(path)
        if (
            before is not None
            and before.uid == self.made_by
            and (uid < 0 or uid == before.uid)
            and (gid < 0 or gid == before.gid)
            and not before.mode & _SET_ID
        ):
            # already so, and owned by whom the mount acts as (what it makes is theirs),
            # so the server would not refuse: it would only move the ctime (tar, cp -a
            # and rsync -a give every directory its owner back)
            return
        changes = None
        if before is not None:
            changes = {"uid": before.uid if uid < 0 else uid, "gid": before.gid if gid < 0 else gid}
        await self._set(path, "chown", (uid, gid), changes)

    async def truncate(self, path: bytes, size: int) -> None:
        # the mtime moves on the server: ask once
        self.owned.pop(path)
        try:
            await self.inner.truncate(path, size)
        finally:
            await self._changed(path)

    async def utimens(self, path: bytes, atime_ns: int | None, mtime_ns: int | None) -> None:
        owned = self.owned.get(path)
        if owned is not None:
            # a time left as it is: the atime tracked is exact (writes leave it, a read
            # ends the tracking); the mtime only while no write came after it was known
            if atime_ns is None:
                atime_ns = owned.attrs.atime_ns
            if mtime_ns is None and owned.mtime_exact:
                mtime_ns = owned.attrs.mtime_ns
            if mtime_ns is not None:
                await owned.file.setstat(None, (atime_ns, mtime_ns))  # rides the pipeline
                return
            self.owned.pop(path)
        if atime_ns is None or mtime_ns is None:
            # the other time as the caches know it, else as the server says (after every
            # write sent before); what the cache holds is the server's, never an estimate
            current = await self.lstat(path)
            atime_ns = current.atime_ns if atime_ns is None else atime_ns
            mtime_ns = current.mtime_ns if mtime_ns is None else mtime_ns
        changes = {"atime_ns": self._seconds(atime_ns), "mtime_ns": self._seconds(mtime_ns)}
        await self._set(path, "utimens", (atime_ns, mtime_ns), changes)
