"""Changes made on the server show through the mount without waiting out the caches'
timeouts: the remote watcher, in both modes, against the real sshd (which runs on this
machine, so the server's inotifywait is this machine's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

from ..mounting import mounted
from ..sshd import Sshd
from .test_caching import asked, status, touch_invalidate

pytestmark = pytest.mark.mount

#: the promise for inotify mode (README "Freshness")
INOTIFY_BOUND = 2.0
POLL_INTERVAL = 1.0


def watch_status(mnt: str) -> dict[str, object]:
    watch = status(mnt)["watch"]
    assert isinstance(watch, dict)
    return watch


def wait_for(what: Callable[[], bool], within: float, message: str) -> float:
    """Seconds until ``what()`` held (polled); fails after ``within``."""
    start = time.monotonic()
    while not what():
        if time.monotonic() - start > within:
            pytest.fail(f"{message} not seen within {within}s")
        time.sleep(0.05)
    return time.monotonic() - start


def settled(mnt: str, dirs: int) -> None:
    """Wait until the watcher covers ``dirs`` directories (it watches within a moment of
    their first use; a test changing the server earlier would test the catch-up)."""
    wait_for(
        lambda: (
            int(watch_status(mnt)["vouched"]) >= dirs  # type: ignore[call-overload]
            or watch_status(mnt)["active"] == "poll"
            and int(watch_status(mnt)["pending"]) == 0
        ),  # type: ignore[call-overload]
        10,
        f"{dirs} directories watched",
    )
    if watch_status(mnt)["active"] == "poll":
        # the first polls report what changed in them since shortly before their first
        # use (files the test just made): let them land before the test changes anything
        polls = int(watch_status(mnt)["polls"])  # type: ignore[call-overload]
        wait_for(
            lambda: int(watch_status(mnt)["polls"]) >= polls + 2,  # type: ignore[call-overload]
            10,
            "two polls after the directories joined",
        )


@pytest.fixture(params=["inotify", "poll"])
def watched(request: pytest.FixtureRequest, sshd: Sshd) -> Iterator[tuple[str, str, str]]:
    """(mode, server dir, mount dir) with a long cache timeout: only the watcher can
    make a change made on the server show."""
    if request.param == "inotify" and shutil.which("inotifywait") is None:
        pytest.fail("inotifywait is missing: scripts/setup installs inotify-tools")
    base = tempfile.mkdtemp(prefix="sshvfs-watch-")
    remote = os.path.join(base, "remote")
    os.makedirs(os.path.join(remote, "sub"))
    for name in ("a", "b"):
        with open(os.path.join(remote, "sub", name), "w") as f:
            f.write(name)
    options = [
        f"watch={request.param}",
        f"watch_interval={POLL_INTERVAL}",
        "cache_timeout=600",
    ]
    try:
        with mounted(sshd, remote, os.path.join(base, "mnt"), options) as m:
            wait_for(lambda: watch_status(m.mountpoint)["active"] == request.param, 15, "mode")
            yield request.param, remote, m.mountpoint
    finally:
        shutil.rmtree(base, ignore_errors=True)


def bound(mode: str) -> float:
    # poll: a change lands at worst just after a poll began, and shows after the next one
    return INOTIFY_BOUND if mode == "inotify" else 2 * POLL_INTERVAL + 1.0


def test_created_modified_removed_on_the_server_show(watched: tuple[str, str, str]) -> None:
    mode, remote, mnt = watched
    sub, rsub = os.path.join(mnt, "sub"), os.path.join(remote, "sub")
    assert sorted(os.listdir(sub)) == ["a", "b"]
    assert os.stat(os.path.join(sub, "a")).st_size == 1
    with open(os.path.join(sub, "b")) as f:
        assert f.read() == "b"
    settled(mnt, 2)

    with open(os.path.join(rsub, "new"), "w") as f:
        f.write("created")
    wait_for(lambda: "new" in os.listdir(sub), bound(mode), "a file created (readdir)")
    with open(os.path.join(sub, "new")) as f:
        assert f.read() == "created"

    with open(os.path.join(rsub, "a"), "w") as f:
        f.write("modified, longer")
    os.utime(os.path.join(rsub, "a"), (1_000_000_000, 1_000_000_000))
    wait_for(
        lambda: os.stat(os.path.join(sub, "a")).st_mtime == 1_000_000_000,
        bound(mode),
        "a modified file's mtime",
    )
    assert os.stat(os.path.join(sub, "a")).st_size == 16
    with open(os.path.join(sub, "a")) as f:
        assert f.read() == "modified, longer"  # the page cache went too

    with open(os.path.join(rsub, "b"), "w") as f:
        f.write("B!")  # same second, new size: what an open file shows
    wait_for(lambda: _read(os.path.join(sub, "b")) == "B!", bound(mode), "new contents")

    os.unlink(os.path.join(rsub, "b"))
    wait_for(lambda: not os.path.exists(os.path.join(sub, "b")), bound(mode), "a removed file")
    assert "b" not in os.listdir(sub)

    os.mkdir(os.path.join(rsub, "made"))
    wait_for(lambda: os.path.isdir(os.path.join(sub, "made")), bound(mode), "a directory made")
    watch = watch_status(mnt)
    assert watch["changes"] and int(watch["changes"]) > 0  # type: ignore[call-overload]


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_a_name_created_on_the_server_is_found_at_once(watched: tuple[str, str, str]) -> None:
    """A lookup of a name the cached listing lacks asks the server unless a watch stands
    for the directory, and then the event has landed before the server answers anything
    else: either way a file created on the server opens through the mount at once."""
    mode, remote, mnt = watched
    sub, rsub = os.path.join(mnt, "sub"), os.path.join(remote, "sub")
    os.listdir(sub)
    assert not os.path.exists(os.path.join(sub, "late"))  # a negative entry, too
    settled(mnt, 2)
    for i in range(20):
        name = f"late{i}" if i else "late"
        with open(os.path.join(rsub, name), "w") as f:
            f.write(name)
        # no wait at all in poll mode: the miss must reach the server
        deadline = time.monotonic() + (0.5 if mode == "inotify" else 0)
        while True:
            try:
                assert _read(os.path.join(sub, name)) == name
                break
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise


def test_a_name_missing_in_the_kernel_shows_once_made_on_the_server(
    watched: tuple[str, str, str],
) -> None:
    """Misses the kernel keeps (a watch vouches for the directory) go when the watcher
    reports the name, or its directory, changed."""
    mode, remote, mnt = watched
    sub, rsub = os.path.join(mnt, "sub"), os.path.join(remote, "sub")
    os.listdir(sub)
    settled(mnt, 2)
    names = [f"absent{i}" for i in range(5)]
    for name in names:
        assert not os.path.exists(os.path.join(sub, name))
    before = asked(mnt)
    for name in names:
        assert not os.path.exists(os.path.join(sub, name))
    if mode == "inotify":  # vouched for: the kernel answered alone
        assert asked(mnt) == before
    for name in names:
        with open(os.path.join(rsub, name), "w") as f:
            f.write(name)
    for name in names:
        wait_for(
            lambda n=name: os.path.exists(os.path.join(sub, n)),  # type: ignore[misc]
            bound(mode),
            f"{name} made on the server",
        )
        assert _read(os.path.join(sub, name)) == name


def test_own_changes_are_not_dropped(watched: tuple[str, str, str]) -> None:
    """The mount's own writes come back as events: they do not cost the next lookup a
    round trip (a save followed by a stat is answered from the cache)."""
    mode, remote, mnt = watched
    sub = os.path.join(mnt, "sub")
    os.listdir(sub)
    settled(mnt, 2)
    # the listing must be cached: a first report (the catch-up of the files the fixture
    # made) that lands while it is fetched keeps it out, and a directory reported changed
    # without a cached listing to compare loses every name's attributes, ours too
    touch_invalidate(mnt)
    os.listdir(sub)
    with open(os.path.join(sub, "mine"), "w") as f:
        f.write("x" * 100)
    os.rename(os.path.join(sub, "mine"), os.path.join(sub, "saved"))
    os.stat(os.path.join(sub, "saved"))
    time.sleep(bound(mode))  # the events (or the poll) come back
    before = status(mnt)["cache"]
    assert os.stat(os.path.join(sub, "saved")).st_size == 100
    after = status(mnt)["cache"]
    assert isinstance(before, dict) and isinstance(after, dict)
    assert after["misses"] == before["misses"], (before, after, watch_status(mnt))


def test_a_tree_made_through_the_mount_and_removed_on_the_server_goes(
    watched: tuple[str, str, str],
) -> None:
    """tar into the mount, then an rm -rf of it on the server (after the window in which
    reports of the mount's own names count as its own): the mount forgets the tree, so
    the same tar again makes every file anew (a directory it made was never looked up on
    the server, yet it is watched: the mount made things in it)."""
    mode, remote, mnt = watched
    tree = os.path.join(mnt, "tree")

    def make() -> None:
        for d in ("tree", "tree/d", "tree/d/sub"):
            os.mkdir(os.path.join(mnt, d), 0o700)
        for d in ("tree/d", "tree/d/sub"):
            fd = os.open(os.path.join(mnt, d, "f"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            os.write(fd, b"data")
            os.close(fd)
            os.utime(os.path.join(mnt, d), (1_000_000_000, 1_000_000_000))

    make()
    assert os.stat(os.path.join(tree, "d", "sub", "f")).st_size == 4
    settled(mnt, 4)
    # (reports of the mount's own names count as its own for a moment, but not a report
    # that one of them is gone: the mount removed none of them)
    shutil.rmtree(os.path.join(remote, "tree"))
    wait_for(lambda: not os.path.exists(tree), bound(mode), "a tree removed")
    assert not os.path.exists(os.path.join(tree, "d", "sub", "f"))
    make()  # O_EXCL: nothing of the first tree is left in the mount or the kernel
    assert os.listdir(os.path.join(remote, "tree", "d", "sub")) == ["f"]


def test_a_file_saved_here_and_removed_on_the_server_at_once_goes(
    watched: tuple[str, str, str],
) -> None:
    """A file the mount just wrote, removed on the server a moment later: the report that
    it is gone is not taken for the echo of the mount's own write."""
    mode, remote, mnt = watched
    sub = os.path.join(mnt, "sub")
    os.listdir(sub)
    settled(mnt, 2)
    with open(os.path.join(sub, "fresh"), "w") as f:
        f.write("mine")
    assert os.stat(os.path.join(sub, "fresh")).st_size == 4
    os.unlink(os.path.join(remote, "sub", "fresh"))
    wait_for(lambda: not os.path.exists(os.path.join(sub, "fresh")), bound(mode), "removal")
    assert "fresh" not in os.listdir(sub)


def test_a_tree_walked_is_watched_and_the_server_bears_it(sshd: Sshd) -> None:
    """Every directory a walk used is watched, in one inotifywait per batch on the server,
    and they all stop with the mount (no inotifywait left behind)."""
    base = tempfile.mkdtemp(prefix="sshvfs-watch-")
    remote = os.path.join(base, "remote")
    for i in range(300):
        os.makedirs(os.path.join(remote, f"d{i // 30}", f"e{i}"))
    before = _inotifywaits()
    try:
        with mounted(sshd, remote, os.path.join(base, "mnt"), ["watch=inotify"]) as m:
            mnt = m.mountpoint
            seen = sum(len(dirs) for _, dirs, _ in os.walk(mnt))
            assert seen == 310
            settled(mnt, 311)
            watch = watch_status(mnt)
            assert watch["dirs"] == 311
            assert _inotifywaits() - before >= 1
            os.rmdir(os.path.join(remote, "d3", "e95"))
            wait_for(
                lambda: not os.path.exists(os.path.join(mnt, "d3", "e95")),
                INOTIFY_BOUND,
                "a directory removed deep in the tree",
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    wait_for(lambda: _inotifywaits() <= before, 10, "the server's inotifywaits ending")


def _inotifywaits() -> int:
    out = subprocess.run(
        ["pgrep", "-x", "inotifywait"], capture_output=True, text=True, check=False
    ).stdout
    count = 0
    for pid in out.split():
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":  # zombies hold no watches
                    count += 1
        except OSError:
            pass
    return count


def test_watch_no_keeps_the_timeouts(sshd: Sshd) -> None:
    """watch=no: what the mount saw stays for the cache timeout (and a missing name stays
    missing): the behaviour of before, for those who want no remote process."""
    base = tempfile.mkdtemp(prefix="sshvfs-watch-")
    remote = os.path.join(base, "remote")
    os.makedirs(remote)
    try:
        with mounted(sshd, remote, os.path.join(base, "mnt"), ["watch=no"]) as m:
            mnt = m.mountpoint
            assert os.listdir(mnt) == []
            assert not os.path.exists(os.path.join(mnt, "x"))
            open(os.path.join(remote, "x"), "w").close()
            time.sleep(1.5)
            assert os.listdir(mnt) == []
            assert not os.path.exists(os.path.join(mnt, "x"))
            assert watch_status(mnt)["active"] == "off"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_watcher_survives_a_reconnect() -> None:
    """The connection dies: nothing is vouched for meanwhile, and the next connection
    watches the same directories again, catching up on what changed while it was gone."""
    own = Sshd().start()
    base = tempfile.mkdtemp(prefix="sshvfs-watch-")
    remote = os.path.join(base, "remote")
    os.makedirs(os.path.join(remote, "sub"))
    try:
        options = ["watch=inotify", "cache_timeout=600", "timeout=10"]
        with mounted(own, remote, os.path.join(base, "mnt"), options) as m:
            mnt = m.mountpoint
            sub = os.path.join(mnt, "sub")
            assert os.listdir(sub) == []
            settled(mnt, 2)
            drivers = int(watch_status(mnt)["drivers"])  # type: ignore[call-overload]
            own.kill_sessions()  # the link is gone
            open(os.path.join(remote, "sub", "while-gone"), "w").close()
            wait_for(lambda: status(mnt)["reconnects"] == 1, 30, "a reconnect")
            wait_for(
                lambda: "while-gone" in os.listdir(sub), 10, "a change made while disconnected"
            )
            settled(mnt, 2)
            assert int(watch_status(mnt)["drivers"]) > drivers  # type: ignore[call-overload]
            open(os.path.join(remote, "sub", "after"), "w").close()
            wait_for(lambda: "after" in os.listdir(sub), INOTIFY_BOUND, "a change after it")
    finally:
        own.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def test_the_catch_up_reaches_back_to_first_use_and_no_further(sshd: Sshd) -> None:
    """A tree changed seconds before the mount used it is not reported changed (its
    listings stay: no second round trip for them), while a change made between a listing
    and its directory's watch standing is still found (the catch-up scan)."""
    base = tempfile.mkdtemp(prefix="sshvfs-watch-")
    remote = os.path.join(base, "remote")
    for d in ("old", "fresh"):
        os.makedirs(os.path.join(remote, d))
        for i in range(5):
            open(os.path.join(remote, d, f"f{i}"), "w").close()
    time.sleep(3.0)  # older than first use by more than the catch-up's slack (2 s)
    try:
        options = ["watch=inotify", "cache_timeout=600"]
        with mounted(sshd, remote, os.path.join(base, "mnt"), options) as m:
            mnt = m.mountpoint
            assert len(os.listdir(os.path.join(mnt, "old"))) == 5
            settled(mnt, 2)
            assert watch_status(mnt)["changes"] == 0
            fresh = os.path.join(mnt, "fresh")
            assert len(os.listdir(fresh)) == 5
            open(os.path.join(remote, "fresh", "made-before-the-watch"), "w").close()
            wait_for(
                lambda: "made-before-the-watch" in os.listdir(fresh),
                INOTIFY_BOUND,
                "a change made as the directory was first used",
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_files_made_just_before_first_use_are_not_reported_changed(sshd: Sshd) -> None:
    """The catch-up reaches back 2 s before a directory's first use (clocks differ), so it
    finds files made just before the mount listed them: compared with that listing, they
    are what the mount has, and keep their cached attributes (no round trip each)."""
    base = tempfile.mkdtemp(prefix="sshvfs-watch-")
    remote = os.path.join(base, "remote")
    os.makedirs(os.path.join(remote, "new"))
    for i in range(10):
        with open(os.path.join(remote, "new", f"f{i}"), "w") as f:
            f.write("x" * i)
    try:
        options = ["watch=inotify", "cache_timeout=600"]
        with mounted(sshd, remote, os.path.join(base, "mnt"), options) as m:
            mnt = m.mountpoint
            new = os.path.join(mnt, "new")
            # both listed within 2 s of their making (a directory whose names changed and
            # that the mount did not list loses what it has of them: which ones is unknown)
            assert os.listdir(mnt) == ["new"]
            assert len(os.listdir(new)) == 10
            settled(mnt, 2)  # watched, and caught up
            before = status(mnt)["cache"]
            for i in range(10):
                assert os.stat(os.path.join(new, f"f{i}")).st_size == i
            after = status(mnt)["cache"]
            assert isinstance(before, dict) and isinstance(after, dict)
            assert after["misses"] == before["misses"], (before, after, watch_status(mnt))
            # a real change found by a catch-up still counts: made before the watch stood
            open(os.path.join(remote, "new", "late"), "w").close()
            wait_for(lambda: "late" in os.listdir(new), INOTIFY_BOUND, "a late file")
    finally:
        shutil.rmtree(base, ignore_errors=True)
