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
import fcntl
import logging
import os
import stat as _stat
import struct
from collections.abc import AsyncIterator
from typing import Any, NamedTuple, Protocol

import asyncssh

log = logging.getLogger(__name__)

# packet types (draft-ietf-secsh-filexfer-02)
_INIT, _VERSION, _OPEN, _CLOSE, _READ, _WRITE, _LSTAT, _FSTAT = 1, 2, 3, 4, 5, 6, 7, 8
_SETSTAT, _FSETSTAT, _OPENDIR, _READDIR, _REMOVE, _MKDIR, _RMDIR = 9, 10, 11, 12, 13, 14, 15
_REALPATH, _STAT, _RENAME, _READLINK, _SYMLINK, _EXTENDED = 16, 17, 18, 19, 20, 200
_STATUS, _HANDLE, _DATA, _NAME, _ATTRS, _EXTENDED_REPLY = 101, 102, 103, 104, 105, 201

_FX_OK, _FX_EOF = 0, 1

_SIZE, _UIDGID, _PERMISSIONS, _ACMODTIME, _EXTENDED_ATTRS = 1, 2, 4, 8, 0x80000000

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEADER = struct.Struct(">IBI")  # length, type, request id
_TWO_U32 = struct.Struct(">II")

#: the errors asyncssh raises for each SFTP v3 status code
_ERRORS: dict[int, Any] = {
    1: asyncssh.SFTPEOFError,
    2: asyncssh.SFTPNoSuchFile,
    3: asyncssh.SFTPPermissionDenied,
    4: asyncssh.SFTPFailure,
    5: asyncssh.SFTPBadMessage,
    6: asyncssh.SFTPNoConnection,
    7: asyncssh.SFTPConnectionLost,
    8: asyncssh.SFTPOpUnsupported,
}

#: what a server without limits@openssh.com is safe to be sent and asked for (bytes)
DEFAULT_IO = 32768
#: the pipes' buffer (Linux F_SETPIPE_SZ): 64 KiB by default, so a 255 KiB WRITE took four
#: wake-ups of the loop to leave; 1 MiB is the default limit for unprivileged processes
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031


class AttrsIn(Protocol):
    """What a SETSTAT, MKDIR or OPEN sends (asyncssh's SFTPAttrs, or RemoteAttrs)."""

    size: int | None
    uid: int | None
    gid: int | None
    permissions: int | None
    atime: int | None
    mtime: int | None


class RemoteAttrs:
    """A file's attributes as SFTP v3 carries them (asyncssh's SFTPAttrs' field names)."""

    __slots__ = ("type", "size", "uid", "gid", "permissions", "atime", "mtime")
    # never in SFTP v3: what readers of asyncssh's attributes may ask for
    nlink = None
    atime_ns = None
    mtime_ns = None

    def __init__(self) -> None:
        self.type = asyncssh.FILEXFER_TYPE_UNKNOWN
        self.size: int | None = None
        self.uid: int | None = None
        self.gid: int | None = None
        self.permissions: int | None = None
        self.atime: int | None = None
        self.mtime: int | None = None


_TYPES = {
    _stat.S_IFREG: asyncssh.FILEXFER_TYPE_REGULAR,
    _stat.S_IFDIR: asyncssh.FILEXFER_TYPE_DIRECTORY,
    _stat.S_IFLNK: asyncssh.FILEXFER_TYPE_SYMLINK,
}


class RemoteName(NamedTuple):
    """One READDIR (or REALPATH, READLINK) name."""

    filename: bytes
    longname: bytes
    attrs: RemoteAttrs


class VfsStats(NamedTuple):
    """statvfs@openssh.com's answer."""

    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    favail: int
    fsid: int
    flags: int
    namemax: int


class Limits(NamedTuple):
    """limits@openssh.com's answer (or what is safe without it)."""

    max_packet_len: int
    max_read_len: int
    max_write_len: int
    max_open_handles: int


def _string(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _encode_attrs(attrs: AttrsIn | None) -> bytes:
    if attrs is None:
        return b"\0\0\0\0"
    flags = 0
    parts = [b""]
    if attrs.size is not None:
        flags |= _SIZE
        parts.append(_U64.pack(attrs.size))
    if attrs.uid is not None and attrs.gid is not None:
        flags |= _UIDGID
        parts.append(_TWO_U32.pack(attrs.uid, attrs.gid))
    if attrs.permissions is not None:
        flags |= _PERMISSIONS
        parts.append(_U32.pack(attrs.permissions))
    if attrs.atime is not None and attrs.mtime is not None:
        flags |= _ACMODTIME
        parts.append(_TWO_U32.pack(attrs.atime, attrs.mtime))
    parts[0] = _U32.pack(flags)
    return b"".join(parts)


def _decode_attrs(packet: bytes, at: int) -> tuple[RemoteAttrs, int]:
    (flags,) = _U32.unpack_from(packet, at)
    at += 4
    attrs = RemoteAttrs()
    if flags & _SIZE:
        (attrs.size,) = _U64.unpack_from(packet, at)
        at += 8
    if flags & _UIDGID:
        attrs.uid, attrs.gid = _TWO_U32.unpack_from(packet, at)
        at += 8
    if flags & _PERMISSIONS:
        (mode,) = _U32.unpack_from(packet, at)
        attrs.permissions = mode
        attrs.type = _TYPES.get(_stat.S_IFMT(mode), asyncssh.FILEXFER_TYPE_SPECIAL)
        at += 4
    if flags & _ACMODTIME:
        attrs.atime, attrs.mtime = _TWO_U32.unpack_from(packet, at)
        at += 8
    if flags & _EXTENDED_ATTRS:
        (count,) = _U32.unpack_from(packet, at)
        at += 4
        for _ in range(2 * count):  # name and data strings, skipped
            (length,) = _U32.unpack_from(packet, at)
            at += 4 + length
    if at > len(packet):
        raise asyncssh.SFTPBadMessage("truncated attributes")
    return attrs, at


def _get_string(packet: bytes, at: int) -> tuple[bytes, int]:
    (length,) = _U32.unpack_from(packet, at)
    end = at + 4 + length
    if end > len(packet):
        raise asyncssh.SFTPBadMessage("truncated string")
    return packet[at + 4 : end], end


def _status_error(packet: bytes) -> asyncssh.SFTPError | None:
    """The error a STATUS reply (from its code on: the header is cut) says, None for OK."""
    (code,) = _U32.unpack_from(packet, 0)
    if code == _FX_OK:
        return None
    reason = b""
    if len(packet) >= 8:
        try:
            reason = _get_string(packet, 4)[0]
        except (asyncssh.SFTPBadMessage, struct.error):
            pass
    text = reason.decode("utf-8", "replace")
    cls = _ERRORS.get(code)
    return cls(text) if cls is not None else asyncssh.SFTPError(code, text)


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
        if buf:
            buf += data
            if len(buf) < self._need:
                return  # a large packet still coming: no copy until it is whole
            data = bytes(buf)
            buf.clear()
        end = len(data)
        at = 0
        deliver = self._client._deliver
        need = 4
        while end - at >= 4:
            (length,) = _U32.unpack_from(data, at)
            if end - at - 4 < length:
                need = 4 + length
                break
            deliver(data[at + 4 : at + 4 + length])
            at += 4 + length
        else:
            need = 4
        if at < end:
            buf += memoryview(data)[at:]
        self._need = need

    def eof_received(self) -> bool:
        return False  # the session ended: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._lost(exc)


class SftpClient:
    """One SFTP session over ``ssh -s sftp``'s pipes. Use :func:`start_client`."""

    def __init__(self, server_version: str) -> None:
        self.version = 3
        self.limits = Limits(DEFAULT_IO + 1024, DEFAULT_IO, DEFAULT_IO, 0)
        self.extensions: dict[bytes, bytes] = {}
        self._write: asyncio.WriteTransport | None = None
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
            closing.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _lost(self, exc: Exception | None) -> None:
        self._closed = True
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(asyncssh.SFTPConnectionLost("the SFTP session ended"))
        if self._version_reply is not None and not self._version_reply.done():
            self._version_reply.set_exception(EOFError("the SFTP session ended"))
        if self._write is not None:
            self._write.close()
        if not self.ended.done():
            self.ended.set_result(None)

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
        ident = self._take_id()
        if self._debug:
            log.debug("> id %d: type %d %r", ident, kind, payload[:80])
        self._send(_HEADER.pack(5 + len(payload), kind, ident) + payload)
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
        kind, packet = await self._request(kind, payload)
        if kind != _STATUS:
            raise asyncssh.SFTPBadMessage(f"unexpected reply type {kind}")
        error = _status_error(packet[5:])
        if error is not None:
            raise error

    async def _attrs(self, kind: int, payload: bytes) -> RemoteAttrs:
        kind, packet = await self._request(kind, payload)
        if kind != _ATTRS:
            raise self._unexpected(kind, packet)
        return _decode_attrs(packet, 5)[0]

    async def _names(self, kind: int, payload: bytes) -> list[RemoteName]:
        kind, packet = await self._request(kind, payload)
        if kind != _NAME:
            raise self._unexpected(kind, packet)
        (count,) = _U32.unpack_from(packet, 5)
        at = 9
        names = []
        for _ in range(count):
            filename, at = _get_string(packet, at)
            longname, at = _get_string(packet, at)
            attrs, at = _decode_attrs(packet, at)
            names.append(RemoteName(filename, longname, attrs))
        return names

    async def _extended(self, name: bytes, payload: bytes) -> bytes:
        kind, packet = await self._request(_EXTENDED, _string(name) + payload)
        if kind != _EXTENDED_REPLY:
            raise self._unexpected(kind, packet)
        return packet[5:]

    def _supports(self, name: bytes) -> None:
        if name not in self.extensions:
            raise asyncssh.SFTPOpUnsupported(f"{name.decode()} not supported by the server")

    # -- paths -----------------------------------------------------------------------

    async def lstat(self, path: bytes) -> RemoteAttrs:
        return await self._attrs(_LSTAT, _string(path))

    async def stat(self, path: bytes) -> RemoteAttrs:
        return await self._attrs(_STAT, _string(path))

    async def realpath(self, path: bytes) -> bytes:
        names = await self._names(_REALPATH, _string(path))
        if len(names) != 1:
            raise asyncssh.SFTPBadMessage("realpath: not one name")
        return names[0].filename

    async def readlink(self, path: bytes) -> bytes:
        names = await self._names(_READLINK, _string(path))
        if len(names) != 1:
            raise asyncssh.SFTPBadMessage("readlink: not one name")
        return names[0].filename

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
        kind, packet = await self._request(
            _OPEN, _string(path) + _U32.pack(pflags) + _encode_attrs(attrs)
        )
        if kind != _HANDLE:
            raise self._unexpected(kind, packet)
        return SftpHandle(self, _get_string(packet, 5)[0])

    async def mkdir(self, path: bytes, attrs: AttrsIn | None = None) -> None:
        await self._status(_MKDIR, _string(path) + _encode_attrs(attrs))

    async def rmdir(self, path: bytes) -> None:
        await self._status(_RMDIR, _string(path))

    async def remove(self, path: bytes) -> None:
        await self._status(_REMOVE, _string(path))

    async def posix_rename(self, old: bytes, new: bytes) -> None:
        self._supports(b"posix-rename@openssh.com")
        name = _string(b"posix-rename@openssh.com")
        await self._status(_EXTENDED, name + _string(old) + _string(new))

    async def symlink(self, target: bytes, link: bytes) -> None:
        first, second = (target, link) if self._symlink_swapped else (link, target)
        await self._status(_SYMLINK, _string(first) + _string(second))

    async def link(self, existing: bytes, new: bytes) -> None:
        self._supports(b"hardlink@openssh.com")
        name = _string(b"hardlink@openssh.com")
        await self._status(_EXTENDED, name + _string(existing) + _string(new))

    async def setstat(self, path: bytes, attrs: AttrsIn, *, follow_symlinks: bool = True) -> None:
        if follow_symlinks:
            await self._status(_SETSTAT, _string(path) + _encode_attrs(attrs))
            return
        self._supports(b"lsetstat@openssh.com")
        name = _string(b"lsetstat@openssh.com")
        await self._status(_EXTENDED, name + _string(path) + _encode_attrs(attrs))

    async def statvfs(self, path: bytes) -> VfsStats:
        self._supports(b"statvfs@openssh.com")
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
        self._client._supports(b"fsync@openssh.com")
        name = _string(b"fsync@openssh.com")
        await self._client._status(_EXTENDED, name + self._string)

    async def close(self) -> None:
        await self._client._status(_CLOSE, self._string)


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
    sink = os.fdopen(proc_stdin, "wb", buffering=0)
    source = os.fdopen(proc_stdout, "rb", buffering=0)
    try:
        client._write, _ = await loop.connect_write_pipe(asyncio.Protocol, sink)
        client._read, _ = await loop.connect_read_pipe(lambda: _Replies(client), source)
        await client._handshake()
    except BaseException:
        client.exit()
        for transport in (client._write, client._read):
            if transport is not None:
                transport.close()
        for pipe in (sink, source):
            pipe.close()  # a no-op for one a transport closed
        raise
    return client, client.ended
