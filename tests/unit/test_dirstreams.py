"""Handle-less directory streams: cookies, eviction, and when the kernel's copy is due."""

from __future__ import annotations

import asyncio

import pytest

from sshvfs.fuse.dirstreams import MAX_STREAMS, DirHandle, DirStreams, cookie, split_cookie
from sshvfs.vfs.types import Attrs, Entry, listing_progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cookies_carry_the_snapshot_and_fit_off_t() -> None:
    for serial, index in [(1, 0), (7, 41), ((1 << 31) - 1, (1 << 32) - 2)]:
        c = cookie(serial, index)
        assert 0 < c < 1 << 63
        assert split_cookie(c) == (serial, index + 1)


def test_two_readers_of_one_directory_keep_their_snapshots() -> None:
    streams = DirStreams(30.0)
    a, b = streams.start(5), streams.start(5)
    assert a.serial != b.serial
    assert streams.resume(5, cookie(a.serial, 9)) == (a, 10)
    assert streams.resume(5, cookie(b.serial, 0)) == (b, 1)
    # a cookie of another directory never resumes this one's snapshot
    other, index = streams.resume(6, cookie(a.serial, 3))
    assert other is not a and other.ino == 6 and index == 4


def test_abandoned_streams_are_bounded() -> None:
    streams = DirStreams(30.0)
    first = streams.start(2)
    for _ in range(MAX_STREAMS + 10):
        streams.start(3)
    assert len(streams) == MAX_STREAMS
    again, _ = streams.resume(2, cookie(first.serial, 0))
    assert again is not first and again.entries is None  # fetched afresh


def test_kernel_copies_fall_due_after_the_ttl_oldest_first() -> None:
    clock = Clock()
    streams = DirStreams(30.0, clock)
    assert streams.next_due() is None
    streams.start(10)
    clock.now += 10
    streams.start(11)
    assert streams.next_due() == 20.0
    clock.now += 20
    assert streams.due() == [10]
    streams.start(11)  # listed again: its clock restarts
    clock.now += 25
    assert streams.due() == []
    clock.now += 5
    assert streams.due() == [11]
    assert streams.next_due() is None


# -- a snapshot handed out while it arrives -----------------------------------------------


def _entry(name: bytes) -> Entry:
    return Entry(name, Attrs(0o100644, 0, 0, 0, 1, 0, 0))


async def test_fill_hands_out_batches_before_the_listing_is_complete() -> None:
    gate = asyncio.Event()

    async def fetch() -> list[Entry]:
        report = listing_progress.get()
        assert report is not None
        report([_entry(b"a"), _entry(b"b")])
        await gate.wait()
        report([_entry(b"b"), _entry(b"c")])  # a name again (a retry): kept once
        return [_entry(b"a"), _entry(b"d")]  # the final answer adds what no batch had

    handle = DirHandle(5)
    await handle.fill(fetch)
    assert [e.name for e in handle.entries or []] == [b"a", b"b"]
    assert handle.arriving is not None  # still coming
    waiting = asyncio.ensure_future(handle.wait())
    gate.set()
    await waiting
    while handle.arriving is not None:
        await handle.wait()
    assert [e.name for e in handle.entries or []] == [b"a", b"b", b"c", b"d"]
    assert handle.error is None
    assert listing_progress.get() is None  # the fetch's context was its own


async def test_fill_error_before_any_entry_is_raised_after_some_is_kept() -> None:
    async def nothing() -> list[Entry]:
        raise FileNotFoundError(2, "gone")

    handle = DirHandle(5)
    with pytest.raises(FileNotFoundError):
        await handle.fill(nothing)

    async def half() -> list[Entry]:
        report = listing_progress.get()
        assert report is not None
        report([_entry(b"a")])
        await asyncio.sleep(0)
        raise OSError(5, "connection lost")

    handle = DirHandle(6)
    await handle.fill(half)
    while handle.arriving is not None:
        await handle.wait()
    assert [e.name for e in handle.entries or []] == [b"a"]
    assert isinstance(handle.error, OSError) and handle.error.errno == 5
