"""TtlCache: the caching layer's bounded caches (cachetools' TTLCache, least recently used
out first), counting the entries their bound pushed out."""

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
