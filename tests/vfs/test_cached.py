"""CachingVFS over LocalVFS with an injected clock: TTLs, coherence, invalidation, bounds."""

from __future__ import annotations

import asyncio
import errno
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from sshvfs.vfs.cache.cached import MADE_WINDOW, CachingVFS
from sshvfs.vfs.cache.setattrs import LEARN_DELAY
from sshvfs.vfs.local import LocalVFS
from sshvfs.vfs.types import tree_progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """A VFS proxy that counts calls reaching the backend."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if callable(attr):

            async def call(*a: Any, **kw: Any) -> Any:
                self.calls[name] += 1
                return await attr(*a, **kw)

            return call
        return attr


@pytest.fixture
def setup(workdir: str) -> Iterator[tuple[CachingVFS, Counting, Clock, str]]:
    clock = Clock()
    backend = Counting(LocalVFS(workdir))
    cache = CachingVFS(backend, attr_ttl=30, dir_ttl=30, timer=clock, max_entries=1000)
    yield cache, backend, clock, workdir


def touch(root: str, rel: str, data: bytes = b"") -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


async def test_listing_answers_stats_and_missing_names(setup: Any) -> None:
    cache, backend, clock, root = setup
    for i in range(5):
        touch(root, f"d/f{i}", b"x" * i)
    names = sorted(e.name for e in await cache.readdir(b"/d"))
    assert names == [b"f0", b"f1", b"f2", b"f3", b"f4"]
    assert (await cache.lstat(b"/d/f3")).size == 3
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/d/nope")
    assert backend.calls["lstat"] == 0 and backend.calls["readdir"] == 1
    await cache.readdir(b"/d")
    assert backend.calls["readdir"] == 1
    assert cache.counts()["hits"] >= 3


async def test_stale_within_ttl_fresh_after(setup: Any) -> None:
    cache, backend, clock, root = setup
    touch(root, "d/a")
    await cache.readdir(b"/d")
    touch(root, "d/b")  # changed behind the cache's back
    os.unlink(os.path.join(root, "d", "a"))
    assert [e.name for e in await cache.readdir(b"/d")] == [b"a"]  # stale, by design
    assert (await cache.lstat(b"/d/a")).size == 0
    clock.now += 31
    assert [e.name for e in await cache.readdir(b"/d")] == [b"b"]
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/d/a")


async def test_invalidate_subtree_keeps_others(setup: Any) -> None:
    cache, backend, clock, root = setup
    touch(root, "one/x")
    touch(root, "one/sub/y")
    touch(root, "two/z")
    for d in (b"/one", b"/one/sub", b"/two"):
        await cache.readdir(d)
    seen: list[bytes | None] = []
    cache.listeners.append(seen.append)
    touch(root, "one/sub/new")
    touch(root, "two/new")
    cache.invalidate(b"/one")
    assert seen == [b"/one"]
    assert b"new" in [e.name for e in await cache.readdir(b"/one/sub")]
    assert b"new" not in [e.name for e in await cache.readdir(b"/two")]
    cache.invalidate(None)
    assert b"new" in [e.name for e in await cache.readdir(b"/two")]
    assert seen == [b"/one", None]


async def test_own_changes_are_visible_at_once(setup: Any) -> None:
    cache, backend, clock, root = setup
    touch(root, "d/keep", b"1")
    await cache.readdir(b"/d")
    f = await cache.open(b"/d/new", os.O_WRONLY | os.O_CREAT, 0o644)
    await f.write(0, b"hello")
    assert (await cache.lstat(b"/d/new")).size == 5  # while still open
    await f.close()
    assert {e.name: e.size for e in await cache.readdir(b"/d")} == {b"keep": 1, b"new": 5}
    await cache.rename(b"/d/new", b"/d/renamed")
    names = [e.name for e in await cache.readdir(b"/d")]
    assert sorted(names) == [b"keep", b"renamed"]
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/d/new")
    assert (await cache.lstat(b"/d/renamed")).size == 5
    await cache.chmod(b"/d/renamed", 0o600)
    entry = {e.name: e for e in await cache.readdir(b"/d")}[b"renamed"]
    assert entry.attrs.mode & 0o777 == 0o600
    await cache.truncate(b"/d/renamed", 2)
    assert {e.name: e.size for e in await cache.readdir(b"/d")}[b"renamed"] == 2
    await cache.utimens(b"/d/renamed", 10**9, 2 * 10**9)
    assert (await cache.lstat(b"/d/renamed")).mtime_ns == 2 * 10**9
    await cache.unlink(b"/d/renamed")
    assert [e.name for e in await cache.readdir(b"/d")] == [b"keep"]
    await cache.mkdir(b"/d/sub")
    await cache.symlink(b"keep", b"/d/ln")
    await cache.link(b"/d/keep", b"/d/hard")
    assert sorted(e.name for e in await cache.readdir(b"/d")) == [b"hard", b"keep", b"ln", b"sub"]
    assert (await cache.lstat(b"/d/keep")).nlink == 2
    assert await cache.readlink(b"/d/ln") == b"keep"
    await cache.rmdir(b"/d/sub")
    with pytest.raises(OSError) as e:
        await cache.lstat(b"/d/sub")
    assert e.value.errno == errno.ENOENT


async def _untar_one(cache: CachingVFS, path: bytes, then_write: bool = False) -> Any:
    """What tar does with one file: create, write, chmod, utime, then close."""
    f = await cache.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    await f.fstat()  # every create is followed by one (the mount's CREATE reply)
    await f.write(0, b"x" * 1000)
    await f.write(1000, b"y" * 24)
    await f.setstat(mode=0o640)
    await f.setstat(times=(10**9 + 5, 3 * 10**9 + 7))
    if then_write:
        await f.write(1024, b"z")
    return f


async def test_a_file_made_like_tar_does_is_known_at_close(setup: Any) -> None:
    cache, backend, clock, root = setup
    touch(root, "d/keep")
    await cache.readdir(b"/d")
    f = await _untar_one(cache, b"/d/new")
    before = backend.calls["lstat"]
    await f.close()
    attrs = await cache.lstat(b"/d/new")
    assert backend.calls["lstat"] == before  # nothing asked at close, nor after
    st = os.lstat(os.path.join(root, "d/new"))
    assert attrs[:7] == (
        st.st_mode,
        st.st_size,
        st.st_uid,
        st.st_gid,
        st.st_nlink,
        st.st_mtime_ns,
        st.st_atime_ns,
    )
    assert attrs.ino == st.st_ino
    listed = {e.name: e.attrs for e in await cache.readdir(b"/d")}
    assert listed[b"new"] == attrs


async def test_what_the_file_cannot_know_is_asked_after_close(setup: Any) -> None:
    cache, backend, clock, root = setup
    touch(root, "d/keep")
    # written after its times were set: the mtime is the server's, asked a moment later
    f = await _untar_one(cache, b"/d/late", then_write=True)
    before = backend.calls["lstat"]
    await f.close()
    await asyncio.sleep(LEARN_DELAY + 0.05)
    assert backend.calls["lstat"] == before + 1
    assert (await cache.lstat(b"/d/late")).size == os.lstat(os.path.join(root, "d/late")).st_size
    assert backend.calls["lstat"] == before + 1  # learnt: the stat asked nothing
    # renamed right after its close (an editor's save): the old name is not asked for
    f = await _untar_one(cache, b"/d/late.swp", then_write=True)
    await f.close()
    await cache.rename(b"/d/late.swp", b"/d/late")
    await asyncio.sleep(LEARN_DELAY + 0.05)
    assert backend.calls["lstat"] == before + 1
    # written through another handle meanwhile: what this one knows is not all
    f = await _untar_one(cache, b"/d/shared")
    other = await cache.open(b"/d/shared", os.O_WRONLY)
    await other.write(5000, b"!")
    await other.close()
    await f.close()
    st = os.lstat(os.path.join(root, "d/shared"))
    attrs = await cache.lstat(b"/d/shared")
    assert (attrs.size, attrs.mtime_ns) == (5001, st.st_mtime_ns) != (1024, 3 * 10**9 + 7)


async def test_a_file_being_written_is_known_from_its_own_changes(setup: Any) -> None:
    """While the handle that created a file writes it, its attributes come from what the
    handle did (no round trip, never a size below what was written), and chmod, utimens
    and a chown to what it is ride the handle, not a path operation of their own."""
    cache, backend, clock, root = setup
    os.makedirs(os.path.join(root, "d"))
    f = await cache.open(b"/d/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    created = await f.fstat()
    asked = backend.calls["lstat"]
    await f.write(0, b"x" * 1000)
    attrs = await cache.lstat(b"/d/new")
    assert attrs.size == 1000 and attrs.atime_ns == created.atime_ns
    await cache.chown(b"/d/new", created.uid, -1)  # already so
    await cache.chmod(b"/d/new", 0o640)
    await cache.utimens(b"/d/new", None, 4 * 10**9)  # the mtime alone: the atime is known
    assert (await cache.lstat(b"/d/new")).mode & 0o7777 == 0o640
    assert backend.calls["lstat"] == asked
    assert backend.calls["chmod"] == backend.calls["chown"] == backend.calls["utimens"] == 0
    await f.close()
    st = os.lstat(os.path.join(root, "d/new"))
    assert (st.st_mode & 0o7777, st.st_size, st.st_mtime_ns) == (0o640, 1000, 4 * 10**9)
    assert st.st_atime_ns == created.atime_ns
    assert await cache.lstat(b"/d/new") == created._replace(
        mode=st.st_mode, size=1000, mtime_ns=4 * 10**9
    )
    assert backend.calls["lstat"] == asked  # its times were set last: known at close


@pytest.mark.parametrize("ending", ["read", "open", "atime alone", "rename", "truncate"])
async def test_what_ends_the_record_of_a_file_being_written(setup: Any, ending: str) -> None:
    """After anything the handle cannot account for, the server is asked."""
    cache, backend, clock, root = setup
    os.makedirs(os.path.join(root, "d"))
    f = await cache.open(b"/d/f", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    await f.fstat()
    await f.write(0, b"x" * 10)
    path = b"/d/f"
    asked = backend.calls["lstat"]
    if ending == "read":
        await f.read(0, 1)  # the atime may move
    elif ending == "open":
        await (await cache.open(b"/d/f", os.O_RDONLY)).close()
    elif ending == "atime alone":
        await cache.utimens(b"/d/f", 5 * 10**9, None)  # the mtime after a write is not known
        assert backend.calls["utimens"] == 1
        st = os.lstat(os.path.join(root, "d/f"))
        assert st.st_atime_ns == 5 * 10**9 and st.st_mtime_ns != 5 * 10**9
    elif ending == "rename":
        await cache.rename(b"/d/f", b"/d/g")
        path = b"/d/g"
    else:
        await cache.truncate(b"/d/f", 3)
    attrs = await cache.lstat(path)
    assert backend.calls["lstat"] == asked + 1  # (by the operation, or by this lstat)
    assert attrs.size == os.lstat(os.path.join(root, path.decode().lstrip("/"))).st_size
    await f.close()


async def test_a_file_open_on_a_copy_reads_a_later_write(setup: Any) -> None:
    """A read-only open answered from a fetched copy, then a write through another handle:
    the next read sees it (the copy stops answering; the server's handle takes over)."""
    cache, backend, clock, root = setup
    touch(root, "d/f", b"a" * 3000)
    attrs = await cache.lstat(b"/d/f")
    cache.contents.enabled = True  # (LocalVFS has no bulk fetch: put the copy by hand)
    copy = {b"f": (attrs.mtime_ns // 10**9, b"a" * 3000)}
    cache.contents.copies.put_many(b"/d", copy, clock.now)
    reader = await cache.open(b"/d/f", os.O_RDONLY)
    assert backend.calls["open"] == 0  # answered from the copy
    assert await reader.read(0, 10) == b"a" * 10
    writer = await cache.open(b"/d/f", os.O_WRONLY)
    await writer.write(1000, b"b" * 5000)
    await writer.close()
    assert await reader.read(0, 10_000) == b"a" * 1000 + b"b" * 5000
    assert (await reader.fstat()).size == 6000
    await reader.close()


async def test_rename_directory_moves_cached_children(setup: Any) -> None:
    cache, backend, clock, root = setup
    touch(root, "a/inner/file", b"abc")
    await cache.readdir(b"/a")
    await cache.readdir(b"/a/inner")
    await cache.rename(b"/a", b"/b")
    assert [e.name for e in await cache.readdir(b"/b/inner")] == [b"file"]
    with pytest.raises(FileNotFoundError):
        await cache.readdir(b"/a/inner")
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/a/inner/file")


async def test_negative_cache_and_creation(setup: Any) -> None:
    cache, backend, clock, root = setup
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/ghost")
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/ghost")
    assert backend.calls["lstat"] == 1
    f = await cache.open(b"/ghost", os.O_WRONLY | os.O_CREAT)
    await f.close()
    assert (await cache.lstat(b"/ghost")).size == 0


async def test_names_in_a_directory_made_here(setup: Any) -> None:
    """After our mkdir every name in the directory counts as missing (for the negative TTL),
    except those made there since; a listing still asks, and then knows better."""
    cache, backend, clock, root = setup
    await cache.mkdir(b"/new")
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/new/a")
    assert backend.calls["lstat"] == 0
    f = await cache.open(b"/new/a", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    await f.close()
    await cache.mkdir(b"/new/sub")
    await cache.symlink(b"a", b"/new/ln")
    await cache.rename(b"/new/ln", b"/new/ln2")
    assert (await cache.lstat(b"/new/a")).size == 0
    assert (await cache.lstat(b"/new/sub")).is_dir
    assert (await cache.lstat(b"/new/ln2")).type.name == "SYMLINK"
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/new/ln")
    touch(root, "new/theirs")  # behind our back: unseen by lookups until a listing
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/new/theirs")
    names = sorted(e.name for e in await cache.readdir(b"/new"))
    assert names == [b"a", b"ln2", b"sub", b"theirs"]
    assert (await cache.lstat(b"/new/theirs")).size == 0
    touch(root, "new/sub/late")
    clock.now += MADE_WINDOW * 0.75
    await cache.mkdir(b"/new/sub/more")  # still being filled: the moment goes on
    clock.now += MADE_WINDOW * 0.75
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/new/sub/late")
    clock.now += MADE_WINDOW  # nothing made there since: asked again
    assert (await cache.lstat(b"/new/sub/late")).size == 0
    await cache.mkdir(b"/other")
    cache.invalidate(b"/other")
    touch(root, "other/x")
    assert (await cache.lstat(b"/other/x")).size == 0


async def test_a_listing_for_lookups_keeps_what_the_mount_made_there(setup: Any) -> None:
    """Lookups that miss list their directory (LookupLister) in a listing that does not
    vouch for missing names: in a directory the mount is filling, what it made there still
    answers them (tar's next mkdir there asks nothing); a vouching listing knows better."""
    cache, backend, clock, root = setup
    await cache.mkdir(b"/new")
    await cache.mkdir(b"/new/sub")
    cache.install_listing(b"/new", await LocalVFS(root).readdir(b"/new"), vouches=False)
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/new/sub2")
    assert backend.calls["lstat"] == 0
    assert (await cache.lstat(b"/new/sub")).is_dir  # from the listing
    assert backend.calls["lstat"] == 0
    touch(root, "new/theirs")
    cache.install_listing(b"/new", await LocalVFS(root).readdir(b"/new"))
    assert (await cache.lstat(b"/new/theirs")).size == 0
    assert backend.calls["lstat"] == 0


async def test_making_something_in_a_directory_uses_it(setup: Any) -> None:
    """What the mount makes in a directory is cached: the directory joins the watcher's
    scope (``on_use``) as a lookup that asks the server would have it join."""
    cache, backend, clock, root = setup
    used: list[bytes] = []
    cache.on_use = lambda path, since: used.append(path)
    await cache.mkdir(b"/d")
    await cache.mkdir(b"/d/e")
    f = await cache.open(b"/d/e/f", os.O_WRONLY | os.O_CREAT)
    await f.close()
    await cache.symlink(b"f", b"/d/e/ln")
    assert used == [b"/", b"/d", b"/d/e", b"/d/e"]


async def test_bounded_with_lru_eviction(workdir: str) -> None:
    clock = Clock()
    cache = CachingVFS(LocalVFS(workdir), timer=clock, max_entries=50)
    for i in range(120):
        touch(workdir, f"f{i}")
    for i in range(120):
        await cache.lstat(f"/f{i}".encode())
    counts = cache.counts()
    assert counts["attr_entries"] <= 50
    assert counts["evictions"] >= 70


async def test_cache_off_always_asks(workdir: str) -> None:
    backend = Counting(LocalVFS(workdir))
    cache = CachingVFS(backend, attr_ttl=0, dir_ttl=0, negative_ttl=0)
    touch(workdir, "x")
    for _ in range(3):
        await cache.lstat(b"/x")
        await cache.readdir(b"/")
    assert backend.calls["lstat"] == 3 and backend.calls["readdir"] == 3


async def test_prefetch_fills_listings(setup: Any) -> None:
    cache, backend, clock, root = setup
    for i in range(10):
        touch(root, f"t/d{i % 3}/f{i}")
    count = await cache.prefetch(b"/t")
    assert count == 13
    calls = backend.calls["readdir"]
    for d in (b"/t", b"/t/d0", b"/t/d1", b"/t/d2"):
        await cache.readdir(d)
    assert backend.calls["readdir"] == calls
    assert (await cache.lstat(b"/t/d1/f4")).size == 0
    assert backend.calls["lstat"] == 0


async def test_walk_detection_prefetches_the_tree(setup: Any) -> None:
    cache, backend, clock, root = setup
    for a in range(4):
        for b in range(5):
            touch(root, f"w/d{a}/s{b}/f")
    await cache.readdir(b"/w")
    await cache.readdir(b"/w/d0")
    await cache.readdir(b"/w/d0/s0")  # a walk: the whole of /w comes in one go
    for _ in range(100):
        if cache.prefetches:
            break
        await asyncio.sleep(0.01)
    await cache.readdir(b"/w/d3/s4")  # waits for the prefetch, then answers from it
    calls = backend.calls["readdir"]
    for a in range(4):
        for b in range(5):
            await cache.readdir(f"/w/d{a}/s{b}".encode())
    assert backend.calls["readdir"] == calls == 2  # the third listing waited for the tree
    assert backend.calls["tree"] == 1


async def test_a_walk_of_lookups_prefetches_its_tree(setup: Any) -> None:
    """git status lstat-ing what its index names lists nothing: lookups missed in a
    directory and in two of its subdirectories bring in the tree, and the lookups after
    that are answered from it, with the server's inode numbers."""
    cache, backend, clock, root = setup
    for a in range(4):
        for b in range(5):
            touch(root, f"g/repo/.git/o{a}{b}")
            touch(root, f"g/repo/p{a}/m{b}")
    await cache.lstat(b"/g")  # a path passing through: one lookup in / is not a walk
    await cache.lstat(b"/g/repo")
    await cache.lstat(b"/g/repo/.git")
    await cache.lstat(b"/g/repo/.git/o00")
    await cache.lstat(b"/g/repo/.git/o01")  # .git's second: repo (and .git) join the walk
    assert backend.calls["tree"] == 0
    await cache.lstat(b"/g/repo/p0")
    await cache.lstat(b"/g/repo/p0/m0")
    await cache.lstat(b"/g/repo/p0/m1")  # the third directory: the walk's root is the repo
    assert backend.calls["tree"] == 1
    before = backend.calls["lstat"]
    for a in range(4):
        for b in range(5):
            path = f"g/repo/p{a}/m{b}"
            attrs = await cache.lstat(b"/" + path.encode())
            assert attrs.ino == os.lstat(os.path.join(root, path)).st_ino
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/g/repo/p3/missing")
    assert backend.calls["lstat"] == before
    assert backend.calls["tree"] == 1
    # a lone lookup per directory elsewhere stays a lookup
    for a in range(3):
        touch(root, f"h/d{a}/f")
        await cache.lstat(f"/h/d{a}/f".encode())
    assert backend.calls["tree"] == 1


async def test_a_walk_of_reads_prefetches_its_tree_once(setup: Any) -> None:
    """A walk of reads (see ContentPrefetcher) asks for its root's tree: its listings then
    answer lookups, missing names too; a root already covered is not fetched again."""
    cache, backend, clock, root = setup
    for i in range(6):
        touch(root, f"g/.git/d{i % 2}/f{i}")
    assert cache.walk_reads(b"/g/.git")
    assert not cache.walk_reads(b"/g/.git/d0")  # in flight, covering it
    for _ in range(100):
        if not cache._prefetching:
            break
        await asyncio.sleep(0.01)
    assert backend.calls["tree"] == 1
    assert not cache.walk_reads(b"/g/.git")  # landed within the listing TTL
    assert (await cache.lstat(b"/g/.git/d1/f3")).size == 0
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/g/.git/MERGE_HEAD")
    assert backend.calls["lstat"] == 0
    clock.now += 31
    assert cache.walk_reads(b"/g/.git")  # the TTL is over: again


async def test_fetch_racing_an_invalidation_is_not_installed(workdir: str) -> None:
    gate = asyncio.Event()

    class Slow(LocalVFS):
        async def readdir(self, path: bytes) -> list[Any]:
            entries = await super().readdir(path)
            await gate.wait()  # the listing is taken, then held up in flight
            return entries

    cache = CachingVFS(Slow(workdir), timer=Clock())
    touch(workdir, "d/old")
    async with asyncio.TaskGroup() as group:
        group.create_task(cache.readdir(b"/d"))
        await asyncio.sleep(0.05)
        touch(workdir, "d/new")
        cache.invalidate(b"/d")
        gate.set()
    assert sorted(e.name for e in await cache.readdir(b"/d")) == [b"new", b"old"]


class Streaming(LocalVFS):
    """A tree listing that hands out directories early (as the exec lister does), then
    holds the end back until told, and ends as told."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.release = asyncio.Event()
        self.fail = False

    async def tree(self, path: bytes, max_entries: int) -> dict[bytes, list[Any]] | None:
        listings = await super().tree(path, max_entries)
        assert listings is not None
        progress = tree_progress.get()
        assert progress is not None
        for directory in sorted(listings):
            if directory != path and listings[directory]:
                progress(directory, listings[directory])
        await self.release.wait()
        if self.fail:
            raise OSError(errno.EIO, "find failed half-way")
        return listings


@pytest.mark.parametrize("fail", [False, True])
async def test_a_walk_gets_directories_before_the_prefetch_ends(workdir: str, fail: bool) -> None:
    backend = Streaming(workdir)
    backend.fail = fail
    cache = CachingVFS(backend, attr_ttl=30, dir_ttl=30, timer=Clock())
    for a in range(3):
        for b in range(3):
            touch(workdir, f"w/d{a}/s{b}/f{a}{b}")
    for path in (b"/w", b"/w/d0", b"/w/d0/s0"):  # a walk: /w is prefetched
        await cache.readdir(path)
    async with asyncio.timeout(5):  # the prefetch has not ended, yet this is there
        assert [e.name for e in await cache.readdir(b"/w/d2/s1")] == [b"f21"]
    assert cache.listed(b"/w/d1/s2") is not None
    backend.release.set()
    for _ in range(100):
        if not cache._prefetching:
            break
        await asyncio.sleep(0.01)
    # a failed prefetch takes back what it handed out; a good one keeps all of it
    assert (cache.listed(b"/w/d1/s2") is None) == fail
    assert (cache.listed(b"/w/d1") is None) == fail


async def test_a_lookup_walk_lists_its_directory_but_not_for_missing_names(setup: Any) -> None:
    """Three lookups missed in a small directory list it; the next lookups of names it has
    need no LSTAT, but a name it lacks is asked of the server: it may have been created
    there since (lookups asked before there were such listings, and still do)."""
    cache, backend, clock, root = setup
    for i in range(10):
        touch(root, f"d/f{i}", b"x" * i)
    await cache.lstat(b"/d")
    for i in range(3):
        assert (await cache.lstat(f"/d/f{i}".encode())).size == i
    for _ in range(100):  # the listing lands in the background
        if cache.cached_listing(b"/d") is not None:
            break
        await asyncio.sleep(0.01)
    assert backend.calls["readdir"] == 1 and cache.counts()["lookup_listings"] == 1
    before = backend.calls["lstat"]
    for i in range(3, 10):
        assert (await cache.lstat(f"/d/f{i}".encode())).size == i
    assert backend.calls["lstat"] == before
    touch(root, "d/new", b"made behind the cache's back")
    assert (await cache.lstat(b"/d/new")).size == 28
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/d/nope")
    assert backend.calls["lstat"] == before + 2


async def test_a_miss_is_vouched_for_as_long_as_what_answers_it(setup: Any) -> None:
    """missing_for: the time left of the entry that answers a lookup "missing" (what the
    kernel may keep the miss for): a negative entry, a listing, a directory made here."""
    cache, backend, clock, root = setup
    touch(root, "d/a")
    assert cache.missing_for(b"/d/a") == 0.0
    with pytest.raises(FileNotFoundError):
        await cache.lstat(b"/d/none")
    clock.now += 10
    assert cache.missing_for(b"/d/none") == pytest.approx(20)  # negative entry, 30 s TTL
    await cache.readdir(b"/d")
    clock.now += 5
    assert cache.missing_for(b"/d/other") == pytest.approx(25)  # the listing's time left
    assert cache.missing_for(b"/d/a") == 0.0
    await cache.mkdir(b"/m")
    assert 0 < cache.missing_for(b"/m/x") <= MADE_WINDOW  # made here: a short window
    clock.now += MADE_WINDOW + 1
    assert cache.missing_for(b"/m/x") == 0.0


class Stalled(LocalVFS):
    """A tree listing that hands out nothing until told to end."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.release = asyncio.Event()
        self.lstats = 0

    async def lstat(self, path: bytes) -> Any:
        self.lstats += 1
        return await super().lstat(path)

    async def tree(self, path: bytes, max_entries: int) -> dict[bytes, list[Any]] | None:
        await self.release.wait()
        return await super().tree(path, max_entries)


async def test_a_lookup_waits_a_bounded_time_for_a_prefetch(
    workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk spotted from lookups may have too high a root: its lookups wait for their
    directory's part at most LOOKUP_WAIT, once per directory, then ask the server."""
    from sshvfs.vfs.cache import treeprefetch

    monkeypatch.setattr(treeprefetch, "LOOKUP_WAIT", 0.05)
    backend = Stalled(workdir)
    cache = CachingVFS(backend, attr_ttl=30, dir_ttl=30, timer=Clock())
    for a in range(3):
        for b in range(4):
            touch(workdir, f"r/d{a}/f{b}")
    await cache.lstat(b"/r")
    await cache.lstat(b"/r/d0")
    await cache.lstat(b"/r/d0/f0")
    await cache.lstat(b"/r/d0/f1")
    await cache.lstat(b"/r/d1")
    await cache.lstat(b"/r/d1/f0")
    assert cache.prefetches == 0
    before = backend.lstats
    t0 = asyncio.get_running_loop().time()
    # d1's second miss: the walk's third directory, /r is prefetched (and stalls)
    assert (await cache.lstat(b"/r/d1/f1")).size == 0  # waited, then asked
    assert cache.prefetches == 1 and cache._prefetching
    assert (await cache.lstat(b"/r/d1/f2")).size == 0  # asked at once
    assert (await cache.lstat(b"/r/d1/f3")).size == 0
    waited = asyncio.get_running_loop().time() - t0
    assert backend.lstats == before + 2  # f3 from d1's own listing (its third miss)
    assert 0.05 <= waited < 1.0
    backend.release.set()
    for _ in range(100):
        if not cache._prefetching:
            break
        await asyncio.sleep(0.01)
    before = backend.lstats
    assert (await cache.lstat(b"/r/d2/f3")).size == 0  # from the landed tree
    assert backend.lstats == before


class _SaysAfterChange(LocalVFS):
    """A backend whose mkdir and setattrs say what the name is after them (as SftpVFS's
    ``*_known`` do, in the same round trip), each held until ``go`` is set."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.go = asyncio.Event()
        self.go.set()

    async def _then(self, path: bytes, change: Any) -> Any:
        await change
        said = await self.lstat(path)
        await self.go.wait()
        return said

    async def mkdir_known(self, path: bytes, mode: int = 0o755) -> Any:
        return await self._then(path, self.mkdir(path, mode))

    async def chmod_known(self, path: bytes, mode: int) -> Any:
        return await self._then(path, self.chmod(path, mode))

    async def chown_known(self, path: bytes, uid: int, gid: int) -> Any:
        return await self._then(path, self.chown(path, uid, gid))

    async def utimens_known(self, path: bytes, atime_ns: Any, mtime_ns: Any) -> Any:
        return await self._then(path, self.utimens(path, atime_ns, mtime_ns))


async def test_mkdir_and_setattrs_learn_the_name_in_their_round_trip(workdir: str) -> None:
    """tar makes a directory, fills it (its attributes drop), then sets its times, owner
    and mode: the backend says what the directory is with each change, so neither the
    kernel's lookup after the mkdir nor anything after a setattr asks again; unless the
    name changed through the mount meanwhile."""
    backend = Counting(_SaysAfterChange(workdir))
    cache = CachingVFS(backend, attr_ttl=30, dir_ttl=30, max_entries=1000)
    real = os.path.join(workdir, "d")

    def same(attrs: Any) -> bool:
        st = os.lstat(real)
        return (attrs.mode, attrs.uid, attrs.gid, attrs.mtime_ns) == (
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
        )

    await cache.mkdir(b"/d", 0o700)
    assert same(await cache.lstat(b"/d")) and backend.calls["lstat"] == 0
    st = os.lstat(real)
    for change in (
        lambda: cache.utimens(b"/d", 10**9, 2 * 10**9),
        lambda: cache.chown(b"/d", st.st_uid, st.st_gid),
        lambda: cache.chmod(b"/d", 0o755),
    ):
        f = await cache.open(b"/d/f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        await f.close()
        await cache.unlink(b"/d/f")  # the directory's attributes are unknown now
        await change()
        assert same(await cache.lstat(b"/d")) and backend.calls["lstat"] == 0
    # a change through the mount while the answer is on its way: asked once more
    cache._attrs.pop(b"/d", None)
    backend.inner.go.clear()
    changing = asyncio.ensure_future(cache.utimens(b"/d", 10**9, 3 * 10**9))
    await asyncio.sleep(0.01)
    cache._mark(b"/d")  # (what another request changing /d does first)
    backend.inner.go.set()
    await changing
    assert same(await cache.lstat(b"/d")) and backend.calls["lstat"] == 1


async def test_a_chown_that_changes_nothing_is_not_sent_for_what_the_mount_owns(
    workdir: str,
) -> None:
    """cp -a and tar give each directory its owner back: already so, and the owner is
    whom the mount acts as (what it makes is theirs), so the server would only move the
    ctime. Another owner, another id or a set-id bit: sent."""
    backend = Counting(_SaysAfterChange(workdir))
    cache = CachingVFS(backend, attr_ttl=30, dir_ttl=30, max_entries=1000)
    await cache.mkdir(b"/d", 0o755)
    st = os.lstat(os.path.join(workdir, "d"))
    assert cache.made_by == st.st_uid
    await cache.chown(b"/d", st.st_uid, st.st_gid)
    await cache.chown(b"/d", -1, st.st_gid)
    assert backend.calls["chown"] + backend.calls["chown_known"] == 0
    await cache.chown(b"/d", st.st_uid, st.st_gid + 1)
    assert backend.calls["chown"] + backend.calls["chown_known"] == 1
    assert os.lstat(os.path.join(workdir, "d")).st_gid == st.st_gid + 1
    await cache.chown(b"/d", st.st_uid, st.st_gid)
    await cache.chmod(b"/d", 0o2755)
    await cache.chown(b"/d", st.st_uid, st.st_gid)  # may clear the set-id bit: sent
    assert backend.calls["chown"] + backend.calls["chown_known"] == 3
    await cache.chmod(b"/d", 0o755)
    cache.made_by = st.st_uid + 1  # someone else's: the server may refuse
    await cache.chown(b"/d", st.st_uid, st.st_gid)
    assert backend.calls["chown"] + backend.calls["chown_known"] == 4


class _SaysAfterRename(LocalVFS):
    """A backend that says what a renamed file is (as SftpVFS does, one round trip),
    each such rename held until ``go`` is set."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.go = asyncio.Event()
        self.go.set()

    async def rename_known(self, old: bytes, new: bytes) -> Any:
        await self.rename(old, new)
        said = await self.lstat(new)
        await self.go.wait()
        return said


async def test_a_save_s_rename_learns_the_new_name_in_its_round_trip(workdir: str) -> None:
    """An editor's save renames a file just written (its attributes dropped by the
    writes): the backend says what the new name is with the rename, so the next save's
    rename (the kernel always revalidates a rename's target) asks nothing; unless the new
    name changed through the mount meanwhile."""
    backend = Counting(_SaysAfterRename(workdir))
    cache = CachingVFS(backend, attr_ttl=30, dir_ttl=30, max_entries=1000)
    for name, change_between in ((b"/a", False), (b"/b", True)):
        f = await cache.open(name + b".swp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        await f.write(0, b"new text")
        await f.close()
        await cache.lstat(name + b".swp")  # what a close learns, the writes drop again:
        g = await cache.open(name + b".swp", os.O_WRONLY)
        await g.write(8, b"!")
        await g.close()
        cache._attrs.pop(name + b".swp", None)  # (unknown, as when the close is in flight)
        backend.inner.go.clear()
        renaming = asyncio.ensure_future(cache.rename(name + b".swp", name))
        await asyncio.sleep(0.01)
        if change_between:
            await cache.chmod(name, 0o600)  # what the rename's LSTAT said is older now
        backend.inner.go.set()
        await renaming
        before = backend.calls["lstat"]
        attrs = await cache.lstat(name)
        st = os.lstat(os.path.join(workdir, name.decode().lstrip("/")))
        assert (attrs.size, attrs.mtime_ns, attrs.mode) == (9, st.st_mtime_ns, st.st_mode)
        assert backend.calls["lstat"] == before + (1 if change_between else 0)
