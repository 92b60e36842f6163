"""TtlCache: cachetools' TTLCache answers, a key never held answered without the clock."""

from __future__ import annotations

import pytest

from sshvfs.vfs.cache.ttl import TtlCache


def test_answers_as_ttlcache_does() -> None:
    now = [100.0]
    asked: list[float] = []

    def timer() -> float:
        asked.append(now[0])
        return now[0]

    cache = TtlCache(2, 10, timer)
    assert cache._held is not None  # the fast path is on with this cachetools
    cache[b"a"] = 1
    asked.clear()
    assert cache.get(b"missing") is None and cache.get(b"missing", 5) == 5
    assert cache.pop(b"missing", None) is None
    assert asked == []  # never held: no clock asked
    with pytest.raises(KeyError):
        cache.pop(b"missing")
    assert cache.get(b"a") == 1
    now[0] = 111.0  # expired: held, but no longer an answer
    assert cache.get(b"a") is None and cache.pop(b"a", "gone") == "gone"
    cache[b"b"], cache[b"c"], cache[b"d"] = 2, 3, 4
    assert cache.evictions == 1 and cache.get(b"b") is None and cache.get(b"d") == 4
