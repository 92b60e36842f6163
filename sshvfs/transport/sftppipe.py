"""SftpClient: a lean SFTP v3 client over a pair of pipes (an ``ssh -s sftp`` session).

The OpenSSH transport's SFTP codec. It speaks what :mod:`sshvfs.sftp.vfs` and
:mod:`sshvfs.sftp.file` ask of a client, with the method names and errors of asyncssh's
``SFTPClient`` (so the one error mapping in :mod:`sshvfs.sftp.wire` serves both transports)
and nothing else: no logging per request, no per-request tasks or timers, replies parsed in
the pipe's ``data_received`` and handed to the waiting request's future. Measured on
loopback against asyncssh's client over the same ``sftp-server`` pipes (LSTAT): 94-98 us a
serial round trip against 127-139, and 13-15 us of CPU a request with 16 in flight against
34 (a 4 KiB READ: 88-96 us against 136-144). Ordering: a request is written to the pipe
when its coroutine first runs, before it waits, so requests leave in the order they were
made (what :class:`~sshvfs.vfs.stream.writeorder.WriteOrder` relies on).

Requests in flight when the session ends fail with ``SFTPConnectionLost``; requests made
after it fail with ``SFTPNoConnection`` (never sent: safe to retry after a reconnect). A
handle whose OPEN was answered after its caller gave up (a deadline) is closed at once.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import itertools
import logging
import os
import struct
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import asyncssh

from ..tasks import retrieve
from .sftpvalues import (
    _FX_OK,
    _SIZE,
    _U32,
    _U64,
    AttrsIn,
    Limits,
    RemoteAttrs,
    RemoteName,
    VfsStats,
    _decode_attrs,
    _encode_attrs,
    _get_string,
    _status_error,
    _string,
)

log = logging.getLogger(__name__)

A = TypeVar("A")
B = TypeVar("B")

# packet types (draft-ietf-secsh-filexfer-02)
_INIT, _VERSION, _OPEN, _CLOSE, _READ, _WRITE, _LSTAT, _FSTAT = 1, 2, 3, 4, 5, 6, 7, 8
_SETSTAT, _FSETSTAT, _OPENDIR, _READDIR, _REMOVE, _MKDIR, _RMDIR = 9, 10, 11, 12, 13, 14, 15
_REALPATH, _STAT, _RENAME, _READLINK, _SYMLINK, _EXTENDED = 16, 17, 18, 19, 20, 200
_STATUS, _HANDLE, _DATA, _NAME, _ATTRS, _EXTENDED_REPLY = 101, 102, 103, 104, 105, 201

_FX_EOF = 1

_HEADER = struct.Struct(">IBI")  # length, type, request id

#: what a server without limits@openssh.com is safe to be sent and asked for (bytes)
DEFAULT_IO = 32768
#: the longest reply taken (OpenSSH's server sends at most 256 KiB): a longer length is a
#: broken stream, and the session ends rather than buffer it
MAX_REPLY = 1 << 24
#: the pipes' buffer (Linux F_SETPIPE_SZ): 64 KiB by default, so a 255 KiB WRITE took four
#: wake-ups of the loop to leave; 1 MiB is the default limit for unprivileged processes
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031


def widen(fd: int) -> None:
    """Give a pipe a larger buffer, where the kernel lets us."""
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # not Linux, or over the limit: the default buffer works, only slower


class _Replies(asyncio.Protocol):
    """The read side: cuts the byte stream into packets and answers their requests."""

    def __init__(self, client: SftpClient) -> None:
        self._client = client
        self._buf = bytearray()
        #: bytes the buffer must hold before a packet can be cut from it
        self._need = 4

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        at = 0
        first = None
        if buf:
            need = self._need
            if len(buf) + len(data) < need:
                buf += data
                return  # a large packet still coming: no copy until it is whole
            if need > 4:  # its length is known: finish it with the head of ``data``
                at = need - len(buf)
                buf += memoryview(data)[:at]
                with memoryview(buf) as view:
                    first = bytes(view[4:])
            else:
                buf += data
                data = bytes(buf)
            buf.clear()
        end = len(data)
        deliver = self._client._deliver
        need = 4
        try:
            if first is not None:
                deliver(first)
            while end - at >= 4:
                (length,) = _U32.unpack_from(data, at)
                if not 5 <= length <= MAX_REPLY:
                    raise asyncssh.SFTPBadMessage(f"a reply of {length} bytes")
                if end - at - 4 < length:
                    need = 4 + length
                    break
                deliver(data[at + 4 : at + 4 + length])
                at += 4 + length
            else:
                need = 4
        except (asyncssh.Error, struct.error) as exc:
            self._client._abort(f"the server's replies make no sense ({exc})")
            return
        if at < end:
            buf += memoryview(data)[at:]
        self._need = need

    def eof_received(self) -> bool:
        return False  # the session ended: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._lost(exc)


class _Sender:
    """The write side: the server's input pipe, and what it could not take yet, queued in
    order as the pieces written (asyncio's pipe transport keeps one bytearray and shifts
    all of it after every partial write: with megabytes of WRITEs queued behind a full
    pipe, that copying was a quarter of the daemon's CPU in a sequential write)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._queue: collections.deque[memoryview] = collections.deque()
        self._closing = False

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes) -> None:
        if not self._queue:
            try:
                done = os.write(self._fd, data)
            except BlockingIOError:
                done = 0
            except OSError:  # the server's side is gone (EPIPE): the read side ends too
                self.abandon()
                return
            if done == len(data):
                return
            self._loop.add_writer(self._fd, self._ready)
            self._queue.append(memoryview(data)[done:])
            return
        self._queue.append(memoryview(data))

    def _ready(self) -> None:
        queue = self._queue
        try:
            done = os.writev(self._fd, list(itertools.islice(queue, 64)))
        except BlockingIOError:
            return
        except OSError:
            self.abandon()
            return
        while done:
            head = queue[0]
            if done < len(head):
                queue[0] = head[done:]
                break
            done -= len(head)
            queue.popleft()
        if not queue:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._shut()

    def close(self) -> None:
        """Close once everything queued is written (the server sees the end of input)."""
        if not self._closing:
            self._closing = True
            if not self._queue:
                self._shut()

    def abandon(self) -> None:
        """Close now, dropping what is queued (nobody reads the pipe any more)."""
        self._closing = True
        self._queue.clear()
        self._shut()

    def _shut(self) -> None:
        if self._fd >= 0:
            self._loop.remove_writer(self._fd)
            os.close(self._fd)
            self._fd = -1


class SftpClient:
    """One SFTP session over ``ssh -s sftp``'s pipes. Use :func:`start_client`."""

    def __init__(self, server_version: str) -> None:
        self.version = 3
        self.limits = Limits(DEFAULT_IO + 1024, DEFAULT_IO, DEFAULT_IO, 0)
        self.extensions: dict[bytes, bytes] = {}
        self._write: _Sender | None = None
        self._read: asyncio.ReadTransport | None = None
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._next = 0
        self._closed = False
        self._version_reply: asyncio.Future[bytes] | None = None
        #: done when the session ends (the read side closed)
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # OpenSSH's server takes SYMLINK's two paths the other way round, as its client
        # sends them (asyncssh does the same swap)
        self._symlink_swapped = "OpenSSH" in server_version
        #: log each request and reply (``-d``): decided once, so that without it a request
        #: pays one attribute test for its logging
        self._debug = log.isEnabledFor(logging.DEBUG)

    # -- the session ---------------------------------------------------------------

    async def _handshake(self) -> None:
        loop = asyncio.get_running_loop()
        self._version_reply = loop.create_future()
        self._send(_U32.pack(5) + bytes([_INIT]) + _U32.pack(3))
        packet = await self._version_reply
        (version,) = _U32.unpack_from(packet, 1)
        if version != 3:
            raise asyncssh.SFTPBadMessage(f"unsupported SFTP version {version}")
        at = 5
        while at < len(packet):
            name, at = _get_string(packet, at)
            data, at = _get_string(packet, at)
            self.extensions[name] = data
        if b"limits@openssh.com" in self.extensions:
            reply = await self._extended(b"limits@openssh.com", b"")
            packet_len, read_len, write_len, handles = struct.unpack_from(">QQQQ", reply, 0)
            self.limits = Limits(
                packet_len or DEFAULT_IO + 1024,
                read_len or DEFAULT_IO,
                write_len or DEFAULT_IO,
                handles,
            )

    def _send(self, packet: bytes) -> None:
        if self._closed or self._write is None or self._write.is_closing():
            raise asyncssh.SFTPNoConnection("the SFTP session is closed")
        self._write.write(packet)

    def _deliver(self, packet: bytes) -> None:
        kind = packet[0]
        if kind == _VERSION:
            if self._version_reply is not None and not self._version_reply.done():
                self._version_reply.set_result(packet)
            return
        (ident,) = _U32.unpack_from(packet, 1)
        if self._debug:
            log.debug("< id %d: type %d, %d bytes", ident, kind, len(packet))
        future = self._pending.pop(ident, None)
        if future is None:
            return
        if not future.done():
            future.set_result((kind, packet))
        elif kind == _HANDLE:
            # opened for a caller who gave up waiting: do not leave it open
            try:
                closing = self._request(_CLOSE, _string(_get_string(packet, 5)[0]))
            except asyncssh.Error:
                return
            closing.add_done_callback(retrieve)

    def _lost(self, exc: Exception | None) -> None:
        self._closed = True
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(asyncssh.SFTPConnectionLost("the SFTP session ended"))
        if self._version_reply is not None and not self._version_reply.done():
            self._version_reply.set_exception(EOFError("the SFTP session ended"))
        if self._write is not None:
            self._write.abandon()
        if not self.ended.done():
            self.ended.set_result(None)

    def _abort(self, why: str) -> None:
        """A broken reply stream: end the session (every request in flight fails)."""
        log.warning("SFTP: %s; ending the session", why)
        if self._read is not None:
            self._read.close()  # its connection_lost ends the session
        else:
            self._lost(None)

    def exit(self) -> None:
        """End the session (the server sees the end of its input)."""
        self._closed = True
        if self._write is not None and not self._write.is_closing():
            self._write.close()

    def _take_id(self) -> int:
        ident = self._next
        self._next = (ident + 1) & 0xFFFFFFFF
        return ident

    def _request(self, kind: int, payload: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Send a request now; its reply, to be awaited."""
        ident, packet = self._framed(kind, payload)
        self._send(packet)
        return self._reply(ident)

    def _framed(self, kind: int, payload: bytes) -> tuple[int, bytes]:
        """A new request id, and the request's packet."""
        ident = self._take_id()
        if self._debug:
            log.debug("> id %d: type %d %r", ident, kind, payload[:80])
        return ident, _HEADER.pack(5 + len(payload), kind, ident) + payload

    def _reply(self, ident: int) -> asyncio.Future[tuple[int, bytes]]:
        """The reply to the request ``ident`` just sent, to be awaited."""
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        return future

    @staticmethod
    def _unexpected(kind: int, packet: bytes) -> asyncssh.SFTPError:
        if kind == _STATUS:
            error = _status_error(packet[5:])
            if error is not None:
                return error
        return asyncssh.SFTPBadMessage(f"unexpected reply type {kind}")

    async def _status(self, kind: int, payload: bytes) -> None:
        self._ok(*await self._request(kind, payload))

    async def _attrs(self, kind: int, payload: bytes) -> RemoteAttrs:
        return self._attrs_of(*await self._request(kind, payload))

    def _ok(self, kind: int, packet: bytes) -> None:
        if kind != _STATUS or _U32.unpack_from(packet, 5)[0] != _FX_OK:
            raise self._unexpected(kind, packet)

    def _attrs_of(self, kind: int, packet: bytes) -> RemoteAttrs:
        if kind != _ATTRS:
            raise self._unexpected(kind, packet)
        try:
            return _decode_attrs(packet, 5)[0]
        except struct.error as exc:
            raise asyncssh.SFTPBadMessage("truncated attributes") from exc

    def _handle_of(self, kind: int, packet: bytes) -> SftpHandle:
        if kind != _HANDLE:
            raise self._unexpected(kind, packet)
        return SftpHandle(self, _get_string(packet, 5)[0])

    async def _pair(
        self,
        first: tuple[int, bytes, Callable[[int, bytes], A]],
        second: tuple[int, bytes, Callable[[int, bytes], B]],
    ) -> tuple[A, B | Exception]:
        """Two requests in one write (one wake-up of ssh, and the second never waits for
        the first to have left), answered in this order in one round trip: the first's
        answer (its error raised) and the second's (its error returned). No tasks: the
        replies are awaited in the order they come."""
        one, one_packet = self._framed(first[0], first[1])
        two, two_packet = self._framed(second[0], second[1])
        self._send(one_packet + two_packet)
        futures = [self._reply(one), self._reply(two)]
        try:
            got = first[2](*await futures[0])
        except BaseException:
            futures[1].add_done_callback(retrieve)
            raise
        try:
            return got, second[2](*await futures[1])
        except (asyncssh.Error, ConnectionError, EOFError, struct.error) as exc:
            return got, exc

    async def open_then_stat(
        self, path: bytes, pflags: int, attrs: AttrsIn | None, stat_path: bytes
    ) -> tuple[SftpHandle, RemoteAttrs | Exception]:
        """:meth:`open`, and STAT of ``stat_path`` right behind it (see :meth:`_pair`)."""
        opening = _string(path) + _U32.pack(pflags) + _encode_attrs(attrs)
        return await self._pair(
            (_OPEN, opening, self._handle_of), (_STAT, _string(stat_path), self._attrs_of)
        )

    async def _then_lstat(self, kind: int, payload: bytes, path: bytes) -> RemoteAttrs | Exception:
        """A request answered by a STATUS (its failure raised), and LSTAT of ``path`` right
        behind it (see :meth:`_pair`): what ``path`` is after it, or the LSTAT's error."""
        lstat = (_LSTAT, _string(path), self._attrs_of)
        return (await self._pair((kind, payload, self._ok), lstat))[1]

    async def rename_then_lstat(self, old: bytes, new: bytes) -> RemoteAttrs | Exception:
        """:meth:`posix_rename`, and LSTAT of ``new`` right behind it (see :meth:`_pair`)."""
        name = b"posix-rename@openssh.com"
        self._supports(name)
        return await self._then_lstat(_EXTENDED, _string(name) + _string(old) + _string(new), new)

    async def mkdir_then_lstat(self, path: bytes, attrs: AttrsIn | None) -> RemoteAttrs | Exception:
        """:meth:`mkdir`, and LSTAT of ``path`` right behind it (see :meth:`_pair`)."""
        return await self._then_lstat(_MKDIR, _string(path) + _encode_attrs(attrs), path)

    async def lsetstat_then_lstat(self, path: bytes, attrs: AttrsIn) -> RemoteAttrs | Exception:
        """:meth:`setstat` not following a final symlink, and LSTAT of ``path`` right behind
        it (see :meth:`_pair`)."""
        name = b"lsetstat@openssh.com"
        self._supports(name)
        setting = _string(name) + _string(path) + _encode_attrs(attrs)
        return await self._then_lstat(_EXTENDED, setting, path)

    async def _names(self, kind: int, payload: bytes) -> list[RemoteName]:
        kind, packet = await self._request(kind, payload)
        if kind != _NAME:
            raise self._unexpected(kind, packet)
        names = []
        try:
            (count,) = _U32.unpack_from(packet, 5)
            at = 9
            for _ in range(count):
                filename, at = _get_string(packet, at)
                longname, at = _get_string(packet, at)
                attrs, at = _decode_attrs(packet, at)
                names.append(RemoteName(filename, longname, attrs))
        except struct.error as exc:
            raise asyncssh.SFTPBadMessage("truncated names") from exc
        return names

    async def _extended(self, name: bytes, payload: bytes) -> bytes:
        """An OpenSSH extension's reply (SFTPOpUnsupported, sending nothing, when the server
        does not offer it)."""
        self._supports(name)
        kind, packet = await self._request(_EXTENDED, _string(name) + payload)
        if kind != _EXTENDED_REPLY:
            raise self._unexpected(kind, packet)
        return packet[5:]

    async def _extended_status(self, name: bytes, payload: bytes) -> None:
        """An OpenSSH extension answered by a STATUS (as :meth:`_extended`)."""
        self._supports(name)
        await self._status(_EXTENDED, _string(name) + payload)

    def _supports(self, name: bytes) -> None:
        if name not in self.extensions:
            raise asyncssh.SFTPOpUnsupported(f"{name.decode()} not supported by the server")

    async def _one_name(self, kind: int, path: bytes) -> bytes:
        names = await self._names(kind, _string(path))
        if len(names) != 1:
            raise asyncssh.SFTPBadMessage(f"{len(names)} names where one was due")
        return names[0].filename

    # -- paths -----------------------------------------------------------------------

    async def lstat(self, path: bytes) -> RemoteAttrs:
        return await self._attrs(_LSTAT, _string(path))

    async def stat(self, path: bytes) -> RemoteAttrs:
        return await self._attrs(_STAT, _string(path))

    async def realpath(self, path: bytes) -> bytes:
        return await self._one_name(_REALPATH, path)

    async def readlink(self, path: bytes) -> bytes:
        return await self._one_name(_READLINK, path)

    async def scandir(self, path: bytes) -> AsyncIterator[RemoteName]:
        """The names in a directory, ``.`` and ``..`` among them, one READDIR at a time."""
        kind, packet = await self._request(_OPENDIR, _string(path))
        if kind != _HANDLE:
            raise self._unexpected(kind, packet)
        handle = _string(_get_string(packet, 5)[0])
        try:
            while True:
                try:
                    names = await self._names(_READDIR, handle)
                except asyncssh.SFTPEOFError:
                    return
                for name in names:
                    yield name
        finally:
            try:
                await self._status(_CLOSE, handle)
            except (asyncssh.Error, ConnectionError):
                pass  # the listing itself is what counts

    async def open(
        self,
        path: bytes,
        pflags: int,
        attrs: AttrsIn | None = None,
        encoding: None = None,
        block_size: int = 0,
    ) -> SftpHandle:
        """``encoding`` and ``block_size`` as asyncssh's: bytes, one request per call."""
        return self._handle_of(
            *await self._request(_OPEN, _string(path) + _U32.pack(pflags) + _encode_attrs(attrs))
        )

    async def mkdir(self, path: bytes, attrs: AttrsIn | None = None) -> None:
        await self._status(_MKDIR, _string(path) + _encode_attrs(attrs))

    async def rmdir(self, path: bytes) -> None:
        await self._status(_RMDIR, _string(path))

    async def remove(self, path: bytes) -> None:
        await self._status(_REMOVE, _string(path))

    async def posix_rename(self, old: bytes, new: bytes) -> None:
        await self._extended_status(b"posix-rename@openssh.com", _string(old) + _string(new))

    async def symlink(self, target: bytes, link: bytes) -> None:
        first, second = (target, link) if self._symlink_swapped else (link, target)
        await self._status(_SYMLINK, _string(first) + _string(second))

    async def link(self, existing: bytes, new: bytes) -> None:
        await self._extended_status(b"hardlink@openssh.com", _string(existing) + _string(new))

    async def setstat(self, path: bytes, attrs: AttrsIn, *, follow_symlinks: bool = True) -> None:
        if follow_symlinks:
            await self._status(_SETSTAT, _string(path) + _encode_attrs(attrs))
            return
        await self._extended_status(b"lsetstat@openssh.com", _string(path) + _encode_attrs(attrs))

    async def statvfs(self, path: bytes) -> VfsStats:
        reply = await self._extended(b"statvfs@openssh.com", _string(path))
        return VfsStats(*struct.unpack_from(">11Q", reply, 0))


class SftpHandle:
    """An open file: the requests on its handle (asyncssh's SFTPClientFile's names)."""

    __slots__ = ("_client", "_handle", "_string")

    def __init__(self, client: SftpClient, handle: bytes) -> None:
        self._client = client
        self._handle = handle
        self._string = _string(handle)

    async def read(self, size: int, offset: int) -> bytes:
        """At most ``size`` bytes at ``offset`` (fewer if the server sends fewer); b'' at
        the end of the file."""
        client = self._client
        kind, packet = await client._request(_READ, self._string + struct.pack(">QI", offset, size))
        if kind == _DATA:
            return _get_string(packet, 5)[0]
        if kind == _STATUS and _U32.unpack_from(packet, 5)[0] == _FX_EOF:
            return b""
        raise client._unexpected(kind, packet)

    async def write(self, data: bytes | memoryview, offset: int) -> None:
        client = self._client
        step = max(1, client.limits.max_write_len)
        if len(data) <= step:
            payload = b"".join((self._string, _U64.pack(offset), _U32.pack(len(data)), data))
            await client._status(_WRITE, payload)
            return
        # more than the server takes at once: in pieces, all sent before any answer
        view = memoryview(data)
        pieces = [
            client._status(
                _WRITE,
                b"".join((self._string, _U64.pack(offset + at), _U32.pack(len(chunk)), chunk)),
            )
            for at in range(0, len(view), step)
            for chunk in (view[at : at + step],)
        ]
        await asyncio.gather(*pieces)

    async def stat(self) -> RemoteAttrs:
        return await self._client._attrs(_FSTAT, self._string)

    async def setstat(self, attrs: AttrsIn) -> None:
        await self._client._status(_FSETSTAT, self._string + _encode_attrs(attrs))

    async def truncate(self, size: int) -> None:
        await self._client._status(_FSETSTAT, self._string + _U32.pack(_SIZE) + _U64.pack(size))

    async def fsync(self) -> None:
        await self._client._extended_status(b"fsync@openssh.com", self._string)

    async def close(self) -> None:
        await self._client._status(_CLOSE, self._string)

    async def stat_then_close(self) -> tuple[RemoteAttrs | Exception, Exception | None]:
        """FSTAT, and CLOSE right behind it (see :meth:`SftpClient._pair`): each one's
        answer or error."""
        client = self._client
        try:
            fstat = (_FSTAT, self._string, _either(client._attrs_of))
            got, closed = await client._pair(fstat, (_CLOSE, self._string, client._ok))
        except (asyncssh.Error, ConnectionError, EOFError) as exc:  # the session, not FSTAT
            return exc, exc
        return got, closed


async def start_client(
    proc_stdin: int, proc_stdout: int, server_version: str
) -> tuple[SftpClient, asyncio.Future[None]]:
    """Run the SFTP handshake over the pipe fds we write (the server's input) and read
    (its output); both are ours to close from now on, and are closed when this fails.
    Returns the client and a future done when the session ends."""
    loop = asyncio.get_running_loop()
    client = SftpClient(server_version)
    for fd in (proc_stdin, proc_stdout):
        widen(fd)
    client._write = _Sender(proc_stdin)
    source = os.fdopen(proc_stdout, "rb", buffering=0)
    try:
        client._read, _ = await loop.connect_read_pipe(lambda: _Replies(client), source)
        await client._handshake()
    except BaseException:
        client.exit()  # closes the write side
        if client._read is not None:
            client._read.close()
        source.close()  # a no-op once the transport closed it
        raise
    return client, client.ended


def _either(decode: Callable[[int, bytes], A]) -> Callable[[int, bytes], A | Exception]:
    """``decode``, its SFTP error returned instead of raised."""

    def decoded(kind: int, packet: bytes) -> A | Exception:
        try:
            return decode(kind, packet)
        except asyncssh.Error as exc:
            return exc

    return decoded
