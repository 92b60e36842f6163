"""TreePrefetcher: fills a :class:`~sshvfs.vfs.cache.cached.CachingVFS` with a whole subtree's
listings from one backend call (``tree``).

Two ways in: :meth:`TreePrefetcher.prefetch`, asked for a path (the control directory), and
walks (find, ls -R, du) that a :class:`~sshvfs.vfs.cache.walks.WalkDetector` spots among the
listings the cache misses, whose root is then prefetched in the background. A listing
missed under a prefetch in flight waits for it (:meth:`TreePrefetcher.wait_for`) rather
than asking the backend too: a streaming backend hands out each directory as soon as it
is complete. A directory changed through the mount while the tree was fetched keeps what
the cache has (generations, as for every fetch the cache makes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

from ...tasks import Spawn, spawn_detached
from ..types import Entry, split, tree_progress, within
from .walks import WalkDetector

if TYPE_CHECKING:
    from .cached import CachingVFS, Listing, Timer

log = logging.getLogger(__name__)

#: how long a listing waits for a tree prefetch that covers it before listing by itself
PREFETCH_WAIT = 10.0
#: how long a lookup waits for it before asking the server: one LSTAT is all it would
#: spare, and a walk spotted from lookups may have a root too high (a huge tree, streamed
#: in find's order)
LOOKUP_WAIT = 1.0


class TreePrefetcher:
    """The tree prefetches of one ``cache``; ``detect_walks`` turns walk detection on."""

    def __init__(
        self, cache: CachingVFS, timer: Timer, *, detect_walks: bool, spawn: Spawn = spawn_detached
    ) -> None:
        self._cache = cache
        self._spawn = spawn
        self._timer = timer
        #: spots find/ls -R/du walks and prefetches their tree in one backend call
        self._walk = WalkDetector() if detect_walks else None
        #: lookups the cache missed, per directory (see lookup_missed)
        self._lookup_misses: dict[bytes, int] = {}
        #: directories a lookup waited LOOKUP_WAIT for in vain, until the prefetches end
        self._waited_out: set[bytes] = set()
        self._prefetching: dict[bytes, asyncio.Event] = {}
        #: set (and replaced) whenever a prefetch hands out a directory or ends
        self._landed = asyncio.Event()
        #: tree prefetches started, walks' and asked-for ones alike
        self.prefetches = 0
        #: the roots of recent prefetches, with when each started (content prefetch reads it)
        self.roots: dict[bytes, float] = {}

    def root_of(self, path: bytes, within_seconds: float) -> bytes | None:
        """The deepest root prefetched in the last ``within_seconds`` that holds ``path``."""
        now = self._timer()
        best = None
        for root, started in list(self.roots.items()):
            if now - started > within_seconds:
                del self.roots[root]
            elif within(path, root) and (best is None or len(root) > len(best)):
                best = root
        return best

    @property
    def prefetching(self) -> dict[bytes, asyncio.Event]:
        """The roots being prefetched, each with an event set when its prefetch ends."""
        return self._prefetching

    async def wait_for(self, path: bytes) -> list[Entry] | None:
        """For a listing of ``path`` the cache missed: feed the walk detector (a walk starts
        a background prefetch of its root), then, if a prefetch in flight covers ``path``,
        wait for it. The listing it landed, or None: list ``path`` by yourself."""
        if self._walk is None:
            return None
        self._listed(path, self._timer())
        listing = await self._landing(path)
        return list(listing.entries.values()) if listing is not None else None

    async def lookup_missed(self, directory: bytes) -> bool:
        """A lookup in ``directory`` the cache could not answer. A directory with a second
        such lookup counts as listed for the walk detector (git status lstat-ing what its
        index names, a build stat-ing its sources: a walk that lists nothing); one lookup
        alone is a path passing through, which would make the walk's root too high. If a
        prefetch covers ``directory``, wait for it. True when its listing is now cached."""
        if self._walk is None:
            return False
        misses = self._lookup_misses.get(directory, 0) + 1
        if len(self._lookup_misses) >= 4096:
            self._lookup_misses.clear()
        self._lookup_misses[directory] = misses
        if misses == 2:
            now = self._timer()
            parent = split(directory)[0]
            if directory != b"/" and parent in self._lookup_misses:
                # the lookup that reached this directory was one in its parent: the walk
                # may have begun there (git status looks in .git before the worktree)
                self._walk.listed(parent, now)
            self._listed(directory, now)
        if directory in self._waited_out:
            return False  # it waited once for this prefetch: the rest ask the server
        if await self._landing(directory, LOOKUP_WAIT) is not None:
            return True
        if self._covering_prefetch(directory) is not None:
            self._waited_out.add(directory)
        return False

    async def _landing(self, path: bytes, limit: float = PREFETCH_WAIT) -> Listing | None:
        """``path``'s listing once a prefetch in flight that covers it landed it (the
        prefetch hands out each directory as soon as it is complete); None when no
        prefetch covers it, or it ended or ``limit`` seconds passed without it."""
        covering = self._covering_prefetch(path)
        if covering is None:
            return None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while not covering.is_set() and self._cache.cached_listing(path) is None:
                    await self._landed.wait()
        return self._cache.cached_listing(path)

    def walk_reads(self, root: bytes, within_seconds: float) -> bool:
        """A walk reads files under ``root`` without listing them (git status lstat-ing
        and hashing what its index names): prefetch its tree in the background, unless a
        prefetch covering it is in flight or landed in the last ``within_seconds``. Its
        listings then answer the walk's lookups, missing names included. Off where walk
        detection is. True if one started."""
        if self._walk is None or self._covering_prefetch(root) is not None:
            return False
        if self.root_of(root, within_seconds) is not None:
            return False
        self._start(root)
        return True

    def _listed(self, path: bytes, now: float) -> None:
        """Tell the walk detector ``path`` was listed; prefetch the root of a walk it spots."""
        assert self._walk is not None
        root = self._walk.listed(path, now)
        if root is not None and root not in self._prefetching:
            self._start(root)

    def _start(self, root: bytes) -> None:
        self._prefetching[root] = asyncio.Event()
        self._spawn(self._background_prefetch(root), "tree prefetch")

    def _covering_prefetch(self, path: bytes) -> asyncio.Event | None:
        for root, event in self._prefetching.items():
            if within(path, root):
                return event
        return None

    async def _background_prefetch(self, root: bytes) -> None:
        event = self._prefetching[root]
        try:
            count = await self._prefetch_tree(root)
            log.debug("walk detected under %s: prefetched %d entries", os.fsdecode(root), count)
        except Exception as exc:  # a failed prefetch only means listing one by one
            log.debug("prefetch of %s failed: %s", os.fsdecode(root), exc)
        finally:
            del self._prefetching[root]
            event.set()
            self._land()

    async def prefetch(self, path: bytes) -> int:
        """Fetch a whole subtree's listings in one backend call; the number of entries
        cached, or -1 when the backend cannot (no exec channel) or the tree is too big."""
        event = self._prefetching.setdefault(path, asyncio.Event())
        try:
            return await self._prefetch_tree(path)
        finally:
            if self._prefetching.get(path) is event:
                del self._prefetching[path]
            event.set()
            self._land()

    def _land(self) -> None:
        """Wake the listings waiting for a prefetch: something landed, or it ended."""
        if not self._prefetching:
            self._waited_out.clear()
        event, self._landed = self._landed, asyncio.Event()
        event.set()

    async def _prefetch_tree(self, path: bytes) -> int:
        self.prefetches += 1
        if len(self.roots) > 1000:
            self.roots.clear()
        asked = self.roots[path] = self._timer()
        cache = self._cache
        # a directory changed through the mount meanwhile keeps what it has
        unchanged = cache.generation_snapshot()
        streamed: dict[bytes, Listing | None] = {}

        def landed(directory: bytes, entries: list[Entry] | None) -> None:
            if entries is None:  # not complete after all
                cache.withdraw_listing(directory, streamed.pop(directory, None))
                return
            if unchanged(directory):
                cache.install_listing(directory, entries, asked=asked)
                streamed[directory] = cache.cached_listing(directory)
                self._land()

        listings: dict[bytes, list[Entry]] | None = None
        token = tree_progress.set(landed)
        try:
            listings = await cache.inner.tree(path, cache.prefetch_max_entries)
        finally:
            tree_progress.reset(token)
            if listings is None:  # what was handed out early is not vouched for: take it back
                for directory in list(streamed):
                    landed(directory, None)
        if listings is None:
            return -1
        count = 0
        for directory, entries in listings.items():
            if not unchanged(directory):
                continue
            handed = streamed.get(directory)
            if handed is None or cache.cached_listing(directory) is not handed:
                # not handed out early, or evicted since: install it now (a directory handed
                # out early is complete and still cached as it was: installing it again
                # would only redo the work)
                cache.install_listing(directory, entries, asked=asked)
            count += len(entries)
        return count
