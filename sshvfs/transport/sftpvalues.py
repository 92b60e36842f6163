"""SFTP v3's values as bytes, for the lean client (:mod:`sshvfs.transport.sftppipe`):
strings, file attributes (asyncssh's field names, so that readers of either client's
answers read them alike), names, the answers of OpenSSH's extensions, and a STATUS as the
error asyncssh would raise for it. No I/O here."""

from __future__ import annotations

import stat as _stat
import struct
from typing import Any, NamedTuple, Protocol

import asyncssh

_FX_OK = 0
_SIZE, _UIDGID, _PERMISSIONS, _ACMODTIME, _EXTENDED_ATTRS = 1, 2, 4, 8, 0x80000000

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
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
