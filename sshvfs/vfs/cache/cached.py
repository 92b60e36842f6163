"""CachingVFS: attribute, listing and negative-lookup TTL caches around any VFS.

Verbs (as in rclone's vfs): ``invalidate`` drops what we know of a subtree (or everything)
and tells any listeners (the mount drops the kernel's copy itself, awaiting it, so that a
``touch .sshvfs/invalidate`` is complete when it returns); mutations made through this
object update or drop exactly the entries they affect, so the mount never shows a stale
view of its own operations:

- a listing answers every ``lstat`` of its entries and every lookup of a missing name;
- an entry whose attributes changed (write, truncate, chmod, utimens, rename target...) is
  marked *dirty* in its parent's cached listing and re-fetched before that listing is served;
- fetches that race with a change of what they fetch are not installed (generations).

Everything here runs on the mount's asyncio loop; a hit never leaves this module. Open
files are :mod:`.cachedfile`; prefetching a walked tree in one backend call is
:mod:`.treeprefetch`; chmod, chown, truncate and utimens are :mod:`.setattrs`; mkdir,
rmdir, unlink, rename, symlink and link are :mod:`.namechanges`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat as _stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ...errors import fs_error
from ...tasks import Spawn, spawn_detached
from ..types import VFS, Attrs, Entry, StatFs, VFSFile, join, split
from .cachedfile import CachedFile
from .contents import ContentPrefetcher
from .lookuplist import LookupLister
from .namechanges import NameChanges
from .owned import OwnedFiles
from .remotechanges import RemoteChanges
from .setattrs import SetAttrs
from .treeprefetch import TreePrefetcher
from .ttl import TtlCache

Timer = Callable[[], float]
Listener = Callable[[bytes | None], None]

#: how many dirty entries of one listing are re-fetched at once
REFRESH_PARALLEL = 16
#: seconds a directory this mount made is taken as holding only what the mount made there,
#: counted from the last thing made there
MADE_WINDOW = 2.0


@dataclass
class Listing:
    entries: dict[bytes, Entry]
    #: names whose attributes changed since the listing was fetched
    dirty: set[bytes] = field(default_factory=set)
    #: whether a name it lacks is missing (False: a listing made for lookups, which
    #: answers for the names it has and lets the server answer for the others)
    vouches: bool = True
    #: when it was asked of the server (the cache's timer)
    asked: float = 0.0


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    lookup_listings: int = 0


_MISSING = object()  # negative-cache marker


class CachingVFS(SetAttrs, NameChanges):
    """Wraps ``inner``; same Protocol. ``ttl``s in seconds; ``timer`` is injectable."""

    def __init__(
        self,
        inner: VFS,
        *,
        attr_ttl: float = 30.0,
        dir_ttl: float = 30.0,
        negative_ttl: float | None = None,
        max_entries: int = 1_000_000,
        timer: Timer = time.monotonic,
        prefetch_max_entries: int = 200_000,
        walk_prefetch: bool = True,
        spawn: Spawn = spawn_detached,
    ) -> None:
        self.inner = inner
        self._timer = timer
        self._spawn = spawn
        self.attr_ttl = attr_ttl
        self.dir_ttl = dir_ttl
        neg_ttl = attr_ttl if negative_ttl is None else negative_ttl
        size = max(1, max_entries)
        self._attrs: TtlCache = TtlCache(size, max(attr_ttl, 1e-9), timer)
        self._neg: TtlCache = TtlCache(max(1, size // 10), max(neg_ttl, 1e-9), timer)
        self._links: TtlCache = TtlCache(max(1, size // 10), max(attr_ttl, 1e-9), timer)
        self._dirs: TtlCache = TtlCache(
            size, max(dir_ttl, 1e-9), timer, getsizeof=lambda v: len(v.entries) + 1
        )
        #: the owner the server gives what the mount makes (None: nothing made yet)
        self.made_by: int | None = None
        #: directories this mount just made (empty then), each with the names made in it
        #: since; kept while the mount goes on making things there, MADE_WINDOW at most after
        self._made: TtlCache = TtlCache(
            max(1, size // 100), max(min(neg_ttl, MADE_WINDOW), 1e-9), timer
        )
        self._enabled_attr = attr_ttl > 0
        self._enabled_dir = dir_ttl > 0
        self._enabled_neg = neg_ttl > 0
        self._gen: dict[bytes, int] = {}
        self._epoch = 0
        self.stats = CacheStats()
        self.listeners: list[Listener] = []
        self.prefetch_max_entries = prefetch_max_entries
        self._prefetcher = TreePrefetcher(
            self, timer, detect_walks=walk_prefetch and dir_ttl > 0, spawn=spawn
        )
        #: regular files with more than one name: a write through one name changes what
        #: the others show, so their attributes are always asked for
        self._linked: set[bytes] = set()
        #: small files' contents, fetched in bulk under prefetched trees
        self.contents = ContentPrefetcher(self, timer, attr_ttl, spawn=spawn)
        #: paths opened as files (never directories) since they last went away
        self._opened: set[bytes] = set()
        #: files whose attributes the mount's own changes decide (see .owned)
        self.owned = OwnedFiles()
        #: directories listed because lookups missed there
        self._lookup_lister = LookupLister(self, spawn)
        #: changes made on the server, as a remote watcher reports them
        self.remote = RemoteChanges(self, timer)
        #: called with each directory the mount fetches something of (a watcher's scope),
        #: and the time (``timer``'s) that was asked for when before now (else None)
        self.on_use: Callable[[bytes, float | None], None] | None = None
        #: whether a watcher vouches that nothing changed in a directory unseen: None (no
        #: watcher asked for) trusts listings and negative entries for their TTL; else a
        #: name missing from them is missing only where this says so, and asked otherwise;
        #: it is told the directory and when the listing or the miss was asked (``timer``)
        self.vouch: Callable[[bytes, float], bool] | None = None

    # -- bookkeeping -----------------------------------------------------------------

    def _generation(self, key: bytes) -> tuple[int, int]:
        """A fetch of ``key`` (a path's attributes, or a directory's listing) may install
        what it got only if this is unchanged from when it started."""
        return (self._epoch, self._gen.get(key, 0))

    def generation_snapshot(self) -> Callable[[bytes], bool]:
        """For a fetch of many keys at once (a tree): a test of whether a key is unchanged
        since this call, i.e. whether what the fetch got for it may be installed."""
        epoch, before = self._epoch, dict(self._gen)

        def unchanged(key: bytes) -> bool:
            return epoch == self._epoch and self._gen.get(key, 0) == before.get(key, 0)

        return unchanged

    def _bump(self, key: bytes) -> None:
        self._gen[key] = self._gen.get(key, 0) + 1
        if len(self._gen) > 100_000:  # only equality matters; old counters can go
            self._gen.clear()
            self._epoch += 1

    def _learn(self, path: bytes, attrs: Attrs) -> Attrs:
        """Install fresh attributes everywhere they are cached; return them. An SFTP answer
        (no ctime, no inode number) that agrees with a listing's on everything else keeps
        the listing's: only a chmod/chown (seen) or an xattr change moves a ctime alone, so
        the file's ctime does not step back to its mtime when its attributes are refreshed."""
        parent, name = split(path)
        listing = self._dirs.get(parent) if path != b"/" else None
        old = listing.entries.get(name) if listing is not None else None
        if not attrs.ino:
            known = self._attrs.get(path) or (old.attrs if old is not None else None)
            if known is not None and known.ino and known[:6] == attrs[:6]:
                attrs = attrs._replace(ctime_ns=known.ctime_ns, ino=known.ino)
        self._note_links(path, attrs)
        if self._enabled_attr:
            self._attrs[path] = attrs
        self._neg.pop(path, None)
        if listing is not None:
            listing.entries[name] = Entry(name, attrs, old.target if old else None)
            listing.dirty.discard(name)
        return attrs

    def _mark(self, path: bytes) -> None:
        """Attributes of ``path`` changed through the mount (or it may now exist): re-fetch
        before trusting."""
        self.remote.own(path)
        self._stale(path)

    def _stale(self, path: bytes) -> None:
        """Attributes of ``path`` changed (or it may now exist): re-fetch before trusting."""
        self.owned.pop(path)
        self.contents.copies.drop(path)
        self._attrs.pop(path, None)
        self._neg.pop(path, None)
        self._links.pop(path, None)
        if path == b"/":
            return
        parent, name = split(path)
        self._bump(path)  # its attributes
        self._bump(parent)  # its directory's listing
        listing = self._dirs.get(parent)
        if listing is not None:
            listing.dirty.add(name)
        made = self._made.get(parent)
        if made is not None:
            made.add(name)  # may exist now: ask
            self._made[parent] = made  # still being filled: keep the moment going

    def _gone(self, path: bytes, is_dir: bool | None = None) -> None:
        """``path`` no longer exists (unlink, rmdir, rename source)."""
        self.remote.own(path, gone=True)
        self._opened.discard(path)
        if path in self._dirs:
            self._epoch += 1  # fetches below a directory that is gone: none may land
        self._drop_subtree(path, is_dir)
        self._linked.discard(path)
        parent, name = split(path)
        self._bump(path)
        self._bump(parent)
        self._attrs.pop(parent, None)  # its mtime and nlink changed
        listing = self._dirs.get(parent)
        if listing is not None:
            listing.entries.pop(name, None)
            listing.dirty.discard(name)
        if self._enabled_neg:
            self._neg[path] = self._timer()

    def _used(self, directory: bytes) -> None:
        """The mount changes something in ``directory``: keep (or start) watching it, as
        for a lookup that asks the server (what the mount makes there is cached)."""
        if self.on_use is not None:
            self.on_use(directory, None)

    def _holds_below(self, path: bytes) -> bool:
        """May a cache hold anything below ``path``?"""
        stores = (self._attrs, self._neg, self._links, self._dirs, self._made)
        return any(store.children(path) for store in stores)

    def _drop_subtree(self, root: bytes, is_dir: bool | None = None) -> None:
        """Forget ``root`` and everything below it. ``is_dir=False`` (a file: nothing below
        it) spares the walk of the caches' path indexes and the epoch's move, which would keep
        every fetch in flight from landing (an ``rm`` of many files would repeat both)."""
        if is_dir is False and root not in self._dirs:
            self.owned.pop(root)
            self.contents.copies.drop(root)
            for cache in (self._attrs, self._neg, self._links):
                cache.pop(root, None)
            if root in self._gen:
                self._gen[root] += 1
            return
        self.owned.drop_subtree(root)
        self.contents.copies.drop_subtree(root)
        for cache in (self._attrs, self._neg, self._links, self._dirs, self._made):
            cache.pop_below(root)
            cache.pop(root, None)
        # fetches in flight below it (keys no cache holds yet): none may land. Every
        # fetch's, in fact: finding only those would take a look at every counter
        self._epoch += 1

    def invalidate(self, path: bytes | None = None) -> None:
        """Drop everything (``None``) or one subtree, and tell the listeners."""
        if path is None or path == b"/":
            self.owned.clear()
            self.contents.copies.clear()
            for cache in (self._attrs, self._neg, self._links, self._dirs, self._made):
                cache.clear()
            self._gen.clear()
            self._epoch += 1
            path = None
        else:
            self._drop_subtree(path)
            # fetches in flight started before this: none of them may install what it got
            self._epoch += 1
            parent, name = split(path)
            listing = self._dirs.get(parent)
            if listing is not None:
                listing.dirty.add(name)
        for listener in list(self.listeners):
            listener(path)

    def counts(self) -> dict[str, int]:
        listed = int(self._dirs.currsize) - len(self._dirs)
        return {
            "attr_entries": len(self._attrs),
            "dir_listings": len(self._dirs),
            "listed_entries": listed,
            "negative_entries": len(self._neg),
            "entries": len(self._attrs) + listed + len(self._neg),
            "hits": self.stats.hits,
            "misses": self.stats.misses,
            "evictions": self._attrs.evictions + self._dirs.evictions + self._neg.evictions,
            "lookup_listings": self.stats.lookup_listings,
            **self.contents.counts(),
        }

    # -- reads -----------------------------------------------------------------------

    def _note_links(self, path: bytes, attrs: Attrs) -> None:
        if attrs.nlink > 1 and _stat.S_ISREG(attrs.mode):
            if len(self._linked) > 100_000:
                self._linked.clear()
            self._linked.add(path)

    def missing_for(self, path: bytes) -> float:
        """For how long a lookup of ``path`` is answered "missing" from the caches (the
        answering entry's time left); 0.0: it is not."""
        why: list[tuple[TtlCache, bytes]] = []
        if self._cached_attrs(path, why) is not _MISSING:
            return 0.0
        store, key = why[0]
        return store.expires_in(key)

    def _cached_attrs(
        self, path: bytes, why: list[tuple[TtlCache, bytes]] | None = None
    ) -> Attrs | None | object:
        """Attributes, _MISSING or None (ask); ``why`` gets what answered _MISSING."""
        if path in self._linked:
            return None
        parent = name = b""
        if path != b"/":
            parent, name = split(path)
            listing: Listing | None = self._dirs.get(parent)
            if listing is not None and name not in listing.dirty:
                entry = listing.entries.get(name)
                # a listing is authoritative for its names within its TTL
                if entry is not None:
                    return entry.attrs
                if listing.vouches and (self.vouch is None or self.vouch(parent, listing.asked)):
                    if why is not None:
                        why.append((self._dirs, parent))
                    return _MISSING
        attrs: Attrs | None = self._attrs.get(path)
        if attrs is not None:
            return attrs
        missing: float | None = self._neg.get(path)
        if missing is not None and (self.vouch is None or self.vouch(parent, missing)):
            if why is not None:
                why.append((self._neg, path))
            return _MISSING
        if parent:
            made = self._made.get(parent)
            if made is not None and name not in made:
                if why is not None:
                    why.append((self._made, parent))
                return _MISSING  # in a directory we made, and not made there since
        return None

    async def lstat(self, path: bytes) -> Attrs:
        owned = self.owned.get(path)
        if owned is not None:
            self.stats.hits += 1
            return owned.attrs
        cached = self._cached_attrs(path)
        if cached is _MISSING:
            self.stats.hits += 1
            raise fs_error(errno.ENOENT, path)
        if isinstance(cached, Attrs):
            self.stats.hits += 1
            return cached
        self.stats.misses += 1
        parent = split(path)[0]
        self._used(parent)
        if path != b"/" and (
            await self._prefetcher.lookup_missed(parent) or await self._lookup_lister.listed(parent)
        ):
            cached = self._cached_attrs(path)
            if cached is _MISSING:
                raise fs_error(errno.ENOENT, path)
            if isinstance(cached, Attrs):
                return cached
        gen = self._generation(path)
        asked = self._timer()
        try:
            attrs = await self.inner.lstat(path)
        except FileNotFoundError:
            if self._enabled_neg and gen == self._generation(path):
                self._neg[path] = asked
                parent, name = split(path)
                listing = self._dirs.get(parent)
                if listing is not None:
                    listing.entries.pop(name, None)
                    listing.dirty.discard(name)
            raise
        if gen == self._generation(path):
            attrs = self._learn(path, attrs)
        return attrs

    async def stat(self, path: bytes) -> Attrs:
        return await self.inner.stat(path)

    async def readdir(self, path: bytes) -> list[Entry]:
        listing = self._dirs.get(path) if self._enabled_dir else None
        if listing is not None:
            self.stats.hits += 1
            if listing.dirty:
                await self._refresh_dirty(path, listing)
            return list(listing.entries.values())
        self.stats.misses += 1
        if self.on_use is not None:
            self.on_use(path, None)
        landed = await self._prefetcher.wait_for(path)  # a walk's tree prefetch may have it
        if landed is not None:
            return landed
        gen = self._generation(path)
        asked = self._timer()
        entries = await self.inner.readdir(path)
        if gen == self._generation(path):
            self.install_listing(path, entries, asked=asked)
        return entries

    def listed(self, path: bytes) -> list[Entry] | None:
        """The cached listing of ``path`` when it is there and clean, else None: a caller
        that can take it without awaiting (a READDIR on a warm walk) spares itself a task."""
        listing = self._dirs.get(path) if self._enabled_dir else None
        if listing is None or listing.dirty:
            return None
        self.stats.hits += 1
        return list(listing.entries.values())

    def install_listing(
        self,
        path: bytes,
        entries: list[Entry],
        vouches: bool = True,
        asked: float | None = None,
    ) -> None:
        """Cache a listing. Its entries answer lstat through the listing itself (not copied
        into the attribute cache: that would double the memory of a huge directory).
        ``vouches=False``: a name it lacks is still asked of the server (see Listing),
        unless the mount made the directory and is filling it (see mkdir).
        ``asked``: when it was asked of the server (``timer``; None: just now)."""
        if vouches:
            self._made.pop(path, None)  # the listing knows better now
        if self.on_use is not None:
            self.on_use(path, asked)
        if self._enabled_dir:
            when = self._timer() if asked is None else asked
            self._dirs[path] = Listing({e.name: e for e in entries}, vouches=vouches, asked=when)
        for e in entries:
            if e.attrs.nlink > 1:
                self._note_links(join(path, e.name), e.attrs)
            if self._enabled_attr and e.target is not None:
                self._links[join(path, e.name)] = e.target

    def cached_listing(self, path: bytes) -> Listing | None:
        """The listing of ``path`` as cached (dirty or not; no hit counted), or None."""
        listing: Listing | None = self._dirs.get(path)
        return listing

    def withdraw_listing(self, path: bytes, listing: Listing | None) -> None:
        """Drop the cached listing of ``path`` if it is still ``listing`` (a prefetch takes
        back a directory it handed out early)."""
        if self._dirs.get(path) is listing:
            self._dirs.pop(path, None)

    async def _refresh_dirty(self, path: bytes, listing: Listing) -> None:
        names = list(listing.dirty)
        limiter = asyncio.Semaphore(REFRESH_PARALLEL)

        async def one(name: bytes) -> None:
            async with limiter:
                try:
                    await self.lstat(join(path, name))  # installs or removes the entry
                except FileNotFoundError:
                    pass

        async with asyncio.TaskGroup() as group:
            for name in names:
                group.create_task(one(name))

    async def readlink(self, path: bytes) -> bytes:
        target = self._links.get(path)
        if target is not None:
            self.stats.hits += 1
            return bytes(target)
        self.stats.misses += 1
        target = await self.inner.readlink(path)
        if self._enabled_attr:
            self._links[path] = target
        return target

    async def statfs(self, path: bytes) -> StatFs:
        return await self.inner.statfs(path)

    async def tree(self, path: bytes, max_entries: int) -> dict[bytes, list[Entry]] | None:
        return await self.inner.tree(path, max_entries)

    async def prefetch(self, path: bytes) -> int:
        """Fetch a whole subtree's listings in one backend call; the number of entries
        cached, or -1 when the backend cannot (no exec channel) or the tree is too big."""
        return await self._prefetcher.prefetch(path)

    def walk_reads(self, root: bytes) -> bool:
        """A walk reads files under ``root`` (see TreePrefetcher.walk_reads)."""
        return self._prefetcher.walk_reads(root, self.dir_ttl)

    def prefetched_root(self, path: bytes, within_seconds: float) -> bytes | None:
        """The root of a tree prefetched lately that holds ``path`` (see TreePrefetcher)."""
        return self._prefetcher.root_of(path, within_seconds)

    @property
    def prefetches(self) -> int:
        """Tree prefetches started, walks' and asked-for ones alike."""
        return self._prefetcher.prefetches

    @property
    def _prefetching(self) -> dict[bytes, asyncio.Event]:
        """The roots being prefetched, as :attr:`TreePrefetcher.prefetching` (tests read it)."""
        return self._prefetcher.prefetching

    # -- mutations -------------------------------------------------------------------

    async def open(self, path: bytes, flags: int, mode: int = 0o644) -> VFSFile:
        self.owned.pop(path)  # another handle: the tracked one is no longer alone
        changes = bool(flags & (os.O_CREAT | os.O_TRUNC))
        if changes:
            self._mark(path)
            self._used(split(path)[0])
        known = None if changes else self._cached_attrs(path)
        reading = flags & os.O_ACCMODE == os.O_RDONLY and not changes
        if reading and isinstance(known, Attrs):
            memory = self.contents.file(path, known)
            if memory is not None:
                self.stats.hits += 1
                return memory
            memory = await self.contents.fetch_one(path, known)
            if memory is not None:
                self.contents.missed(path)
                return memory
        file = await self.inner.open(path, flags, mode)
        if reading:
            self.contents.missed(path)
        if len(self._opened) > 100_000:
            self._opened.clear()
        self._opened.add(path)  # not a directory: the kernel opens those with OPENDIR
        if changes:
            self._mark(path)
            self._attrs.pop(split(path)[0], None)
        elif isinstance(known, Attrs) and _stat.S_ISREG(known.mode):
            file.size_hint(known.size)  # spares a small file's second READ (its EOF)
        return CachedFile(self, file, changes)

    async def close(self) -> None:
        await self.inner.close()
