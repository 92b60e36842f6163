"""SFTP v3's values as the VFS's: errors (the one mapping to OSError), attributes, READDIR
names, open flags and SETSTAT attributes. No I/O here."""

from __future__ import annotations

import errno
import os
import stat as _stat

import asyncssh

from ..errors import fs_error
from ..transport.connection import SftpAttrs, SftpName
from ..vfs.types import Attrs, Entry

_ERRNO_BY_CODE: dict[int, int] = {
    asyncssh.FX_NO_SUCH_FILE: errno.ENOENT,
    # OpenSSH folds EPERM and EACCES into one code; EACCES is what tools expect to print
    asyncssh.FX_PERMISSION_DENIED: errno.EACCES,
    # OpenSSH sends BAD_MESSAGE for ENAMETOOLONG and EINVAL alike
    asyncssh.FX_BAD_MESSAGE: errno.EINVAL,
    asyncssh.FX_NO_CONNECTION: errno.EIO,
    asyncssh.FX_CONNECTION_LOST: errno.EIO,
    asyncssh.FX_OP_UNSUPPORTED: errno.ENOTSUP,
    asyncssh.FX_INVALID_HANDLE: errno.EBADF,
    asyncssh.FX_NO_SUCH_PATH: errno.ENOENT,
    asyncssh.FX_FILE_ALREADY_EXISTS: errno.EEXIST,
    asyncssh.FX_WRITE_PROTECT: errno.EROFS,
    asyncssh.FX_NO_MEDIA: errno.ENOMEDIUM,
    asyncssh.FX_NO_SPACE_ON_FILESYSTEM: errno.ENOSPC,
    asyncssh.FX_QUOTA_EXCEEDED: errno.EDQUOT,
    asyncssh.FX_DIR_NOT_EMPTY: errno.ENOTEMPTY,
    asyncssh.FX_NOT_A_DIRECTORY: errno.ENOTDIR,
    asyncssh.FX_INVALID_FILENAME: errno.EINVAL,
    asyncssh.FX_LINK_LOOP: errno.ELOOP,
    asyncssh.FX_FILE_IS_A_DIRECTORY: errno.EISDIR,
    asyncssh.FX_INVALID_PARAMETER: errno.EINVAL,
}

#: a failure whose POSIX meaning the server did not tell us (SFTP v3 FX_FAILURE)
_AMBIGUOUS = errno.EIO

#: the connection went away under a request (or before it was sent)
_LOST = (
    asyncssh.SFTPNoConnection,
    asyncssh.SFTPConnectionLost,
    asyncssh.ConnectionLost,
    asyncssh.DisconnectError,
    ConnectionError,
    EOFError,
    BrokenPipeError,
)


def _translate(exc: BaseException, path: bytes) -> OSError:
    """The one mapping from asyncssh's errors to OSError."""
    if isinstance(exc, OSError) and not isinstance(exc, asyncssh.Error):
        return exc
    if isinstance(exc, asyncssh.SFTPError):
        code = _ERRNO_BY_CODE.get(exc.code, _AMBIGUOUS)
        return fs_error(code, path, f"{os.strerror(code)} ({exc.reason or 'sftp error'})")
    # connection-level trouble (disconnect, lost channel): the kernel caller sees EIO
    return fs_error(errno.EIO, path, f"connection error: {exc}")


def _attrs(a: SftpAttrs, nlink: int | None = None) -> Attrs:
    mtime_ns = (a.mtime or 0) * 1_000_000_000 + (a.mtime_ns or 0)
    atime_ns = (a.atime or 0) * 1_000_000_000 + (a.atime_ns or 0)
    return Attrs(
        mode=a.permissions if a.permissions is not None else _stat.S_IFREG | 0o644,
        size=a.size or 0,
        uid=a.uid if a.uid is not None else 0,
        gid=a.gid if a.gid is not None else 0,
        nlink=nlink or a.nlink or 1,
        mtime_ns=mtime_ns,
        atime_ns=atime_ns,
    )


def _nlink_from_longname(longname: bytes | str | None) -> int | None:
    """OpenSSH's READDIR longname is an ``ls -l`` line; its second column is the link count."""
    if not longname:
        return None
    parts = longname.split(None, 2)
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


def _entry(name: SftpName) -> Entry | None:
    """A READDIR name as an Entry; None for ``.`` and ``..``."""
    filename = name.filename
    assert isinstance(filename, bytes)
    if filename in (b".", b".."):
        return None
    return Entry(filename, _attrs(name.attrs, _nlink_from_longname(name.longname)))


def _pflags(flags: int) -> int:
    acc = flags & os.O_ACCMODE
    pflags = {
        os.O_RDONLY: asyncssh.FXF_READ,
        os.O_WRONLY: asyncssh.FXF_WRITE,
        os.O_RDWR: asyncssh.FXF_READ | asyncssh.FXF_WRITE,
    }.get(acc, asyncssh.FXF_READ)
    if flags & os.O_CREAT:
        pflags |= asyncssh.FXF_CREAT
    if flags & os.O_TRUNC:
        pflags |= asyncssh.FXF_TRUNC
    if flags & os.O_EXCL:
        pflags |= asyncssh.FXF_EXCL
    return pflags


def setstat_attrs(
    mode: int | None = None, times: tuple[int, int] | None = None
) -> asyncssh.SFTPAttrs:
    """The SETSTAT of permission bits and/or (atime_ns, mtime_ns)."""
    attrs = asyncssh.SFTPAttrs()
    if mode is not None:
        attrs.permissions = mode & 0o7777
    if times is not None:
        attrs.atime, attrs.atime_ns = divmod(times[0], 1_000_000_000)
        attrs.mtime, attrs.mtime_ns = divmod(times[1], 1_000_000_000)
        if not (0 <= attrs.atime < 1 << 32 and 0 <= attrs.mtime < 1 << 32):
            # SFTP v3 sends times as unsigned 32-bit seconds: EOVERFLOW, as for a value that
            # does not fit the target's type (utimensat's own EINVAL means a bad nsec field)
            raise fs_error(errno.EOVERFLOW, detail="SFTP holds times from 1970 to 2106 only")
    return attrs
