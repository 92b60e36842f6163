"""Small files fetched in bulk under a prefetched tree and served from memory: the same
bytes as the server's, and never a copy the mount's own writes or a visible change made
stale."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from sshvfs.vfs.cache.contents import MAX_FILE
from sshvfs.watch.watcher import CATCH_UP_SLACK

from ..mounting import MountProcess
from .test_caching import cache_counts, status, touch_invalidate
from .test_streaming import fresh

pytestmark = pytest.mark.mount


def _tree(remote: str) -> dict[str, bytes]:
    files = {}
    for d in range(4):
        os.makedirs(os.path.join(remote, f"d{d}"))
        for f in range(6):
            rel = f"d{d}/f{f}"
            files[rel] = (f"{rel}\n" * (f * 40 + 1)).encode()
        files[f"d{d}/big"] = os.urandom(MAX_FILE + 1)
    for rel, data in files.items():
        with open(os.path.join(remote, rel), "wb") as f:
            f.write(data)
    return files


def _vouched(mnt_root: str) -> int:
    watch = status(mnt_root)["watch"]
    assert isinstance(watch, dict)
    return int(watch["vouched"]) if watch["active"] == "inotify" else -1


def _fetched(mnt_root: str, mnt: str, small: int) -> None:
    """Prefetch ``mnt``'s tree, let the watcher catch up on it, read one file (that starts
    the content fetch), wait until the ``small`` files are in memory (the first read may
    also have fetched its own file alone, when the server looks far away). (A tree made a
    moment before the mount first used it is what the watcher's catch-up reports as
    changed: copies fetched before that report would be dropped, and these tests count
    hits.)"""
    # the watcher's catch-up reports what changed from CATCH_UP_SLACK before a directory's
    # first use: a tree made just now would be reported (and its copies dropped) whenever
    # that report lands, maybe in the middle of the test's reads
    time.sleep(CATCH_UP_SLACK + 0.5)
    before = _vouched(mnt_root)
    with open(os.path.join(mnt_root, ".sshvfs", "prefetch"), "w") as f:
        f.write("/" + os.path.relpath(mnt, mnt_root))
    deadline = time.monotonic() + 20
    while before >= 0 and _vouched(mnt_root) < before + 5:  # the directory and its four
        assert time.monotonic() < deadline, "the watcher did not catch up on the tree"
        time.sleep(0.05)
    with open(os.path.join(mnt, "d0", "f0"), "rb") as f:
        f.read()
    deadline = time.monotonic() + 20
    while cache_counts(mnt_root)["content_files"] < small:
        assert time.monotonic() < deadline, f"no content fetch: {cache_counts(mnt_root)}"
        time.sleep(0.05)


def _read_all(mnt: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        with open(os.path.join(mnt, rel), "rb") as f:
            assert f.read() == data, rel


def test_a_walk_reads_small_files_from_memory(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    root = module_mount[1].mountpoint
    files = _tree(remote)
    _fetched(root, mnt, len(files) - 4)
    counts = cache_counts(root)
    _read_all(mnt, files)
    hits = cache_counts(root)["content_hits"] - counts["content_hits"]
    assert hits >= len(files) - 4 - 1, (
        hits,
        counts,
        cache_counts(root),
        status(root)["watch"],
    )  # every small one but d0/f0, not the big ones
    grep = subprocess.run(["grep", "-r", "-l", "d2/f3", mnt], capture_output=True, text=True)
    assert grep.stdout.split() == [os.path.join(mnt, "d2", "f3")]


def test_copies_never_outlive_a_change(module_mount: tuple[str, MountProcess]) -> None:
    remote, mnt = fresh(module_mount)
    root = module_mount[1].mountpoint
    files = _tree(remote)
    _fetched(root, mnt, len(files) - 4)
    # the mount's own write: seen at once, whatever the copy says
    with open(os.path.join(mnt, "d1", "f1"), "wb") as f:
        f.write(b"mine")
    with open(os.path.join(mnt, "d1", "f1"), "rb") as f:
        assert f.read() == b"mine"
    # a rename over a fetched file: the new name shows the moved file's bytes
    os.rename(os.path.join(mnt, "d1", "f2"), os.path.join(mnt, "d1", "f3"))
    with open(os.path.join(mnt, "d1", "f3"), "rb") as f:
        assert f.read() == files["d1/f2"]
    # a change on the server, once the mount is told (or the TTL passed): the new bytes
    with open(os.path.join(remote, "d2", "f4"), "wb") as f:
        f.write(b"theirs, a different size")
    touch_invalidate(root)
    with open(os.path.join(mnt, "d2", "f4"), "rb") as f:
        assert f.read() == b"theirs, a different size"
    # a read-only descriptor of a copy still takes fchmod and futimens
    fd = os.open(os.path.join(mnt, "d3", "f1"), os.O_RDONLY)
    try:
        os.fchmod(fd, 0o600)
        os.utime(fd, ns=(1_000_000_000, 2_000_000_000))
    finally:
        os.close(fd)
    st = os.stat(os.path.join(remote, "d3", "f1"))
    assert st.st_mode & 0o777 == 0o600 and st.st_mtime_ns == 2_000_000_000
