"""TtlCache: the caching layer's bounded caches (cachetools' TTLCache, least recently used
out first), counting the entries their bound pushed out, and finding the keys below a
directory without looking at the others.

Keys are mount paths. Dropping a subtree (an ``rm -rf`` through the mount drops one per
directory; a server-side one is reported a directory at a time) looked at every key of
every cache: 50 ms a directory with 100,000 entries cached, a minute for a server-side
``rm -rf`` of 1,000 directories, the mount frozen meanwhile. Each cache now keeps the
paths below each directory it holds anything under (:meth:`TtlCache.pop_below`). That
index may name keys no longer held (expired, evicted, popped: harmless, popping them
again does nothing); it is rebuilt from the keys held once it noted twice as many as
there are (plus 4,096), so it stays within a small multiple of the cache's own size.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from cachetools import TTLCache


class PathIndex:
    """Directory -> the paths right below it that are keys of some store, or directories
    with keys below them (every directory in here but "/" is in its parent's set). It may
    name keys the store no longer holds; :meth:`note` rebuilds it from the store's keys
    once it noted twice as many as the store holds (plus 4,096)."""

    def __init__(self) -> None:
        self._below: dict[bytes, set[bytes]] = {}
        self._noted = 0

    def note(self, key: bytes, keys: Collection[bytes]) -> None:
        """``key`` is now one of the store's ``keys`` (all of them: counted each time,
        listed for a rebuild)."""
        self._add(key)
        self._noted += 1
        if self._noted > 2 * len(keys) + 4096:
            every = list(keys)
            self._below = {}
            for one in every:
                self._add(one)
            self._noted = len(every)

    def _add(self, key: bytes) -> None:
        below = self._below
        while key != b"/":
            parent = key[: key.rfind(b"/")] or b"/"
            kids = below.get(parent)
            if kids is not None:
                kids.add(key)
                return
            below[parent] = {key}
            key = parent  # a directory new to the index joins its own parent's set

    def pop_below(self, root: bytes) -> list[bytes]:
        """Every path noted below ``root`` (not ``root``), forgotten here: the store drops
        those it holds."""
        below = self._below
        found: list[bytes] = []
        stack = [root]
        while stack:
            kids = below.pop(stack.pop(), None)
            if kids:
                found.extend(kids)
                stack.extend(kids)
        return found

    def children(self, parent: bytes) -> list[bytes]:
        return list(self._below.get(parent, ()))


class TtlCache(TTLCache[Any, Any]):
    """A TTLCache that counts capacity evictions, and answers a key it never held without
    asking the clock (TTLCache's get and pop take a microsecond, hit or miss; a file
    operation asks several caches about names most of them do not hold)."""

    def __init__(self, maxsize: int, ttl: float, timer: Callable[[], float], **kw: Any) -> None:
        super().__init__(maxsize, ttl, timer, **kw)
        self.evictions = 0
        #: TTLCache's own index of its keys (expired ones too), when it has one by that name
        self._held: Any = getattr(self, "_TTLCache__links", None)
        #: its values by key, and the clock unwrapped: a hit needs neither its timer's
        #: context manager nor three lookups (cachetools' get costs 1.5 us a hit)
        self._values: dict[Any, Any] | None = getattr(self, "_Cache__data", None)
        self._clock = timer
        self._paths = PathIndex()

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._paths.note(key, self._held if self._held is not None else self)

    def pop_below(self, root: bytes) -> None:
        """Drop every key below ``root`` (not ``root`` itself)."""
        for key in self._paths.pop_below(root):
            self.pop(key, None)

    def children(self, parent: bytes) -> list[bytes]:
        """The keys right below ``parent`` (and maybe a few no longer held)."""
        return self._paths.children(parent)

    def clear(self) -> None:
        super().clear()
        self._paths = PathIndex()

    def get(self, key: Any, default: Any = None) -> Any:
        held = self._held
        if held is None or self._values is None:
            return super().get(key, default)
        link = held.get(key)
        if link is None:
            return default
        if not self._clock() < link.expires:
            return default  # expired: TTLCache drops it at its next expire()
        held.move_to_end(key)  # the least recently used is evicted first
        return self._values[key]

    def expires_in(self, key: Any) -> float:
        """Seconds ``key`` has left (0.0 if not held, or without TTLCache's index)."""
        link = self._held.get(key) if self._held is not None else None
        return 0.0 if link is None else max(0.0, link.expires - self._clock())

    def pop(self, key: Any, *default: Any) -> Any:
        held = self._held
        if held is not None and default and key not in held:
            return default[0]
        return super().pop(key, *default)

    def popitem(self) -> tuple[Any, Any]:
        self.evictions += 1
        return super().popitem()
