"""The kernel's own copy of directory listings (``cache_readdir``, see sshvfs.fuse.dirstreams):
warm listings never reach the daemon, yet the copy is never older than the listing TTL, is
dropped by the mount's own changes and by invalidation, and concurrent readers of one
directory each get a whole, duplicate-free listing."""

from __future__ import annotations

import json
import os
import stat
import threading
import time

import pytest

from sshvfs.fuse.dirserver import PREPARED_FOR

from ..mounting import MountProcess, mounted
from ..sshd import Sshd
from .test_caching import asked, touch_invalidate
from .test_posix import fresh

pytestmark = pytest.mark.mount

#: what is tested here is the kernel's copy against the caches' own promise (the TTL, the
#: mount's changes, invalidation): no watcher. With one, the catch-up scan of a directory
#: the test changes on the server right after its first use lands at any moment and
#: (rightly) drops the kernel's copy; tests/mount/test_watch.py has the watcher.
MOUNT_OPTIONS = ["watch=no"]


def test_warm_listing_stays_in_the_kernel(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    root = module_mount[1].mountpoint
    for i in range(300):
        open(os.path.join(remote, f"f{i:03}"), "w").close()
    first = sorted(os.listdir(mnt))
    assert len(first) == 300
    os.listdir(mnt)  # may refresh the directory's own attributes once
    before = asked(root)
    for _ in range(5):
        assert sorted(os.listdir(mnt)) == first
    assert asked(root) == before  # five listings, not one request to the daemon
    # the mount's own changes drop the kernel's copy at once
    open(os.path.join(mnt, "made-here"), "w").close()
    assert "made-here" in os.listdir(mnt)
    os.unlink(os.path.join(mnt, "f000"))
    os.rename(os.path.join(mnt, "f001"), os.path.join(mnt, "renamed"))
    os.mkdir(os.path.join(mnt, "newdir"))
    names = set(os.listdir(mnt))
    assert {"made-here", "renamed", "newdir"} <= names
    assert not {"f000", "f001"} & names
    # and so does an invalidation, for changes made on the server
    open(os.path.join(remote, "from-server"), "w").close()
    assert "from-server" not in os.listdir(mnt)
    touch_invalidate(root)
    assert "from-server" in os.listdir(mnt)


def test_a_missing_name_stays_in_the_kernel_until_dropped(
    module_mount: tuple[str, MountProcess],
) -> None:
    """A lookup of a missing name the caches vouch for is kept by the kernel (a negative
    entry): asked again, it never reaches the daemon; created through the mount it shows at
    once; created on the server it shows after an invalidation (as every cached name)."""
    remote, mnt = fresh(module_mount)
    root = module_mount[1].mountpoint
    open(os.path.join(remote, "there"), "w").close()
    touch_invalidate(root)
    for name in ("nope", "later", "mine"):
        assert not os.path.exists(os.path.join(mnt, name))
    before = asked(root)
    for _ in range(5):
        for name in ("nope", "later", "mine"):
            assert not os.path.exists(os.path.join(mnt, name))
    assert asked(root) == before  # fifteen misses, not one request to the daemon
    with open(os.path.join(root, ".sshvfs", "status")) as f:
        assert json.load(f)["kernel_misses"] >= 3
    with open(os.path.join(mnt, "mine"), "w") as f:
        f.write("made here")
    assert os.stat(os.path.join(mnt, "mine")).st_size == 9
    os.rename(os.path.join(mnt, "mine"), os.path.join(mnt, "later"))
    assert os.stat(os.path.join(mnt, "later")).st_size == 9
    assert not os.path.exists(os.path.join(mnt, "mine"))
    open(os.path.join(remote, "nope"), "w").close()
    assert not os.path.exists(os.path.join(mnt, "nope"))  # the caches' promise, no watcher
    touch_invalidate(root)
    assert os.path.exists(os.path.join(mnt, "nope"))


def test_concurrent_readers_get_whole_listings(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    names = {f"entry-with-a-longish-name-{i:05}" for i in range(4000)}
    for name in names:
        open(os.path.join(remote, name), "w").close()
    touch_invalidate(module_mount[1].mountpoint)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(3):
                results.append(os.listdir(mnt))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def writer() -> None:
        try:
            for i in range(40):
                open(os.path.join(mnt, f"added-{i}"), "w").close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)] + [
        threading.Thread(target=writer)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == 12
    for listing in results:
        assert len(listing) == len(set(listing)), "an entry was listed twice"
        assert names <= set(listing), "an entry that never went away was missing"
    # a reader that stops early leaves nothing behind that confuses the next one
    with os.scandir(mnt) as it:
        next(it)
    assert set(os.listdir(mnt)) == names | {f"added-{i}" for i in range(40)}


def _odd_files(remote: str) -> None:
    """Files whose every attribute differs from the defaults a reply starts from."""
    os.makedirs(remote)
    with open(os.path.join(remote, "big"), "wb") as f:
        f.truncate(5 * 2**30 + 3)  # sparse: size past 32 bits, odd blocks
    with open(os.path.join(remote, "small"), "wb") as f:
        f.write(b"x" * 513)
    os.link(os.path.join(remote, "small"), os.path.join(remote, "small-link"))
    os.chmod(os.path.join(remote, "small"), 0o4751)
    os.mkdir(os.path.join(remote, "sticky"), 0o1777)
    os.chmod(os.path.join(remote, "sticky"), 0o1777)
    os.symlink("small", os.path.join(remote, "sym"))
    os.mkfifo(os.path.join(remote, "fifo"))
    os.chown(os.path.join(remote, "small"), 4242, 4343)
    os.utime(os.path.join(remote, "big"), (1_234_567_890, 4_000_000_123))  # past 2038
    os.utime(os.path.join(remote, "small"), ns=(1_500_000_000_999_999_999, 17))


@pytest.mark.parametrize("mapped", [False, True], ids=["as-is", "uid-gid-umask"])
def test_listed_attributes_are_the_servers(sshd: Sshd, workdir: str, mapped: bool) -> None:
    """``ls -l`` after a listing asks the daemon nothing: every attribute comes from the
    readdirplus reply, and must be what a stat through the mount says (and the server's)."""
    remote = os.path.join(workdir, "remote")
    _odd_files(remote)
    options = ["uid=1234,gid=4321,umask=027"] if mapped else []
    with mounted(sshd, remote, os.path.join(workdir, "mnt"), options) as m:
        names = sorted(os.listdir(m.mountpoint))
        assert names == sorted(os.listdir(remote))
        before = asked(m.mountpoint)
        listed = {n: os.lstat(os.path.join(m.mountpoint, n)) for n in names}
        assert asked(m.mountpoint) == before  # all of it from the listing
        for name, got in listed.items():
            want = os.lstat(os.path.join(remote, name))
            mode = want.st_mode & ~0o027 if mapped else want.st_mode
            uid, gid = (1234, 4321) if mapped else (want.st_uid, want.st_gid)
            assert (got.st_mode, got.st_uid, got.st_gid) == (mode, uid, gid), name
            assert (got.st_size, got.st_nlink) == (want.st_size, want.st_nlink), name
            assert got.st_blocks == (want.st_size + 511) // 512, name
            # SFTP times are whole seconds; ctime is the mtime (SFTP has none)
            assert got.st_mtime_ns == want.st_mtime_ns // 10**9 * 10**9, name
            assert got.st_ctime_ns == got.st_mtime_ns, name
            assert got.st_atime_ns == want.st_atime_ns // 10**9 * 10**9, name
        assert stat.S_ISFIFO(listed["fifo"].st_mode) and listed["small"].st_nlink == 2
        touch_invalidate(m.mountpoint)  # and a stat of each, asked afresh, says the same
        for name, got in listed.items():
            again = os.lstat(os.path.join(m.mountpoint, name))
            assert again.st_mtime_ns == got.st_mtime_ns and again.st_blocks == got.st_blocks
            assert (again.st_mode, again.st_uid, again.st_size) == (
                got.st_mode,
                got.st_uid,
                got.st_size,
            ), name


def one_file_dir(workdir: str) -> tuple[str, str]:
    """A server-side tree ``d/a`` and a mountpoint for it."""
    remote, mnt = os.path.join(workdir, "remote"), os.path.join(workdir, "mnt")
    os.makedirs(os.path.join(remote, "d"))
    open(os.path.join(remote, "d", "a"), "w").close()
    return remote, mnt


def test_kernel_copy_expires_with_the_ttl(sshd: Sshd, workdir: str) -> None:
    remote, mnt = one_file_dir(workdir)
    ttl = 2.0
    # no watcher: it would tell the kernel at once; the timeout is what is tested here
    with mounted(sshd, remote, mnt, [f"cache_timeout={ttl:g}", "watch=no"]):
        d = os.path.join(mnt, "d")
        listed = time.monotonic()
        assert os.listdir(d) == ["a"]
        st = os.stat(os.path.join(remote, "d"))
        open(os.path.join(remote, "d", "b"), "w").close()
        # keep the directory's mtime: the kernel cannot notice the change by itself
        os.utime(os.path.join(remote, "d"), ns=(st.st_atime_ns, st.st_mtime_ns))
        # the README's promise: stale for at most the TTL (slack for a loaded machine, far
        # below the several TTLs a listing once stayed)
        deadline = listed + ttl + 3
        while sorted(os.listdir(d)) != ["a", "b"]:
            assert time.monotonic() < deadline, "the kernel kept a listing past the TTL"
            time.sleep(0.2)


def test_cache_readdir_no_asks_every_time(sshd: Sshd, workdir: str) -> None:
    remote, mnt = one_file_dir(workdir)
    with mounted(sshd, remote, mnt, ["cache_readdir=no"]):
        d = os.path.join(mnt, "d")
        assert os.listdir(d) == ["a"]
        before = asked(mnt)
        assert os.listdir(d) == ["a"]
        assert asked(mnt) > before  # served by our cache, but asked
        open(os.path.join(mnt, "d", "b"), "w").close()
        assert sorted(os.listdir(d)) == ["a", "b"]


def test_listings_give_back_every_inode(sshd: Sshd, workdir: str) -> None:
    """Entries handed out by readdirplus (some built ahead of the READDIR that wants them)
    are lookups the kernel gives back: once it forgets everything, the daemon holds nothing,
    also after a reader that stopped half-way."""
    remote = os.path.join(workdir, "remote")
    for d in range(6):
        os.makedirs(os.path.join(remote, f"d{d}"))
        for i in range(2500):
            open(os.path.join(remote, f"d{d}", f"a-fairly-long-file-name-{i:05}"), "w").close()
    with mounted(sshd, remote, os.path.join(workdir, "mnt")) as m:
        mnt = m.mountpoint

        def held_after_forgetting() -> int:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")  # the kernel forgets every unused dentry and inode
            held, deadline = -1, time.monotonic() + 10
            while time.monotonic() < deadline:  # FORGETs arrive asynchronously
                time.sleep(0.2)
                now = status_inodes(mnt)
                if now == held:
                    break
                held = now
            return held

        base = held_after_forgetting()
        with os.scandir(os.path.join(mnt, "d0")) as it:  # stops after 100 of 2,500
            for _ in range(100):
                next(it)
        assert status_inodes(mnt) > base + 100  # entries handed out, and some built ahead
        for d in range(1, 6):
            assert len(os.listdir(os.path.join(mnt, f"d{d}"))) == 2500
        assert status_inodes(mnt) >= base + 5 * 2500
        time.sleep(PREPARED_FOR + 0.3)  # what d0's reader never came back for is given back
        assert held_after_forgetting() == base


def status_inodes(mnt: str) -> int:
    with open(os.path.join(mnt, ".sshvfs", "status")) as f:
        value = json.load(f)["inodes"]
    assert isinstance(value, int)
    return value
