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

from collections.abc import Callable
from typing import Any

from cachetools import TTLCache


class TtlCache(TTLCache[Any, Any]):
    """A TTLCache that counts capacity evictions, and answers a key it never held without
    asking the clock (TTLCache's get and pop take a microsecond, hit or miss; a file
    operation asks several caches about names most of them do not hold)."""

    def __init__(self, maxsize: int, ttl: float, timer: Callable[[], float], **kw: Any) -> None:
        super().__init__(maxsize, ttl, timer, **kw)
        self.evictions = 0
        #: TTLCache's own index of its keys (expired ones too), when it has one by that name
        self._held: Any = getattr(self, "_TTLCache__links", None)
        #: directory -> the paths right below it that are keys, or directories with keys
        #: below them (every directory in here but "/" is in its parent's set)
        self._below: dict[bytes, set[bytes]] = {}
        self._noted = 0

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._note(key)
        self._noted += 1
        held = self._held
        if held is not None and self._noted > 2 * len(held) + 4096:
            self._reindex()

    def _note(self, key: bytes) -> None:
        below = self._below
        while key != b"/":
            parent = key[: key.rfind(b"/")] or b"/"
            kids = below.get(parent)
            if kids is not None:
                kids.add(key)
                return
            below[parent] = {key}
            key = parent  # a directory new to the index joins its own parent's set

    def _reindex(self) -> None:
        self._below = {}
        keys = list(self._held)
        for key in keys:
            self._note(key)
        self._noted = len(keys)

    def pop_below(self, root: bytes) -> None:
        """Drop every key below ``root`` (not ``root`` itself)."""
        below = self._below
        stack = [root]
        while stack:
            kids = below.pop(stack.pop(), None)
            if kids:
                for key in kids:
                    self.pop(key, None)
                stack.extend(kids)

    def children(self, parent: bytes) -> list[bytes]:
        """The keys right below ``parent`` (and maybe a few no longer held)."""
        return list(self._below.get(parent, ()))

    def clear(self) -> None:
        super().clear()
        self._below = {}
        self._noted = 0

    def get(self, key: Any, default: Any = None) -> Any:
        held = self._held
        if held is not None and key not in held:
            return default
        return super().get(key, default)

    def pop(self, key: Any, *default: Any) -> Any:
        held = self._held
        if held is not None and default and key not in held:
            return default[0]
        return super().pop(key, *default)

    def popitem(self) -> tuple[Any, Any]:
        self.evictions += 1
        return super().popitem()
