"""LookupLister: lookups that miss in a directory list it, so the next ones need no LSTAT.

Owned by a :class:`~sshvfs.vfs.cache.cached.CachingVFS`; :meth:`LookupLister.listed` runs on each
lookup the caches missed, before its LSTAT. What it installs is an ordinary listing, with
the listing cache's TTL and generations (a directory changed through the mount meanwhile
keeps what the cache has). Cost bounds: at most ``MAX_PENDING`` listings at once; without
a link, only directories whose size says they are small.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from ...tasks import Spawn, spawn_detached
from ..types import Attrs

if TYPE_CHECKING:
    from .cached import CachingVFS

#: lookups missed in one directory after which it is listed ...
LOOKUP_MISSES = 3
#: ... if its size says it is small (ext4: about 100 names a 4 KiB block)
LOOKUP_LIST_MAX_SIZE = 64 * 1024
#: listings for lookups in flight at once
MAX_PENDING = 64


class LookupLister:
    def __init__(self, cache: CachingVFS, spawn: Spawn = spawn_detached) -> None:
        self._cache = cache
        self._spawn = spawn
        #: directories being listed for lookups
        self._pending: dict[bytes, asyncio.Task[None]] = {}
        #: lookups missed in each directory not listed
        self._misses: dict[bytes, int] = {}

    async def listed(self, parent: bytes) -> bool:
        """Lookups missed in a directory not listed may list it, alongside their own
        LSTAT; the lookups that follow there wait for that listing and are answered from
        it. True when a listing started so landed. When:

        - across a link (``inner.lists_for_lookups``), at the first miss, by one exec
          command: it is on its way a round trip earlier than the next LSTAT would be (an
          editor's temp file, a save's rename, git status's lstats in index order);
        - anywhere, at the ``LOOKUP_MISSES``-th miss in a directory whose size says it is
          small (``LOOKUP_LIST_MAX_SIZE`` bytes): one listing then answers the rest of a
          lookup walk, instead of an LSTAT each."""
        pending = self._pending.get(parent)
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
            return self._cache.cached_listing(parent) is not None
        cache = self._cache
        if cache.dir_ttl <= 0 or cache.cached_listing(parent) is not None:
            return False
        if len(self._pending) > MAX_PENDING:
            return False  # bounded: a burst of lookups in many directories asks SFTP
        speculate = getattr(cache.inner, "lists_for_lookups", None)
        if speculate is not None and speculate():
            listing = self._list(parent, by_exec=True)
        else:
            misses = self._misses.get(parent, 0) + 1
            if len(self._misses) > 10_000:
                self._misses.clear()
            self._misses[parent] = misses
            known = cache._cached_attrs(parent)
            small = isinstance(known, Attrs) and known.size <= LOOKUP_LIST_MAX_SIZE
            if misses < LOOKUP_MISSES or not small:
                return False
            listing = self._list(parent, by_exec=False)
        cache.stats.lookup_listings += 1
        task = self._spawn(listing, "lookup listing")
        self._pending[parent] = task
        task.add_done_callback(lambda _: self._pending.pop(parent, None))
        return False

    async def _list(self, parent: bytes, by_exec: bool) -> None:
        cache = self._cache
        self._misses.pop(parent, None)
        gen = cache._generation(parent)
        try:
            if by_exec:
                entries = await cache.inner.exec_listing(parent)  # type: ignore[attr-defined]
            else:
                entries = await cache.inner.readdir(parent)
        except OSError:
            return
        if gen == cache._generation(parent):
            # it answers for the names it has; a name it lacks may have been created on
            # the server since, and lookups used to ask the server: they still do
            cache.install_listing(parent, entries, vouches=False)
