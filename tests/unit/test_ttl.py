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
    # a hit counts as a use: the least recently used goes first, as in TTLCache
    cache[b"e"] = 5
    assert cache.get(b"d") == 4
    cache[b"f"] = 6
    assert cache.get(b"e") is None and cache.get(b"d") == 4 and cache.get(b"f") == 6
    assert cache._values is not None  # the hit path is the fast one with this cachetools


def test_drops_what_is_below_a_directory_and_nothing_else() -> None:
    cache = TtlCache(10_000, 10, lambda: 0.0)
    keys = [b"/a/b", b"/a/b/c/d/e", b"/a/b/x", b"/a/bc", b"/a/bc/y", b"/z", b"/a"]
    for key in keys:
        cache[key] = 1
    assert sorted(cache.children(b"/a")) == [b"/a/b", b"/a/bc"]
    cache.pop_below(b"/a/b")  # its keys at any depth, through directories it holds none of
    assert sorted(cache) == [b"/a", b"/a/b", b"/a/bc", b"/a/bc/y", b"/z"]
    cache[b"/a/b/again"] = 2  # what comes later is found again
    cache.pop_below(b"/")
    assert sorted(cache) == []
    cache[b"/q/r"] = 3
    cache.clear()
    assert cache.children(b"/q") == []


def test_the_index_is_rebuilt_and_stays_whole() -> None:
    cache = TtlCache(100, 10, lambda: 0.0)
    for i in range(20_000):  # far more sets than keys held: stale index entries pile up
        cache[b"/d%d/f%d" % (i % 50, i)] = i
    assert len(cache) == 100
    assert sum(len(kids) for kids in cache._paths._below.values()) < 2 * 100 + 4096 + 200
    held = sorted(cache)
    cache.pop_below(b"/d7")
    assert sorted(cache) == [k for k in held if not k.startswith(b"/d7/")]
