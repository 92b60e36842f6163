"""SftpFile's streaming over a real sshd (no FUSE): transfers are counted per handle, a
flush after acknowledged writes is free, reads see writes sent just before them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from sshvfs.config import MountOptions, Target
from sshvfs.sftp.vfs import SftpVFS
from sshvfs.transfers import Transfers
from sshvfs.transport.connection import connect
from sshvfs.vfs.types import Attrs

from ..sshd import Sshd

MiB = 1 << 20


@pytest.fixture
async def vfs(sshd: Sshd, workdir: str) -> AsyncIterator[tuple[SftpVFS, Transfers, str]]:
    opts = MountOptions(
        port=sshd.port, identity_files=[sshd.client_key], known_hosts=sshd.known_hosts
    )
    conn = await connect(Target("127.0.0.1", sshd.user, os.fsencode(workdir)), opts)
    transfers = Transfers()
    try:
        yield SftpVFS(conn.sftp, conn.root, transfers=transfers), transfers, workdir
    finally:
        await conn.close()


async def test_transfers_follow_each_handle(vfs: tuple[SftpVFS, Transfers, str]) -> None:
    fs, transfers, root = vfs
    f = await fs.open(b"/big", os.O_WRONLY | os.O_CREAT, 0o644)
    for i in range(6):
        assert await f.write(i * MiB, bytes([i]) * MiB) == MiB
    (writing,) = transfers.snapshot()
    assert writing["path"] == "/big" and writing["direction"] == "write"
    await f.flush()
    (writing,) = transfers.snapshot()
    assert writing["bytes_done"] == 6 * MiB  # acknowledged bytes
    await f.close()
    assert transfers.snapshot() == []
    with open(os.path.join(root, "big"), "rb") as local:
        assert local.read() == b"".join(bytes([i]) * MiB for i in range(6))

    f = await fs.open(b"/big", os.O_RDONLY)
    got = 0
    while chunk := await f.read(got, 128 * 1024):
        assert chunk == bytes([got // MiB]) * len(chunk)
        got += len(chunk)
    (reading,) = transfers.snapshot()
    assert reading["direction"] == "read" and reading["bytes_done"] == 6 * MiB
    assert reading["total"] == 6 * MiB  # asked for once the read was big
    await f.close()
    assert transfers.snapshot() == []


async def test_read_after_write_on_one_handle(vfs: tuple[SftpVFS, Transfers, str]) -> None:
    fs, _, root = vfs
    f = await fs.open(b"/rw", os.O_RDWR | os.O_CREAT, 0o644)
    attrs = await f.fstat()  # learnt with the create
    assert attrs.size == 0
    for round_ in range(20):
        data = bytes([round_]) * (100_000 + round_)
        await f.write(round_ * 50_000, data)  # not waited for
        assert await f.read(round_ * 50_000, len(data)) == data
    assert (await f.fstat()).size == 19 * 50_000 + 100_019
    await f.truncate(10)
    assert await f.read(0, 100) == bytes([0]) * 10
    await f.flush()
    await f.flush()  # nothing outstanding: no crossing, no error
    await f.close()
    assert os.path.getsize(os.path.join(root, "rw")) == 10


async def test_a_handle_that_changed_its_file_says_what_it_closed(
    vfs: tuple[SftpVFS, Transfers, str],
) -> None:
    """FSTAT rides ahead of CLOSE: the caches learn the file's size and mtime as written
    without asking again; a handle that changed nothing asks nothing."""
    fs, _, root = vfs
    f = await fs.open(b"/saved", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    await f.write(0, b"x" * 5000)
    await f.fsync()
    await f.close()
    said = f.closing_attrs  # type: ignore[attr-defined]
    st = os.stat(os.path.join(root, "saved"))
    assert said is not None
    assert (said.size, said.mtime_ns, said.mode) == (
        5000,
        st.st_mtime_ns // 10**9 * 10**9,
        st.st_mode,
    )
    r = await fs.open(b"/saved", os.O_RDONLY)
    assert await r.read(0, 10) == b"x" * 10
    await r.close()
    assert r.closing_attrs is None  # type: ignore[attr-defined]


async def test_a_rename_can_say_what_the_new_name_is(vfs: tuple[SftpVFS, Transfers, str]) -> None:
    fs, _, root = vfs
    with open(os.path.join(root, "old"), "wb") as f:
        f.write(b"12345")
    with open(os.path.join(root, "new"), "wb") as f:
        f.write(b"replaced")
    said = await fs.rename_known(b"/old", b"/new")
    assert said is not None and said.size == 5  # the renamed file, not the one replaced
    with pytest.raises(FileNotFoundError):
        await fs.rename_known(b"/old", b"/new")


async def test_mkdir_and_setattrs_can_say_what_the_name_is_after(
    vfs: tuple[SftpVFS, Transfers, str],
) -> None:
    """One round trip each (an LSTAT right behind): what the server stores, as os.lstat
    sees it; a refusal raised as without it."""
    fs, _, root = vfs
    path = os.path.join(root, "d")

    def agrees(said: Attrs | None) -> None:
        assert said is not None
        st = os.lstat(path)
        assert (said.mode, said.uid, said.gid, said.mtime_ns) == (
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns // 10**9 * 10**9,
        )

    agrees(await fs.mkdir_known(b"/d", 0o700))
    assert os.lstat(path).st_mode & 0o777 == 0o700
    agrees(await fs.chmod_known(b"/d", 0o751))
    assert os.lstat(path).st_mode & 0o777 == 0o751
    agrees(await fs.utimens_known(b"/d", 5 * 10**9, 7 * 10**9))
    assert os.lstat(path).st_mtime == 7
    st = os.lstat(path)
    agrees(await fs.chown_known(b"/d", st.st_uid, -1))
    with pytest.raises(FileExistsError):
        await fs.mkdir_known(b"/d", 0o755)
    with pytest.raises(FileNotFoundError):
        await fs.chmod_known(b"/none", 0o600)
    with pytest.raises(FileNotFoundError):
        await fs.utimens_known(b"/none", 1, 1)
