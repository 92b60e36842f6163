"""RemoteChanges: what a :class:`~sshvfs.vfs.cache.cached.CachingVFS` does with changes made on
the server behind the mount's back (a remote watcher's reports).

A change drops exactly what it makes stale: the attributes (and contents copy) of the
name, its entry in its directory's listing (marked dirty: re-fetched before the listing is
served), the directory's own attributes when a name came or went, and the subtree of a
directory that went away. Fetches in flight for those keys are not installed
(generations).

The mount's own changes come back from the server as events too. Those are recognised by
path: a change reported for a name the mount itself changed less than ``OWN_WINDOW``
seconds ago is the mount's own, already accounted for (dropping it would cost the next
lookup a round trip after every save), and so is a directory's change whose fresh listing
holds only such names (and names cached as listed): the mount filling a directory it just
made, seen by the watcher's catch-up. A name reported gone is the mount's own only if the
mount itself removed (or renamed away) that name in that time: one it made and someone
removed on the server is dropped at once. The bound: any other change made on the server
to that same name within that window is seen only when the caches' timeouts run out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..types import Attrs, Change, Entry, join, split

if TYPE_CHECKING:
    from .cached import CachingVFS

#: seconds after the mount changed a name during which reports of it are the mount's own
OWN_WINDOW = 2.0
#: names remembered as changed by the mount (older ones are forgotten past this)
OWN_MAX = 20_000


class RemoteChanges:
    def __init__(self, cache: CachingVFS, timer: Callable[[], float]) -> None:
        self._cache = cache
        self._timer = timer
        #: when the mount last changed each name (made, wrote, set), and last removed it
        self._own: dict[bytes, float] = {}
        self._own_gone: dict[bytes, float] = {}
        #: seconds a report of a name the mount changed counts as the mount's own (a poll
        #: reports a change for up to two intervals: the mount widens it)
        self.own_window = OWN_WINDOW
        self.applied = 0
        self.own_skipped = 0

    def own(self, path: bytes, gone: bool = False) -> None:
        """The mount changed ``path`` just now (``gone``: removed it, or renamed it away)."""
        own = self._own_gone if gone else self._own
        now = self._timer()
        own.pop(path, None)
        own[path] = now  # insertion order is age order
        if len(own) > OWN_MAX:
            for key in list(own)[: OWN_MAX // 2]:
                if now - own[key] >= self.own_window:
                    del own[key]

    def is_own(self, path: bytes, age: float = 0.0, went: bool = False) -> bool:
        """Did the mount change ``path`` (``went``: remove it) within ``own_window`` before
        a report that looked ``age`` seconds ago?"""
        when = (self._own_gone if went else self._own).get(path)
        return when is not None and self._timer() - age - when < self.own_window

    def apply(
        self,
        changes: list[Change],
        fresh: dict[bytes, list[Entry]] | None = None,
        age: float = 0.0,
    ) -> list[Change]:
        """Drop what ``changes`` make stale; returns those that were not the mount's own
        (what the kernel must be told too). ``fresh``: new listings of ``"dir"`` changes'
        directories, compared with the cached ones to tell which names changed. ``age``:
        how long ago the scan that found them began (0 for events): a report is the mount's
        own by when it looked, not by when it arrived (a poll under load, its changed
        directories listed again, may land well after it looked)."""
        cache = self._cache
        kept: list[Change] = []
        listings: set[bytes] = set()
        narrowed: set[bytes] = set()
        echoes: set[bytes] = set()
        changes = self._names(changes, fresh or {}, narrowed, echoes, age)
        for path in echoes:  # the mount's own names: only its own mtime may be news
            cache._attrs.pop(path, None)
            cache._bump(path)
        for change in changes:
            path, kind, went = change
            if kind == "all":
                cache.invalidate(None)
                self.applied += 1
                return [change]
            if kind in ("entry", "name") and self.is_own(path, age, went):
                self.own_skipped += 1
                continue
            kept.append(change)
            self.applied += 1
            if kind == "dir":
                if path in narrowed:
                    self._dir_itself(path)  # its names: the changes that follow it
                else:
                    listings.add(path)
                continue
            cache._stale(path)
            if kind in ("name", "gone") and (path in cache._dirs or cache._holds_below(path)):
                cache._drop_subtree(path)  # what was below it is elsewhere or gone
            # (a directory's own "entry" change keeps its listing: names that came or went
            # in it are reported as such, by its own watch)
            if kind in ("name", "gone") and path != b"/":
                cache._attrs.pop(split(path)[0], None)  # its directory's mtime moved
        if listings:
            self._listings_changed(listings)
        return kept

    def _names(
        self,
        changes: list[Change],
        fresh: dict[bytes, list[Entry]],
        narrowed: set[bytes],
        echoes: set[bytes],
        age: float,
    ) -> list[Change]:
        """``"dir"`` changes with a fresh listing become the changes of the names that
        differ: from the cached listing, or, with none cached, from the names' cached
        attributes (the ``"dir"`` change then stays, for the directory itself and the
        kernel's copy of it, and its path goes into ``narrowed``), unless every name
        listed is the mount's own or as cached (the mount filling a directory it made, seen
        by a catch-up): that directory goes into ``echoes``, and what the mount knows it
        made there stays."""
        out: list[Change] = []
        for change in changes:
            entries = fresh.get(change.path) if change.kind == "dir" else None
            if entries is None:
                out.append(change)
                continue
            listing = self._cache._dirs.get(change.path)
            if listing is None:
                contradicted = self._against_known(change.path, entries)
                if not contradicted and self._all_known(change.path, entries, age):
                    echoes.add(change.path)
                    self.own_skipped += 1
                    continue
                out.append(change)
                narrowed.add(change.path)
                out.extend(contradicted)
                continue
            before = listing.entries
            now = {e.name: e for e in entries}
            for name in before.keys() - now.keys():
                out.append(Change(join(change.path, name), "name", went=True))
            for name, entry in now.items():
                old = before.get(name)
                if old is None:
                    out.append(Change(join(change.path, name), "name"))
                elif _differs(old, entry):
                    out.append(Change(join(change.path, name), "entry"))
        return out

    def _against_known(self, parent: bytes, entries: list[Entry]) -> list[Change]:
        """The changes of the names in ``parent`` whose cached attributes, absence or link
        target a fresh listing contradicts (names the caches know nothing of need none)."""
        cache = self._cache
        now = {e.name: e for e in entries}
        out: list[Change] = []
        for key in cache._attrs.children(parent):
            known = cache._attrs.get(key)
            if known is None:
                continue
            entry = now.get(split(key)[1])
            if entry is None:
                out.append(Change(key, "name", went=True))
            elif _attrs_differ(known, entry.attrs):
                out.append(Change(key, "entry"))
        for key in cache._neg.children(parent):
            if split(key)[1] in now and cache._neg.get(key) is not None:
                out.append(Change(key, "name"))
        for key in cache._links.children(parent):
            target = cache._links.get(key)
            entry = now.get(split(key)[1])
            if target is not None and (entry is None or entry.target != target):
                out.append(Change(key, "entry"))
        return list(dict.fromkeys(out))

    def _all_known(self, parent: bytes, entries: list[Entry], age: float) -> bool:
        """Is every name of a fresh listing of ``parent`` one the mount changed itself
        lately, or cached with the attributes listed?"""
        attrs = self._cache._attrs
        for entry in entries:
            path = join(parent, entry.name)
            if not self.is_own(path, age):
                known = attrs.get(path)
                if known is None or _attrs_differ(known, entry.attrs):
                    return False
        return True

    def _dir_itself(self, path: bytes) -> None:
        """What a directory whose names came or went holds of itself: its attributes (its
        mtime moved), its listing, what the mount knew it made there."""
        cache = self._cache
        cache._dirs.pop(path, None)
        cache._attrs.pop(path, None)
        cache._made.pop(path, None)
        cache._bump(path)

    def _listings_changed(self, dirs: set[bytes]) -> None:
        """Names came or went in ``dirs``; which ones, nobody said: everything cached of
        the names in them goes (one pass over the caches for the whole set)."""
        cache = self._cache
        for path in dirs:
            self._dir_itself(path)
        for store in (cache._attrs, cache._neg, cache._links):
            for path in dirs:
                for key in store.children(path):
                    if store.pop(key, _GONE) is not _GONE:
                        cache._bump(key)


_GONE = object()


def _differs(old: Entry, new: Entry) -> bool:
    """Did an entry change (its access time aside, which reading moves)?"""
    return _attrs_differ(old.attrs, new.attrs) or old.target != new.target


def _attrs_differ(a: Attrs, b: Attrs) -> bool:
    return (
        a.mode != b.mode
        or a.size != b.size
        or a.mtime_ns != b.mtime_ns
        or a.uid != b.uid
        or a.gid != b.gid
        or a.nlink != b.nlink
    )
