"""RemoteWatcher's promises that need no server: when what the mount asked answers for a
directory (``vouches``), and how far back a catch-up scan reaches."""

from __future__ import annotations

import time

from sshvfs.vfs.types import Attrs, Change, Entry
from sshvfs.watch import watcher as w
from sshvfs.watch.watcher import RemoteWatcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _apply(*args: object) -> None:
    return None


def _watcher(clock: Clock) -> RemoteWatcher:
    return RemoteWatcher("inotify", b"/srv", _apply, lambda: None, timer=clock)


async def test_a_fresh_answer_vouches_while_the_watch_is_on_the_way() -> None:
    clock = Clock()
    watcher = _watcher(clock)
    watcher.use(b"/d")  # first use at 100
    assert not watcher.vouches(b"/d", 100.1)  # not watching yet at all
    watcher.active = "inotify"
    clock.now = 100.5
    assert watcher.vouches(b"/d", 100.1)  # asked since its first use: fresh enough
    assert not watcher.vouches(b"/d", 99.0)  # asked before it: a catch-up may not cover it
    assert not watcher.vouches(b"/other", 100.1)  # never used
    clock.now = 100 + w.PENDING_TRUST
    assert not watcher.vouches(b"/d", 100.1)  # the watch should stand by now: ask
    watcher._vouched.add(b"/d")  # it stands, caught up
    assert watcher.vouches(b"/d", 0.0)
    watcher.connection_lost()
    assert not watcher.vouches(b"/d", clock.now)


async def test_poll_mode_never_vouches() -> None:
    clock = Clock()
    watcher = _watcher(clock)
    watcher.active = "poll"
    watcher.use(b"/d")
    assert not watcher.vouches(b"/d", clock.now)


async def test_a_listing_asked_before_now_counts_from_when_it_was_asked() -> None:
    clock = Clock()
    watcher = _watcher(clock)
    watcher.active = "inotify"
    watcher.use(b"/tree/sub", since=97.0)  # a tree walk's listing, asked at 97
    assert watcher._scope[b"/tree/sub"] == 97.0
    assert watcher._pending[b"/tree/sub"] == 97.0  # its catch-up reaches back to then
    assert not watcher.vouches(b"/tree/sub", 97.0)  # more than PENDING_TRUST ago


async def test_the_catch_up_reaches_back_to_first_use_in_the_servers_time() -> None:
    clock = Clock()
    watcher = _watcher(clock)
    # no clock read: whole minutes, generously
    test, arg = watcher._since(clock.now - 10)
    assert test == b"-cmin" and int(arg) <= -2
    # the server runs 1000 s ahead of us, read within 0.1 s
    watcher._clock = (1000.0, 0.1)
    test, arg = watcher._since(clock.now - 10)
    assert test == b"-newerct"
    wall_then = time.time() - 10
    reach = float(arg[1:]) - (wall_then + 1000.0)
    assert -(w.CATCH_UP_SLACK + 0.1) - 0.05 <= reach <= -(w.CATCH_UP_SLACK + 0.1) + 0.05


async def test_a_scan_s_changes_carry_how_long_ago_it_looked() -> None:
    """The mount judges a report of its own change by when the scan looked, not by when
    the report arrived: the watcher hands over the scan's age (0 for an event)."""
    clock = Clock()
    got: list[tuple[object, ...]] = []

    async def apply(*args: object) -> None:
        got.append(args)

    watcher = RemoteWatcher("poll", b"/srv", apply, lambda: None, timer=clock)
    watcher.use(b"/d")
    began = clock.now
    clock.now += 7.5  # the scan's command, then relisting what it found, took this long
    await watcher._scanned([b"/srv/d/f"], began)
    await watcher._deliver([Change(b"/d/g", "entry")])
    assert [args[2] for args in got] == [7.5, 0.0]


async def test_a_catch_up_compares_files_with_their_directory_s_listing() -> None:
    """A catch-up reaches back before a directory's first use: the files it reports are
    handed over as their directory's change with a fresh listing (the mount compares name
    by name), so files made just before the mount listed them are not dropped. A directory
    that cannot be listed again keeps its files' changes as reported."""
    clock = Clock()
    got: list[tuple[object, ...]] = []

    async def apply(*args: object) -> None:
        got.append(args)

    fresh = [Entry(b"f", Attrs(0o100644, 1, 0, 0, 1, 0, 0))]

    async def relist(path: bytes) -> list[Entry]:
        if path == b"/gone":
            raise FileNotFoundError(2, "gone")
        return fresh

    watcher = RemoteWatcher("inotify", b"/srv", apply, lambda: None, relist, timer=clock)
    for d in (b"/d", b"/gone"):
        watcher.use(d)
    records = [b"/srv/d/f", b"/srv/d/g", b"/srv/gone/h", b"/srv/other/i"]
    await watcher._scanned(records, clock.now, catching_up=True)
    [(changes, listings, _)] = got
    assert changes == [
        Change(b"/d", "dir"),
        Change(b"/gone/h", "entry"),
        Change(b"/other/i", "entry"),
    ]
    assert listings == {b"/d": fresh}
    # a poll's report stays as it is: the files changed since the poll before last
    got.clear()
    await watcher._scanned(records, clock.now)
    [(changes, listings, _)] = got
    assert [c.kind for c in changes] == ["entry"] * 4 and listings == {}
