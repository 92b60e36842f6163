"""One conformance suite run over every VFS implementation (LocalVFS, SftpVFS, ...)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Callable

import pytest

from sshvfs.config import MountOptions, Target
from sshvfs.sftp.vfs import SftpVFS
from sshvfs.transport.connection import connect
from sshvfs.vfs.local import LocalVFS
from sshvfs.vfs.types import VFS, FileType

from ..sshd import Sshd

Backend = tuple[VFS, str]  # the VFS and the real directory behind its root


def _local(root: str, sshd: Sshd) -> Callable[[], AsyncIterator[VFS]]:
    async def make() -> AsyncIterator[VFS]:
        yield LocalVFS(root)

    return make


def _sftp(root: str, sshd: Sshd) -> Callable[[], AsyncIterator[VFS]]:
    async def make() -> AsyncIterator[VFS]:
        opts = MountOptions(
            port=sshd.port, identity_files=[sshd.client_key], known_hosts=sshd.known_hosts
        )
        conn = await connect(Target("127.0.0.1", sshd.user, os.fsencode(root)), opts)
        try:
            yield SftpVFS(conn.sftp, conn.root)
        finally:
            await conn.close()

    return make


def _cached(root: str, sshd: Sshd) -> Callable[[], AsyncIterator[VFS]]:
    async def make() -> AsyncIterator[VFS]:
        from sshvfs.vfs.cache.cached import CachingVFS

        async for inner in _sftp(root, sshd)():
            yield CachingVFS(inner)

    return make


BACKENDS = {"local": _local, "sftp": _sftp, "cached": _cached}


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, sshd: Sshd) -> AsyncIterator[Backend]:
    if request.param == "cached":
        pytest.importorskip("sshvfs.vfs.cache.cached")
    root = tempfile.mkdtemp(prefix="sshvfs-conf-")
    try:
        async for vfs in BACKENDS[request.param](root, sshd)():
            yield vfs, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _write(vfs: VFS, path: bytes, data: bytes) -> None:
    f = await vfs.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert await f.write(0, data) == len(data)
    finally:
        await f.close()


async def _read(vfs: VFS, path: bytes) -> bytes:
    f = await vfs.open(path, os.O_RDONLY)
    try:
        return await f.read(0, 1 << 30)
    finally:
        await f.close()


async def test_files_round_trip(backend: Backend) -> None:
    vfs, root = backend
    data = os.urandom(700_000)
    await _write(vfs, b"/f", data)
    assert await _read(vfs, b"/f") == data
    with open(os.path.join(root, "f"), "rb") as f:
        assert f.read() == data
    a = await vfs.lstat(b"/f")
    assert a.size == len(data) and a.type is FileType.FILE and a.permissions.startswith("-rw")
    f = await vfs.open(b"/f", os.O_RDONLY)
    assert await f.read(len(data) - 10, 100) == data[-10:]
    assert await f.read(len(data) + 5, 100) == b""
    await f.close()


async def test_readdir_entries(backend: Backend) -> None:
    vfs, root = backend
    os.mkdir(os.path.join(root, "d"))
    for i in range(230):
        open(os.path.join(root, "d", f"x{i}"), "w").close()
    os.symlink("x1", os.path.join(root, "d", "ln"))
    entries = {e.name: e for e in await vfs.readdir(b"/d")}
    assert len(entries) == 231
    assert entries[b"ln"].type is FileType.SYMLINK
    assert entries[b"x5"].type is FileType.FILE and entries[b"x5"].size == 0
    st = os.lstat(os.path.join(root, "d", "x5"))
    assert entries[b"x5"].attrs.uid == st.st_uid
    assert entries[b"x5"].mtime_ns // 10**9 == st.st_mtime_ns // 10**9


async def test_namespace_operations(backend: Backend) -> None:
    vfs, root = backend
    await vfs.mkdir(b"/a", 0o755)
    await _write(vfs, b"/a/one", b"1")
    await vfs.rename(b"/a/one", b"/a/two")
    assert [e.name for e in await vfs.readdir(b"/a")] == [b"two"]
    await vfs.symlink(b"two", b"/a/ln")
    assert await vfs.readlink(b"/a/ln") == b"two"
    await vfs.link(b"/a/two", b"/a/hard")
    assert os.stat(os.path.join(root, "a", "hard")).st_nlink == 2
    await vfs.chmod(b"/a/two", 0o600)
    assert stat.S_IMODE((await vfs.lstat(b"/a/two")).mode) == 0o600
    await vfs.truncate(b"/a/two", 10)
    assert (await vfs.lstat(b"/a/two")).size == 10
    await vfs.utimens(b"/a/two", 5 * 10**9, 7 * 10**9)
    assert (await vfs.lstat(b"/a/two")).mtime_ns == 7 * 10**9
    # a time left as it is (UTIME_OMIT), either one
    await vfs.utimens(b"/a/two", None, 9 * 10**9)
    st = os.lstat(os.path.join(root, "a", "two"))
    assert (st.st_atime_ns, st.st_mtime_ns) == (5 * 10**9, 9 * 10**9)
    assert (await vfs.lstat(b"/a/two")).mtime_ns == 9 * 10**9
    await vfs.utimens(b"/a/two", 6 * 10**9, None)
    st = os.lstat(os.path.join(root, "a", "two"))
    assert (st.st_atime_ns, st.st_mtime_ns) == (6 * 10**9, 9 * 10**9)
    for name in (b"/a/two", b"/a/hard", b"/a/ln"):
        await vfs.unlink(name)
    await vfs.rmdir(b"/a")
    assert os.listdir(root) == []
    s = await vfs.statfs(b"/")
    assert s.blocks > 0 and s.name_max >= 255


@pytest.mark.parametrize(
    "setup, action, code",
    [
        ("", lambda v: v.lstat(b"/missing"), errno.ENOENT),
        ("", lambda v: v.unlink(b"/missing"), errno.ENOENT),
        ("dir", lambda v: v.mkdir(b"/dir"), errno.EEXIST),
        ("dir", lambda v: v.unlink(b"/dir"), errno.EISDIR),
        ("full", lambda v: v.rmdir(b"/full"), errno.ENOTEMPTY),
        ("file", lambda v: v.rmdir(b"/file"), errno.ENOTDIR),
        ("file", lambda v: v.open(b"/file", os.O_WRONLY | os.O_CREAT | os.O_EXCL), errno.EEXIST),
        ("file", lambda v: v.symlink(b"x", b"/file"), errno.EEXIST),
        ("file", lambda v: v.readlink(b"/file"), errno.EINVAL),
        ("dir", lambda v: v.open(b"/dir", os.O_WRONLY), errno.EISDIR),
        ("full", lambda v: v.rename(b"/dir", b"/full"), errno.ENOTEMPTY),
    ],
)
async def test_errnos(
    backend: Backend, setup: str, action: Callable[[VFS], object], code: int
) -> None:
    vfs, root = backend
    os.mkdir(os.path.join(root, "dir"))
    os.makedirs(os.path.join(root, "full", "child"))
    open(os.path.join(root, "file"), "w").close()
    with pytest.raises(OSError) as e:
        await action(vfs)  # type: ignore[misc]
    assert e.value.errno == code
