"""NameChanges: the operations of :class:`~sshvfs.vfs.cache.cached.CachingVFS` that make,
remove or move names (mkdir, rmdir, unlink, rename, symlink, link). Each drops exactly what
it makes stale; a backend that can say what a new name is in the same round trip (its
``mkdir_known``, ``rename_known``) spares the lookup that follows. A directory the mount
just made counts as holding only what the mount made there since (MADE_WINDOW).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ..types import VFS, Attrs, split

if TYPE_CHECKING:
    from .owned import OwnedFiles
    from .ttl import TtlCache


class NameChanges:
    """Mixed into CachingVFS, whose caches it reads and updates."""

    if TYPE_CHECKING:  # what CachingVFS provides
        inner: VFS
        owned: OwnedFiles
        made_by: int | None
        _attrs: TtlCache
        _made: TtlCache
        _opened: set[bytes]
        _linked: set[bytes]
        _enabled_neg: bool

        def _generation(self, key: bytes) -> tuple[int, int]: ...
        def _mark(self, path: bytes) -> None: ...
        def _used(self, directory: bytes) -> None: ...
        def _learn(self, path: bytes, attrs: Attrs) -> Attrs: ...
        def _known(self, path: bytes) -> Attrs | None: ...
        def _gone(self, path: bytes, is_dir: bool | None = None) -> None: ...
        def _holds_below(self, path: bytes) -> bool: ...
        def _drop_subtree(self, root: bytes, is_dir: bool | None = None) -> None: ...

    async def _making(self, path: bytes, action: Awaitable[Attrs | None]) -> None:
        """Make the new name ``path`` by ``action``: it and its directory's attributes are
        asked again afterwards, whatever came of it, unless ``action`` says what the new
        name is (the backend's ``mkdir_known``) and nothing changed it here meanwhile."""
        self._mark(path)
        self._used(split(path)[0])
        gen, said = self._generation(path), None
        try:
            said = await action
        finally:
            same = gen == self._generation(path)
            self._mark(path)
            self._attrs.pop(split(path)[0], None)
        if self._holds_below(path):
            self._drop_subtree(path)  # new: whatever was below that name went before
        if said is not None and same:
            self.made_by = self._learn(path, said).uid

    async def mkdir(self, path: bytes, mode: int = 0o755) -> None:
        self._opened.discard(path)
        asking = getattr(self.inner, "mkdir_known", None)  # the new directory in one trip
        await self._making(path, (asking or self.inner.mkdir)(path, mode))
        if self._enabled_neg:
            # It is empty, and whoever made it is about to fill it (tar, cp -r, git
            # checkout): every name in it counts as looked up and missing for a moment, so
            # the lookup before each create needs no round trip. The moment lasts while the
            # mount goes on making things there and MADE_WINDOW after (never beyond the
            # negative cache's own promise); a listing always asks the server.
            self._made[path] = set()

    async def rmdir(self, path: bytes) -> None:
        await self.inner.rmdir(path)
        self._gone(path)

    async def unlink(self, path: bytes) -> None:
        await self.inner.unlink(path)
        self._gone(path, is_dir=False)  # unlink(2) never removes a directory

    async def rename(self, old: bytes, new: bytes) -> None:
        known = self._known(old)
        is_dir = known.is_dir if known is not None else None
        if is_dir is None and old in self._opened:
            # a file just made (its attributes not cached yet): a save's temp file. Saying
            # so spares two subtree drops (and their moves of the epoch: see _drop_subtree)
            is_dir = False
        was_linked = old in self._linked
        owned = self.owned.pop(old)  # its handles name the old path: the tracking ends
        self._mark(new)
        gen = self._generation(new)
        # a file whose attributes are not known (a save's temp file, just written): the
        # backend may say what the new name is in the same round trip
        asking = getattr(self.inner, "rename_known", None) if known is None else None
        try:
            if asking is None:
                await self.inner.rename(old, new)
            elif (said := await asking(old, new)) is not None and gen == self._generation(new):
                known = said
        except BaseException:
            self._mark(new)
            if owned is not None:
                self.owned.put(old, owned)
            raise
        self._gone(old, is_dir)
        self._drop_subtree(new, is_dir)  # only a directory may replace a directory
        self._mark(new)
        self._attrs.pop(split(new)[0], None)
        self._linked.discard(new)
        if was_linked:
            self._linked.add(new)
        if is_dir is False:
            self._opened.add(new)
        if known is not None:
            self._learn(new, known)  # a rename changes the name, not the attributes

    async def symlink(self, target: bytes, path: bytes) -> None:
        await self._making(path, self.inner.symlink(target, path))

    async def link(self, existing: bytes, new: bytes) -> None:
        try:
            await self._making(new, self.inner.link(existing, new))
        finally:
            self._mark(existing)  # its link count changed
            self._linked.update((existing, new))
