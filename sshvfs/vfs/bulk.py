"""Bulk directory listing with ONE remote command instead of SFTP READDIR round trips.

The pure half (no network): the quoting, the command lines a POSIX ``sh`` on the remote
runs over the SSH exec channel, the parser of their output, and the mapping of a failed
run to an ``OSError``. The command is GNU ``find -printf``: every field of every entry is
NUL-terminated, so any name (newlines, `` -> ``, quotes, non-UTF-8 bytes) is unambiguous,
and each record ends with a fixed marker field so a wrong field count is caught.

Requirements on the remote, checked once with :func:`probe_command`/:func:`parse_probe`
before use (fall back to SFTP otherwise): a POSIX-quoting login shell (sh, bash, dash,
zsh, ksh; not fish or csh), GNU findutils, no pty (find quotes names on a terminal), and
no rc file that writes to stdout of non-interactive shells.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence

from sshvfs.vfs.types import Attrs, Entry

__all__ = [
    "FIND_FORMAT",
    "BulkCommandError",
    "BulkParseError",
    "ListingParser",
    "error_from_exit",
    "listing_command",
    "parse_listing",
    "parse_probe",
    "probe_command",
    "quote",
    "tree_command",
]

#: ``-printf`` format (as find receives it): 10 NUL-terminated fields then the marker
#: field ``/``, which no relative path (field 0) can ever equal.
FIND_FORMAT = b"%P\\0%y\\0%m\\0%s\\0%T@\\0%A@\\0%U\\0%G\\0%n\\0%l\\0/\\0"
_MARKER = b"/"
_NFIELDS = 11
#: longest field accepted before calling the output garbage (a deep %P may exceed PATH_MAX)
_MAX_FIELD = 1 << 20

#: ``%y`` letter -> S_IFMT bits. ``D`` (Solaris door) and ``U`` (unknown) have no Linux
#: st_mode type, so they become 0, which :class:`Attrs` reports as FileType.UNKNOWN.
_TYPE_BITS = {
    b"f": stat.S_IFREG,
    b"d": stat.S_IFDIR,
    b"l": stat.S_IFLNK,
    b"p": stat.S_IFIFO,
    b"s": stat.S_IFSOCK,
    b"c": stat.S_IFCHR,
    b"b": stat.S_IFBLK,
    b"D": 0,
    b"U": 0,
}

# find prints %T@ as tv_sec "." tv_nsec (9 digits, plus a constant trailing "0" in 4.x):
# the fraction is ADDED to the signed seconds, so "-2.5000000000" is -1.5 s.
_TIME_RE = re.compile(rb"(-?[0-9]{1,20})(?:\.([0-9]{1,30}))?")
_OCTAL_RE = re.compile(rb"[0-7]{1,6}")
_DECIMAL_RE = re.compile(rb"[0-9]{1,30}")


# --------------------------------------------------------------------------- quoting


def quote(path: bytes) -> bytes:
    """POSIX single-quote ``path`` for a remote ``sh`` command line.

    Always quotes (``b"a"`` -> ``b"'a'"``, ``b""`` -> ``b"''"``); a ``'`` becomes
    ``'"'"'``. Any byte but NUL survives; NUL cannot be passed in an argv at all.
    """
    if b"\0" in path:
        raise ValueError(f"NUL byte in remote command argument: {path!r}")
    return b"'" + path.replace(b"'", b"'\"'\"'") + b"'"


# --------------------------------------------------------------------------- commands


def _start_point(remote_dir: bytes) -> bytes:
    """``DIR/.``: find then reports ENOTDIR for a file and lists a symlink's target dir
    (as SFTP READDIR does) instead of silently printing nothing."""
    if not remote_dir.startswith(b"/"):
        # absolute, so the start point can never be read as a find option or predicate
        raise ValueError(f"remote directory must be an absolute path: {remote_dir!r}")
    return remote_dir.rstrip(b"/") + b"/."


def _find(start: bytes, *predicates: bytes, fmt: bytes = FIND_FORMAT) -> bytes:
    # LC_ALL=C: ASCII error messages (error_from_exit matches them), "." decimal point.
    # stderr is left alone: it travels on its own channel and feeds error_from_exit.
    return b" ".join(
        [b"LC_ALL=C", b"find", b"--", quote(start), *predicates, b"-printf", quote(fmt)]
    )


def listing_command(remote_dir: bytes) -> bytes:
    """The sh command line printing every direct child of ``remote_dir`` (absolute)."""
    return _find(_start_point(remote_dir), b"-mindepth", b"1", b"-maxdepth", b"1")


def tree_command(remote_dir: bytes, max_depth: int | None = None) -> bytes:
    """Like :func:`listing_command` for the whole subtree (``max_depth`` levels, None for
    all), pre-order, paths relative to ``remote_dir``. Symlinks are not followed."""
    predicates = [b"-mindepth", b"1"]
    if max_depth is not None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, not {max_depth}")
        predicates += [b"-maxdepth", str(max_depth).encode()]
    return _find(_start_point(remote_dir), *predicates)


# What find receives: backslashes and a quote a non-POSIX shell would mangle, %y to prove
# -printf directives work, \0 to prove NUL output works.
_PROBE_FORMAT = b"sshvfs-ok %y \\\\\\\\ '\\0"
_PROBE_EXPECTED = b"sshvfs-ok d \\\\ '\0"


def probe_command() -> bytes:
    """A command whose stdout passes :func:`parse_probe` only where bulk listing works."""
    return _find(b"/.", b"-maxdepth", b"0", fmt=_PROBE_FORMAT)


def parse_probe(stdout: bytes) -> bool:
    """True when the probe's output is exactly right: GNU find -printf, POSIX quoting, and
    nothing else on stdout (a chatty rc file would corrupt listings too)."""
    return stdout == _PROBE_EXPECTED


# --------------------------------------------------------------------------- parsing


class BulkParseError(OSError):
    """The remote listing output is malformed or truncated (errno EIO)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


def _fail(index: int, what: str, value: bytes) -> BulkParseError:
    shown = value if len(value) <= 80 else value[:80] + b"..."
    return BulkParseError(f"bad bulk listing output, record {index}: {what}: {shown!r}")


def _uint(value: bytes, what: str, index: int) -> int:
    if _DECIMAL_RE.fullmatch(value) is None:
        raise _fail(index, f"{what} is not a decimal number", value)
    return int(value)


def _time_ns(value: bytes, what: str, index: int) -> int:
    match = _TIME_RE.fullmatch(value)
    if match is None:
        raise _fail(index, f"{what} is not a find %T@ time", value)
    seconds, fraction = match.group(1), match.group(2) or b""
    # exact integer arithmetic; digits past the nanosecond are truncated
    return int(seconds) * 1_000_000_000 + int(fraction[:9].ljust(9, b"0"))


def _check_path(path: bytes, index: int) -> bytes:
    """Validate a relative path; return its last component."""
    parts = path.split(b"/")
    if any(part in (b"", b".", b"..") for part in parts):
        raise _fail(index, "path is not a clean relative path", path)
    return parts[-1]


def _parse_record(fields: Sequence[bytes], index: int) -> tuple[bytes, Entry]:
    path, kind, mode, size, mtime, atime, uid, gid, nlink, target, marker = fields
    if marker != _MARKER:
        raise _fail(index, f"record marker missing (not {_NFIELDS} fields per entry?)", marker)
    name = _check_path(path, index)
    type_bits = _TYPE_BITS.get(kind)
    if type_bits is None:
        raise _fail(index, "unknown file type letter", kind)
    if _OCTAL_RE.fullmatch(mode) is None or int(mode, 8) > 0o7777:
        raise _fail(index, "mode is not octal permission bits", mode)
    if target and kind != b"l":
        raise _fail(index, "symlink target on a non-symlink", target)
    attrs = Attrs(
        mode=type_bits | int(mode, 8),
        size=_uint(size, "size", index),
        uid=_uint(uid, "uid", index),
        gid=_uint(gid, "gid", index),
        nlink=_uint(nlink, "nlink", index),
        mtime_ns=_time_ns(mtime, "mtime", index),
        atime_ns=_time_ns(atime, "atime", index),
    )
    # an empty %l on a symlink means find could not read it: unknown, not "empty target"
    return path, Entry(name=name, attrs=attrs, target=target or None)


class ListingParser:
    """Incremental parser: feed stdout as it arrives, in chunks split anywhere.

    The output of :func:`listing_command`/:func:`tree_command` yields ``(relative path,
    Entry)`` pairs; ``Entry.name`` is the path's last component. After a
    :class:`BulkParseError` the parser is in an unspecified state: discard it.
    """

    def __init__(self) -> None:
        self._partial = b""  # bytes of the field still missing its NUL
        self._fields: list[bytes] = []  # complete fields of the record in progress
        self._records = 0
        self._closed = False

    @property
    def records(self) -> int:
        """How many entries were parsed so far."""
        return self._records

    def feed(self, chunk: bytes) -> list[tuple[bytes, Entry]]:
        if self._closed:
            raise ValueError("ListingParser.feed() after close()")
        if not chunk:
            return []
        parts = (self._partial + chunk).split(b"\0")
        self._partial = parts.pop()
        if len(self._partial) > _MAX_FIELD:
            raise _fail(self._records, "unterminated field too long", self._partial)
        fields = self._fields + parts if self._fields else parts
        whole = len(fields) - len(fields) % _NFIELDS
        out = []
        for start in range(0, whole, _NFIELDS):
            out.append(_parse_record(fields[start : start + _NFIELDS], self._records))
            self._records += 1
        self._fields = fields[whole:]
        return out

    def close(self) -> None:
        """Check the output ended on a record boundary (else it was truncated)."""
        self._closed = True
        if self._fields or self._partial:
            raise BulkParseError(
                f"bulk listing output truncated after {self._records} records: "
                f"{len(self._fields)} fields and {len(self._partial)} bytes of a partial "
                f"record left over"
            )


def parse_listing(stdout: bytes) -> list[tuple[bytes, Entry]]:
    """Parse a complete captured output (see :class:`ListingParser`)."""
    parser = ListingParser()
    entries = parser.feed(stdout)
    parser.close()
    return entries


# --------------------------------------------------------------------------- errors


class BulkCommandError(OSError):
    """A bulk command failed; the message carries the remote stderr.

    ``errno`` is chosen by :func:`error_from_exit`; ENOTSUP means "no usable GNU find
    here, fall back to SFTP". For ENOENT/EACCES/ENOTDIR it is also a FileNotFoundError/
    PermissionError/NotADirectoryError, like the OSError that ``fs_error`` builds.
    """

    def __init__(
        self,
        exit_status: int | None,
        stderr: bytes,
        path: bytes | None = None,
        code: int = errno.EIO,
    ) -> None:
        self.exit_status = exit_status
        self.stderr = stderr
        text = stderr[:2000].decode("utf-8", errors="replace").strip()
        if len(text) > 500:
            text = text[:500] + "..."
        status = "no exit status" if exit_status is None else f"exit status {exit_status}"
        message = f"remote find failed ({status}): {text or '(no stderr)'}"
        if path is None:
            super().__init__(code, message)
        else:
            super().__init__(code, message, os.fsdecode(path))


class _BulkNotFound(BulkCommandError, FileNotFoundError):
    pass


class _BulkPermission(BulkCommandError, PermissionError):
    pass


class _BulkNotADirectory(BulkCommandError, NotADirectoryError):
    pass


_CLASS_BY_ERRNO: dict[int, type[BulkCommandError]] = {
    errno.ENOENT: _BulkNotFound,
    errno.EACCES: _BulkPermission,
    errno.ENOTDIR: _BulkNotADirectory,
}

# find writes "find: 'PATH': <strerror>", so the strerror is matched at the END of a line:
# a file name that contains one of these texts cannot fool the match.
_STRERROR_SUFFIXES = (
    ("no such file or directory", errno.ENOENT),
    ("permission denied", errno.EACCES),
    ("not a directory", errno.ENOTDIR),
    ("too many levels of symbolic links", errno.ELOOP),
)
# Shells and finds without what we need; ENOTSUP tells the caller to fall back to SFTP.
_UNSUPPORTED_MARKERS = (
    "command not found",  # bash, zsh, csh ("Command not found.")
    ": not found",  # dash: "sh: 1: find: not found"
    "unknown predicate",  # GNU find: "unknown predicate `-printf'" (a cut-down build)
    "invalid predicate",  # old GNU find's wording of the same
    "unknown primary",  # BSD/macOS find: "-printf: unknown primary or operator"
    "unrecognized",  # BusyBox find: "find: unrecognized: -printf"
    "-printf",  # any other complaint naming it (ENOENT etc. were matched first)
)


def _classify(line: str) -> int | None:
    lowered = line.rstrip().lower()
    for suffix, code in _STRERROR_SUFFIXES:
        if lowered.endswith(suffix):
            return code
    if any(marker in lowered for marker in _UNSUPPORTED_MARKERS):
        return errno.ENOTSUP
    return None


def error_from_exit(exit_status: int | None, stderr: bytes, path: bytes) -> OSError:
    """The OSError for a bulk command on ``path`` that failed with ``exit_status``.

    ENOENT/EACCES/ENOTDIR/ELOOP from find's own message, ENOTSUP when the remote cannot
    run the command at all (fall back to SFTP), EIO for anything else (including a
    channel closed without exit status).
    """
    if exit_status in (126, 127):
        # the shell could not run find (not found / not executable): fall back, it is
        # not a property of ``path``
        code: int = errno.ENOTSUP
    else:
        code = errno.EIO
        for line in stderr.decode("utf-8", errors="replace").splitlines():
            found = _classify(line)
            if found is not None:
                code = found
                break
    cls = _CLASS_BY_ERRNO.get(code, BulkCommandError)
    return cls(exit_status, stderr, path, code)
