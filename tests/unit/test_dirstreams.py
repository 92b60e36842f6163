"""Handle-less directory streams: cookies, eviction, and when the kernel's copy is due."""

from __future__ import annotations

from sshvfs.fuse.dirstreams import MAX_STREAMS, DirStreams, cookie, split_cookie


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
