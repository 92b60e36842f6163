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
