"""Changes reported from the server (a watcher) drop exactly what they make stale, and the
mount's own changes coming back are not dropped; lookup misses follow the vouching."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from sshvfs.vfs.cache.cached import CachingVFS
from sshvfs.vfs.cache.remotechanges import OWN_WINDOW
from sshvfs.vfs.local import LocalVFS
from sshvfs.vfs.types import Change

from .test_cached import Clock, Counting


@pytest.fixture
def setup(workdir: str) -> Iterator[tuple[CachingVFS, Counting, Clock, str]]:
    clock = Clock()
    backend = Counting(LocalVFS(workdir))
    cache = CachingVFS(backend, attr_ttl=300, dir_ttl=300, timer=clock, max_entries=1000)
    os.makedirs(os.path.join(workdir, "d"))
    for name in ("a", "b"):
        with open(os.path.join(workdir, "d", name), "w") as f:
            f.write(name)
    yield cache, backend, clock, workdir


async def test_a_created_name_shows_once_reported(setup: Any) -> None:
    cache, backend, clock, root = setup
    assert sorted(e.name for e in (await cache.readdir(b"/d"))) == [b"a", b"b"]
    open(os.path.join(root, "d", "new"), "w").close()
    assert sorted(e.name for e in (await cache.readdir(b"/d"))) == [b"a", b"b"]  # cached
    kept = cache.remote.apply([Change(b"/d/new", "name")])
    assert kept == [Change(b"/d/new", "name")]
    assert sorted(e.name for e in (await cache.readdir(b"/d"))) == [b"a", b"b", b"new"]
    assert (await cache.lstat(b"/d/new")).size == 0


async def test_a_modified_file_is_asked_again_and_nothing_else(setup: Any) -> None:
    cache, backend, clock, root = setup
    (await cache.readdir(b"/d"))
    assert (await cache.lstat(b"/d/a")).size == 1
    with open(os.path.join(root, "d", "a"), "w") as f:
        f.write("longer")
    cache.remote.apply([Change(b"/d/a", "entry")])
    before = dict(backend.calls)
    assert (await cache.lstat(b"/d/a")).size == 6
    assert (await cache.lstat(b"/d/b")).size == 1  # still from the listing
    assert backend.calls["lstat"] - before.get("lstat", 0) == 1


async def test_the_mounts_own_changes_are_skipped_for_a_while(setup: Any) -> None:
    cache, backend, clock, root = setup
    (await cache.readdir(b"/d"))
    (await cache.chmod(b"/d/a", 0o600))
    assert cache.remote.apply([Change(b"/d/a", "entry")]) == []
    assert cache.remote.own_skipped == 1
    clock.now += OWN_WINDOW + 0.1
    assert cache.remote.apply([Change(b"/d/a", "entry")]) == [Change(b"/d/a", "entry")]


async def test_a_late_report_is_judged_by_when_its_scan_looked(setup: Any) -> None:
    """A poll that looked within the window but landed after it (a loaded machine, its
    changed directories listed again first) still reports the mount's own change."""
    cache, backend, clock, root = setup
    (await cache.readdir(b"/d"))
    (await cache.chmod(b"/d/a", 0o600))
    clock.now += OWN_WINDOW + 1.0  # the report arrives late...
    late = [Change(b"/d/a", "entry")]
    assert cache.remote.apply(late, age=1.5) == []  # ...from a scan that began in time
    assert cache.remote.apply(late, age=0.5) == late  # one that began after the window


async def test_a_directory_gone_drops_its_subtree(setup: Any) -> None:
    cache, backend, clock, root = setup
    os.makedirs(os.path.join(root, "d", "sub"))
    open(os.path.join(root, "d", "sub", "x"), "w").close()
    (await cache.readdir(b"/d/sub"))
    (await cache.lstat(b"/d/sub/x"))
    os.remove(os.path.join(root, "d", "sub", "x"))
    os.rmdir(os.path.join(root, "d", "sub"))
    cache.remote.apply([Change(b"/d/sub", "gone")])
    with pytest.raises(FileNotFoundError):
        (await cache.lstat(b"/d/sub/x"))


async def test_a_listing_change_without_names_is_told_apart_by_a_new_listing(setup: Any) -> None:
    cache, backend, clock, root = setup
    (await cache.readdir(b"/d"))
    (await cache.unlink(b"/d/b"))  # the mount's own: the poll will see d changed
    open(os.path.join(root, "d", "theirs"), "w").close()
    fresh = await LocalVFS(root).readdir(b"/d")
    kept = cache.remote.apply([Change(b"/d", "dir")], {b"/d": fresh})
    assert kept == [Change(b"/d/theirs", "name")]  # b's removal was the mount's own
    assert sorted(e.name for e in (await cache.readdir(b"/d"))) == [b"a", b"theirs"]
    # without a new listing, every name there is asked again
    cache.remote.apply([Change(b"/d", "dir")])
    before = backend.calls["lstat"]
    (await cache.lstat(b"/d/a"))
    assert backend.calls["lstat"] == before + 1


async def test_a_listing_change_with_no_cached_listing_keeps_the_names_it_confirms(
    setup: Any,
) -> None:
    """A poll's "dir" report of a directory whose listing the mount no longer holds: the
    fresh listing says which cached names changed; the others keep their attributes."""
    cache, backend, clock, root = setup
    open(os.path.join(root, "d", "c"), "w").close()
    for name in (b"a", b"b", b"c"):
        (await cache.lstat(b"/d/" + name))
    with pytest.raises(FileNotFoundError):
        (await cache.lstat(b"/d/late"))
    assert cache.cached_listing(b"/d") is None
    with open(os.path.join(root, "d", "b"), "w") as f:
        f.write("longer")
    os.unlink(os.path.join(root, "d", "c"))
    open(os.path.join(root, "d", "late"), "w").close()
    fresh = await LocalVFS(root).readdir(b"/d")
    kept = cache.remote.apply([Change(b"/d", "dir")], {b"/d": fresh})
    assert kept[0] == Change(b"/d", "dir")  # the directory itself, and the kernel's copy
    assert sorted(kept[1:]) == [
        Change(b"/d/b", "entry"),
        Change(b"/d/c", "name", went=True),
        Change(b"/d/late", "name"),
    ]
    before = backend.calls["lstat"]
    assert (await cache.lstat(b"/d/a")).size == 1  # confirmed: still cached
    assert backend.calls["lstat"] == before
    assert (await cache.lstat(b"/d/b")).size == 6
    assert (await cache.lstat(b"/d/late")).size == 0
    with pytest.raises(FileNotFoundError):
        (await cache.lstat(b"/d/c"))
    assert backend.calls["lstat"] == before + 3


async def test_misses_are_asked_unless_the_directory_is_vouched_for(setup: Any) -> None:
    cache, backend, clock, root = setup
    vouched: set[bytes] = set()
    cache.vouch = lambda path, asked: path in vouched
    (await cache.readdir(b"/d"))
    with pytest.raises(FileNotFoundError):
        (await cache.lstat(b"/d/late"))
    open(os.path.join(root, "d", "late"), "w").close()
    assert (await cache.lstat(b"/d/late")).size == 0  # asked: not vouched for
    vouched.add(b"/d")
    with pytest.raises(FileNotFoundError):
        (await cache.lstat(b"/d/later"))
    open(os.path.join(root, "d", "later"), "w").close()
    before = backend.calls["lstat"]
    with pytest.raises(FileNotFoundError):
        (await cache.lstat(b"/d/later"))  # vouched: the listing (and event-free) answers
    assert backend.calls["lstat"] == before


async def test_use_is_reported_for_directories_fetched(setup: Any) -> None:
    cache, backend, clock, root = setup
    used: list[bytes] = []
    cache.on_use = lambda path, asked: used.append(path)
    (await cache.readdir(b"/d"))
    (await cache.lstat(b"/d"))
    assert b"/d" in used and b"/" in used
    n = len(used)
    (await cache.readdir(b"/d"))  # a hit: nothing new
    assert len(used) == n


async def test_a_directory_the_mount_is_filling_is_its_own_change(setup: Any) -> None:
    """tar makes a directory and fills it; the watcher's catch-up of it reports it changed,
    with a fresh listing of only what the mount made there: the mount keeps knowing that
    nothing else is there (a lookup of the next name asks nothing). A name in that listing
    the mount did not make ends that."""
    cache, backend, clock, root = setup
    await cache.mkdir(b"/new", 0o755)
    for name in (b"/new/f", b"/new/g"):
        f = await cache.open(name, os.O_WRONLY | os.O_CREAT)
        await f.close()
    before = backend.calls["lstat"]
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/new/h")
    assert backend.calls["lstat"] == before  # a directory the mount made
    fresh = await LocalVFS(root).readdir(b"/new")
    assert cache.remote.apply([Change(b"/new", "dir")], {b"/new": fresh}) == []
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/new/h")
    assert backend.calls["lstat"] == before
    open(os.path.join(root, "new", "other"), "w").close()
    fresh = await LocalVFS(root).readdir(b"/new")
    kept = cache.remote.apply([Change(b"/new", "dir")], {b"/new": fresh})
    assert Change(b"/new", "dir") in kept
    assert (await cache.lstat(b"/new/other")).size == 0
    assert backend.calls["lstat"] == before + 1


async def _made_tree(cache: CachingVFS) -> None:
    """/t/sub/f made through the mount, its attributes cached."""
    await cache.mkdir(b"/t", 0o755)
    await cache.mkdir(b"/t/sub", 0o755)
    f = await cache.open(b"/t/sub/f", os.O_WRONLY | os.O_CREAT)
    await f.close()
    assert (await cache.lstat(b"/t/sub/f")).size == 0


async def test_a_name_reported_gone_takes_what_is_cached_below_it(setup: Any) -> None:
    """A directory removed on the server, reported by its parent's watch (a name that
    went): everything the caches hold below it goes too, listed or not."""
    cache, backend, clock, root = setup
    await _made_tree(cache)
    clock.now += OWN_WINDOW + 1  # no longer the mount's own
    shutil.rmtree(os.path.join(root, "t"))  # on the server
    assert cache.cached_listing(b"/t") is None
    cache.remote.apply([Change(b"/t", "name")])
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/t/sub/f")
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/t/sub")


async def test_a_directory_made_again_has_nothing_below_it(setup: Any) -> None:
    """A tree removed on the server while reports of it still count as the mount's own:
    making the directory again through the mount forgets whatever was below it."""
    cache, backend, clock, root = setup
    await _made_tree(cache)
    shutil.rmtree(os.path.join(root, "t"))  # on the server
    assert cache.remote.apply([Change(b"/t", "name")]) == []  # its own, it seems
    await cache.mkdir(b"/t", 0o755)
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/t/sub/f")
    await cache.mkdir(b"/t/sub", 0o755)
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/t/sub/f")


async def test_a_name_the_mount_made_and_the_server_removed_goes_at_once(setup: Any) -> None:
    """Reports of the mount's own names count as its own for a moment (their events come
    back), but a name reported gone only if the mount removed it: one it made, removed
    on the server right after, goes at once. The mount's own removal, and a save's rename
    of the name away and back (its events come after), are its own."""
    cache, backend, clock, root = setup
    f = await cache.open(b"/d/made", os.O_WRONLY | os.O_CREAT)
    await f.close()
    assert (await cache.lstat(b"/d/made")).size == 0
    assert cache.remote.apply([Change(b"/d/made", "name")]) == []  # its creation
    os.unlink(os.path.join(root, "d", "made"))
    gone = Change(b"/d/made", "name", went=True)
    assert cache.remote.apply([gone]) == [gone]
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/d/made")
    await cache.rename(b"/d/a", b"/d/a~")  # an editor's backup, then the new file
    f = await cache.open(b"/d/a", os.O_WRONLY | os.O_CREAT)
    await f.write(0, b"new")
    await f.close()
    assert (await cache.lstat(b"/d/a")).size == 3
    moved = [Change(b"/d/a", "name", went=True), Change(b"/d/a~", "name"), Change(b"/d/a", "name")]
    assert cache.remote.apply(moved) == []
    await cache.unlink(b"/d/a~")
    assert cache.remote.apply([Change(b"/d/a~", "name", went=True)]) == []
    before = backend.calls["lstat"]
    assert (await cache.lstat(b"/d/a")).size == 3
    assert backend.calls["lstat"] == before
