"""The lean SFTP client (the OpenSSH transport's codec) against OpenSSH's own sftp-server,
run directly over two pipes: every request, the errors as asyncssh names them, large
writes, the end of the session, framing in any chunks."""

from __future__ import annotations

import asyncio
import os
import stat
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from sshvfs.transport import sftppipe
from sshvfs.transport.sftppipe import SftpClient, start_client

SERVERS = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/sftp-server",
)
READ, WRITE, CREAT, TRUNC, EXCL = 1, 2, 8, 16, 32


def _server() -> str:
    for path in SERVERS:
        if os.access(path, os.X_OK):
            return path
    raise AssertionError(f"OpenSSH's sftp-server not found in {SERVERS}")


class Session:
    def __init__(self, client: SftpClient, proc: asyncio.subprocess.Process, root: Path):
        self.client = client
        self.proc = proc
        self.root = root

    def path(self, name: str) -> bytes:
        return os.fsencode(self.root / name)

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[Session]:
    to_child, into = os.pipe()
    out_of, from_child = os.pipe()
    proc = await asyncio.create_subprocess_exec(_server(), stdin=to_child, stdout=from_child)
    os.close(to_child)
    os.close(from_child)
    client, _ = await start_client(into, out_of, "SSH-2.0-OpenSSH_9.2")
    try:
        yield Session(client, proc, tmp_path)
    finally:
        client.exit()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_the_handshake_learns_the_server_s_limits_and_extensions(session: Session) -> None:
    c = session.client
    assert c.version == 3
    assert c.limits.max_read_len > sftppipe.DEFAULT_IO  # from limits@openssh.com
    assert b"posix-rename@openssh.com" in c.extensions


async def test_files_round_trip(session: Session) -> None:
    c, p = session.client, session.path
    h = await c.open(p("f"), WRITE | CREAT | TRUNC, asyncssh.SFTPAttrs(permissions=0o640))
    await h.write(b"hello world", 0)
    await h.write(memoryview(b"HELLO"), 0)
    await h.fsync()
    st = await h.stat()
    assert st.size == 11 and stat.S_IMODE(st.permissions or 0) == 0o640
    assert st.type == asyncssh.FILEXFER_TYPE_REGULAR
    await h.truncate(5)
    await h.setstat(asyncssh.SFTPAttrs(atime=1_000_000_000, mtime=1_500_000_000))
    await h.close()
    assert (session.root / "f").read_bytes() == b"HELLO"
    assert os.stat(session.root / "f").st_mtime == 1_500_000_000
    r = await c.open(p("f"), READ)
    assert await r.read(100, 0) == b"HELLO"
    assert await r.read(100, 3) == b"LO"
    assert await r.read(100, 5) == b""  # the end of the file is no error
    await r.close()
    with pytest.raises(asyncssh.SFTPFailure):  # OpenSSH's answer to O_EXCL on a file there
        await c.open(p("f"), WRITE | CREAT | EXCL)


async def test_names_and_paths(session: Session) -> None:
    c, p, root = session.client, session.path, session.root
    await c.mkdir(p("d"), asyncssh.SFTPAttrs(permissions=0o700))
    assert stat.S_IMODE(os.stat(root / "d").st_mode) == 0o700
    (root / "d" / "a").write_bytes(b"12345")
    await c.symlink(b"d/a", p("link"))
    assert os.readlink(root / "link") == "d/a"  # the paths in OpenSSH's order
    assert await c.readlink(p("link")) == b"d/a"
    assert (await c.stat(p("link"))).size == 5
    assert (await c.lstat(p("link"))).type == asyncssh.FILEXFER_TYPE_SYMLINK
    await c.setstat(p("link"), asyncssh.SFTPAttrs(atime=7, mtime=7), follow_symlinks=False)
    assert os.lstat(root / "link").st_mtime == 7 and os.stat(root / "link").st_mtime != 7
    await c.setstat(p("d/a"), asyncssh.SFTPAttrs(permissions=0o600))
    assert stat.S_IMODE(os.stat(root / "d" / "a").st_mode) == 0o600
    await c.link(p("d/a"), p("hard"))
    assert os.stat(root / "hard").st_ino == os.stat(root / "d" / "a").st_ino
    await c.posix_rename(p("hard"), p("d/a"))  # over an existing name: POSIX rename
    names = {n.filename: n async for n in c.scandir(p("d"))}
    assert set(names) == {b".", b"..", b"a"}
    assert names[b"a"].attrs.size == 5 and names[b"a"].longname.startswith(b"-rw-------")
    assert await c.realpath(p("d/../d")) == p("d")
    assert (await c.statvfs(p("d"))).namemax == os.statvfs(root).f_namemax
    with pytest.raises(asyncssh.SFTPFailure):
        await c.rmdir(p("d"))  # not empty
    await c.remove(p("d/a"))
    await c.rmdir(p("d"))
    with pytest.raises(asyncssh.SFTPNoSuchFile):
        await c.lstat(p("d"))
    with pytest.raises(asyncssh.SFTPNoSuchFile):
        await c.remove(p("d/a"))


async def test_a_directory_of_many_names_comes_whole(session: Session) -> None:
    for i in range(1500):
        (session.root / f"n{i:04d}").touch()
    names = [n.filename async for n in session.client.scandir(os.fsencode(session.root))]
    assert sorted(names) == sorted([b".", b".."] + [f"n{i:04d}".encode() for i in range(1500)])


async def test_a_write_larger_than_the_server_takes_goes_in_pieces(session: Session) -> None:
    c = session.client
    data = os.urandom(3 * c.limits.max_write_len + 7)
    h = await c.open(session.path("big"), WRITE | CREAT)
    await h.write(data, 10)
    await h.close()
    assert (session.root / "big").read_bytes() == bytes(10) + data
    r = await c.open(session.path("big"), READ)
    got = await r.read(c.limits.max_read_len, 10)
    assert got == data[: len(got)] and len(got) > 0
    await r.close()


async def test_an_extension_the_server_lacks_is_unsupported(session: Session) -> None:
    c = session.client
    del c.extensions[b"fsync@openssh.com"]
    h = await c.open(session.path("x"), WRITE | CREAT)
    with pytest.raises(asyncssh.SFTPOpUnsupported):
        await h.fsync()
    await h.close()


async def test_an_open_given_up_on_is_closed_when_its_answer_comes(session: Session) -> None:
    c = session.client
    (session.root / "f").write_bytes(b"x")
    before = session.open_fds()
    task = asyncio.ensure_future(c.open(session.path("f"), READ))
    await asyncio.sleep(0)  # sent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await c.lstat(session.path("f"))  # answered after the OPEN and the CLOSE that follows it
    await c.lstat(session.path("f"))
    assert session.open_fds() == before


def _count_writes(c: SftpClient) -> list[bytes]:
    """What the client hands its pipe, write by write (it still goes to the server)."""
    sender = c._write
    assert sender is not None
    writes: list[bytes] = []
    write = sender.write

    def counted(data: bytes) -> None:
        writes.append(data)
        write(data)

    sender.write = counted  # type: ignore[method-assign]
    return writes


async def test_request_pairs_leave_in_one_write_and_answer_in_order(session: Session) -> None:
    c = session.client
    writes = _count_writes(c)
    h, st = await c.open_then_stat(session.path("f"), WRITE | CREAT, None, session.path("f"))
    assert len(writes) == 1
    assert not isinstance(st, Exception) and stat.S_ISREG(st.permissions or 0)
    await h.write(b"four", 0)
    got, closed = await h.stat_then_close()
    assert closed is None and not isinstance(got, Exception) and got.size == 4
    with pytest.raises(asyncssh.SFTPError):  # closed: the handle is gone
        await h.close()
    st = await c.rename_then_lstat(session.path("f"), session.path("g"))
    assert not isinstance(st, Exception) and st.size == 4
    assert len(writes) == 5  # the pairs went as one write each
    assert (session.root / "g").read_bytes() == b"four"


async def test_mkdir_and_setstat_say_what_they_made_in_one_write(session: Session) -> None:
    c = session.client
    writes = _count_writes(c)
    st = await c.mkdir_then_lstat(session.path("d"), asyncssh.SFTPAttrs(permissions=0o700))
    assert not isinstance(st, Exception) and stat.S_ISDIR(st.permissions or 0)
    assert stat.S_IMODE(st.permissions or 0) == 0o700
    st = await c.lsetstat_then_lstat(session.path("d"), asyncssh.SFTPAttrs(permissions=0o751))
    assert not isinstance(st, Exception) and stat.S_IMODE(st.permissions or 0) == 0o751
    times = asyncssh.SFTPAttrs(atime=1_000_000, mtime=2_000_000)
    st = await c.lsetstat_then_lstat(session.path("d"), times)
    assert not isinstance(st, Exception) and (st.atime, st.mtime) == (1_000_000, 2_000_000)
    assert len(writes) == 3
    assert os.stat(session.root / "d").st_mtime == 2_000_000
    # the first fails: raised; the LSTAT behind it is taken, not left for another request
    with pytest.raises(asyncssh.SFTPFailure):
        await c.mkdir_then_lstat(session.path("d"), None)  # it exists
    with pytest.raises(asyncssh.SFTPNoSuchFile):
        await c.lsetstat_then_lstat(session.path("none"), asyncssh.SFTPAttrs(permissions=0o600))
    assert stat.S_IMODE((await c.lstat(session.path("d"))).permissions or 0) == 0o751


async def test_a_pair_s_first_error_is_raised_and_its_second_taken(session: Session) -> None:
    c = session.client
    (session.root / "f").write_bytes(b"x")
    # the second fails: the first's answer stands
    h, st = await c.open_then_stat(session.path("n"), WRITE | CREAT, None, session.path("none"))
    assert isinstance(st, asyncssh.SFTPNoSuchFile)
    await h.close()
    # the first fails: raised, and the second's answer is not taken for another request's
    with pytest.raises(asyncssh.SFTPNoSuchFile):
        await c.rename_then_lstat(session.path("missing"), session.path("m"))
    with pytest.raises(asyncssh.SFTPNoSuchFile):
        await c.open_then_stat(session.path("no/f"), WRITE | CREAT, None, session.path("f"))
    assert (await c.lstat(session.path("f"))).size == 1
    assert (await c.lstat(session.path("n"))).size == 0


async def test_the_end_of_the_session_fails_what_waits_and_what_comes(session: Session) -> None:
    c = session.client
    h = await c.open(session.path("f"), WRITE | CREAT)
    session.proc.kill()  # the server goes away with requests in flight
    waiting = [asyncio.ensure_future(c.lstat(session.path("f"))) for _ in range(5)]
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(
        isinstance(r, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)) for r in results
    ), results
    await asyncio.wait_for(c.ended, 5)
    with pytest.raises(asyncssh.SFTPNoConnection):  # never sent: safe to try again elsewhere
        await h.write(b"data", 0)
    with pytest.raises(asyncssh.SFTPNoConnection):
        await c.lstat(session.path("f"))


class _Recorder:
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def _deliver(self, packet: bytes) -> None:
        self.packets.append(packet)


@pytest.mark.parametrize("chunk", [1, 3, 4, 5, 7, 64, 4096, 1 << 20])
def test_replies_are_cut_into_packets_from_any_chunks(chunk: int) -> None:
    bodies = [bytes([101]) + struct.pack(">I", i) + os.urandom(i * 37 % 70000) for i in range(40)]
    stream = b"".join(struct.pack(">I", len(b)) + b for b in bodies)
    recorder = _Recorder()
    replies = sftppipe._Replies(recorder)  # type: ignore[arg-type]
    for at in range(0, len(stream), chunk):
        replies.data_received(stream[at : at + chunk])
    assert recorder.packets == bodies


class _Sink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        pass


async def test_a_broken_reply_ends_the_session_or_its_request() -> None:
    """A reply that makes no sense fails its request (SFTPBadMessage: EIO to the
    caller); a stream that makes no sense (a length no server sends) ends the session."""
    client = SftpClient("SSH-2.0-OpenSSH_9.2")
    client._write = _Sink()  # type: ignore[assignment]
    replies = sftppipe._Replies(client)
    asking = asyncio.ensure_future(client.lstat(b"/x"))
    await asyncio.sleep(0)
    # an ATTRS reply whose attributes stop short (flags say a size; no size follows)
    replies.data_received(struct.pack(">IBII", 9, 105, 0, 1))
    with pytest.raises(asyncssh.SFTPBadMessage):
        await asking
    waiting = asyncio.ensure_future(client.lstat(b"/y"))
    await asyncio.sleep(0)
    replies.data_received(struct.pack(">I", 1 << 30) + b"junk")
    with pytest.raises(asyncssh.SFTPConnectionLost):
        await waiting
    assert client.ended.done()
    with pytest.raises(asyncssh.SFTPNoConnection):
        await client.lstat(b"/z")


async def test_what_a_full_pipe_cannot_take_leaves_whole_and_in_order() -> None:
    """The write side queues what the pipe cannot take yet and writes it out in order as
    the reader drains it; when the reader goes away, what is queued is dropped and the
    side closes (no spinning on a dead pipe)."""
    read_end, write_end = os.pipe()
    sender = sftppipe._Sender(write_end)
    pieces = [os.urandom(n) for n in (10, 300_000, 1, 70_000, 2_000_000, 5)]
    for piece in pieces:
        sender.write(piece)
    got = bytearray()
    os.set_blocking(read_end, False)
    while len(got) < sum(map(len, pieces)):
        try:
            got += os.read(read_end, 1 << 16)
        except BlockingIOError:
            await asyncio.sleep(0.001)
    assert bytes(got) == b"".join(pieces)
    sender.write(b"x" * (4 << 20))  # more than the pipe holds: queued
    assert sender._queue
    os.close(read_end)  # with a write waiting: the loop reports the pipe broken
    await asyncio.sleep(0.05)
    assert sender.is_closing() and sender._fd == -1 and not sender._queue
    sender.close()  # closing again is harmless


@pytest.mark.parametrize("seed", range(5))
def test_replies_are_cut_into_packets_from_random_chunks(seed: int) -> None:
    import random

    rng = random.Random(seed)
    bodies = [
        bytes([103]) + struct.pack(">I", i) + rng.randbytes(rng.choice((0, 3, 600, 261_000)))
        for i in range(60)
    ]
    stream = b"".join(struct.pack(">I", len(b)) + b for b in bodies)
    recorder = _Recorder()
    replies = sftppipe._Replies(recorder)  # type: ignore[arg-type]
    at = 0
    while at < len(stream):
        step = rng.choice((1, 2, 4, 5, 9, 4096, 65_536, 262_144, 300_000))
        replies.data_received(stream[at : at + step])
        at += step
    assert recorder.packets == bodies
